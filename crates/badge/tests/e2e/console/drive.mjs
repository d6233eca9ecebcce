// Drives the console in headless Chromium through playwright-core. The Rust test that
// starts the server passes everything in the environment and checks the JSON this prints.
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';
import os from 'node:os';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const { chromium } = await import(pathToFileURL(path.join(env('PLAYWRIGHT_CORE'), 'index.mjs')).href);
const base = env('CONSOLE_URL');
const shots = env('SCREENSHOT_DIR');
fs.mkdirSync(shots, { recursive: true });
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'badge-console-chromium-'));

// A fresh profile directory per run, given as playwright wants it.
const context = await chromium.launchPersistentContext(profile, {
  executablePath: env('CHROMIUM'),
  headless: true,
  ignoreHTTPSErrors: true,
  viewport: { width: 1280, height: 860 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const result = { steps: [] };
const step = (name) => { result.steps.push(name); process.stderr.write(`step: ${name}\n`); };
const errors = [];
try {
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(30000);
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Uncaught/.test(m.text())) errors.push(`console: ${m.text()}`);
  });
  const shot = (name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });

  step('login page');
  await page.goto(`${base}/console/`);
  await page.locator('#login-token').waitFor();
  await shot('login');
  result.signedInShownAtLogin = await page.locator('#whoami').isVisible();

  step('a wrong token is refused with the Status');
  await page.fill('#login-token', 'not-a-token');
  await page.click('#login-token-button');
  await page.locator('#login-error .status-error').waitFor();
  result.badLogin = await page.locator('#login-error .status-error').innerText();

  step('log in with a token');
  await page.fill('#login-token', env('CONSOLE_TOKEN'));
  await page.click('#login-token-button');
  await page.locator('#who', { hasText: env('CONSOLE_USER') }).waitFor();
  const cookies = await context.cookies();
  result.cookies = cookies.map((c) => ({ name: c.name, httpOnly: c.httpOnly, secure: c.secure, sameSite: c.sameSite }));
  result.storage = await page.evaluate(() => ({ local: localStorage.length, session: sessionStorage.length, cookie: document.cookie }));

  step('identities');
  await page.selectOption('#ns-select', env('SA_NS'));
  await page.locator(`#sa-table tr[data-sa="${env('SA_NAME')}"]`).waitFor();
  await page.locator(`#token-table tr[data-token="${env('WEB_JTI')}"]`).waitFor();
  result.tokenInventoryUnavailable = await page.locator('[data-unavailable]').count();
  await shot('identities');
  await page.fill('#sa-filter', env('SA_NAME').slice(0, 2));
  result.filteredRows = await page.locator('#sa-table tbody tr').count();
  await page.fill('#sa-filter', '');

  step('token inventory and revoke, through the identity API');
  // The page talks to the server's identity.badge.dev/v1; the revoke it sends is watched,
  // not answered here.
  const jti = env('WEB_JTI');
  result.revoke = null;
  const watchRevoke = (request) => {
    if (request.method() !== 'PATCH' || !request.url().includes('/identity.badge.dev/v1/')) return;
    const headers = request.headers();
    result.revoke = { path: new URL(request.url()).pathname, body: request.postData(), contentType: headers['content-type'], csrf: !!headers['x-csrf-token'] };
  };
  page.on('request', watchRevoke);
  await page.click('nav button[data-view="identities"]');
  await page.locator(`#token-table tr[data-token="${jti}"]`).waitFor();
  const saRow = page.locator(`#sa-table tr[data-sa="${env('SA_NAME')}"]`);
  result.liveBefore = await saRow.locator('td').nth(1).innerText();
  result.tokenRow = await page.locator(`#token-table tr[data-token="${jti}"]`).innerText();
  await shot('tokens');
  await page.click(`#token-table tr[data-token="${jti}"] button`);
  await page.locator('#confirm[open]').waitFor();
  result.revokeRequest = await page.locator('#confirm-request').innerText();
  await page.click('#confirm-ok');
  await page.locator(`#token-table tr[data-token="${jti}"] .tag.revoked`).waitFor();
  result.liveAfter = await page.locator(`#sa-table tr[data-sa="${env('SA_NAME')}"]`).locator('td').nth(1).innerText();
  page.off('request', watchRevoke);

  step('permissions matrix');
  await page.locator(`#sa-table tr[data-sa="${env('SA_NAME')}"] button`, { hasText: 'Permissions' }).click();
  await page.locator('#matrix').waitFor();
  const cell = (r, v) => page.locator(`#matrix td[data-resource="${r}"][data-verb="${v}"]`);
  result.matrix = {
    podsList: { class: await cell('pods', 'list').getAttribute('class'), text: await cell('pods', 'list').innerText() },
    podsDelete: { class: await cell('pods', 'delete').getAttribute('class') },
    secretsGet: { class: await cell('secrets', 'get').getAttribute('class') },
  };
  result.leastPrivilege = await page.locator('#least-privilege').innerText();
  result.leastPrivilegeDownload = await page.locator('#least-privilege-download').getAttribute('download');
  await shot('matrix');
  await page.fill('#pick-in', 'default');
  await page.click('#pick-go');
  await page.locator('#matrix-namespace', { hasText: 'In namespace default' }).waitFor();
  result.podsListInDefault = await cell('pods', 'list').getAttribute('class');
  await page.fill('#pick-in', '');
  await page.click('#pick-go');
  await page.locator('#matrix-namespace', { hasText: `In namespace ${env('SA_NS')}` }).waitFor();

  step('who can act');
  await page.click('nav button[data-view="whocan"]');
  await page.locator('#whocan-table').waitFor();
  result.whocan = await page.locator('#whocan-table').innerText();
  await shot('whocan');

  step('create a bootstrap token (allowed)');
  await page.click('nav button[data-view="bootstrap"]');
  await page.locator('#bt-table').waitFor();
  await page.click('#bt-create-button');
  await page.locator('#confirm[open]').waitFor();
  result.confirmRequest = await page.locator('#confirm-request').innerText();
  await shot('confirm');
  await page.click('#confirm-ok');
  const token = await page.locator('#bt-token').innerText();
  result.createdToken = token;
  const id = token.split('.')[0];
  await page.locator(`#bt-table tr[data-token="${id}"]`).waitFor();
  await shot('bootstrap');

  step('delete it (denied)');
  await page.click(`#bt-table tr[data-token="${id}"] button[data-delete]`);
  await page.locator('#confirm[open]').waitFor();
  result.deleteRequest = await page.locator('#confirm-request').innerText();
  await page.click('#confirm-ok');
  await page.locator('#action-status .status-error').waitFor();
  result.refused = await page.locator('#action-status .status-error').innerText();
  result.stillListed = await page.locator(`#bt-table tr[data-token="${id}"]`).count();
  await shot('refused');

  step('keys, by keyboard');
  await page.focus('nav button[data-view="keys"]');
  await page.keyboard.press('Enter');
  await page.locator('#view[data-view="keys"] h2').waitFor();
  await page.locator('#keys-table, #keys-body .status-error').first().waitFor();
  result.keys = await page.locator('#keys-body').innerText();
  result.keysNext = await page.locator('#keys-next').innerText();
  await shot('keys');

  step('nodes');
  await page.click('nav button[data-view="nodes"]');
  await page.locator('#nodes-body table, #nodes-body p, #nodes-body .status-error').first().waitFor();
  await shot('nodes');

  step('phone width');
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click('nav button[data-view="permissions"]');
  await page.locator('#matrix').waitFor();
  result.phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await shot('phone');
  await page.setViewportSize({ width: 1280, height: 860 });

  step('log out');
  await page.click('#logout');
  await page.locator('#login-token').waitFor();
  result.signedInShownAfterLogout = await page.locator('#whoami').isVisible();
  result.afterLogout = await page.evaluate(async () => (await fetch('/console/api/api/v1/namespaces')).status);
} catch (e) {
  errors.push(`driver: ${e.message}`);
} finally {
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
result.errors = errors;
process.stdout.write(JSON.stringify(result) + '\n');
