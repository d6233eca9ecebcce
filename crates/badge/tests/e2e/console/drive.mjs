// Drives the console in a headless browser: Debian's Chromium through playwright-core, or
// Debian's Firefox through puppeteer-core over WebDriver BiDi (BROWSER=firefox). The Rust
// test that starts the server passes everything in the environment, answers each
// `@checkpoint NAME` line on stdout with `ok` on stdin once it has checked the server side,
// and reads the JSON this prints last.
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';
import os from 'node:os';
import readline from 'node:readline';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const browserName = process.env.BROWSER || 'chromium';
const base = env('CONSOLE_URL');
const shots = env('SCREENSHOT_DIR');
fs.mkdirSync(shots, { recursive: true });
const profile = fs.mkdtempSync(path.join(os.tmpdir(), `badge-console-${browserName}-`));
const answers = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function checkpoint(name) {
  process.stdout.write(`@checkpoint ${name}\n`);
  const { value, done } = await answers.next();
  if (done || value.trim() !== 'ok') throw new Error(`checkpoint ${name} was not confirmed`);
}

// What the flow needs from either driver; everything else is the page API both share.
let page;
let b;
if (browserName === 'firefox') {
  const puppeteer = (await import(pathToFileURL(path.join(env('PUPPETEER_CORE'), 'lib/esm/puppeteer/puppeteer-core.js')).href)).default;
  const browser = await puppeteer.launch({
    browser: 'firefox', executablePath: env('FIREFOX'), headless: true, acceptInsecureCerts: true,
    userDataDir: profile, defaultViewport: { width: 1280, height: 860 },
  });
  page = await browser.newPage();
  b = {
    cookies: async () => (browser.cookies ? browser.cookies() : page.cookies()),
    viewport: (width, height) => page.setViewport({ width, height }),
    select: (sel, value) => page.select(sel, value),
    fill: async (sel, value) => {
      await page.$eval(sel, (e) => { e.value = ''; e.dispatchEvent(new Event('input', { bubbles: true })); });
      if (value) await page.type(sel, value);
    },
    waitFn: (fn, arg) => page.waitForFunction(fn, {}, arg),
    close: () => browser.close(),
  };
} else {
  const { chromium } = await import(pathToFileURL(path.join(env('PLAYWRIGHT_CORE'), 'index.mjs')).href);
  // A fresh profile directory per run, given as playwright wants it.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: env('CHROMIUM'),
    headless: true,
    ignoreHTTPSErrors: true,
    viewport: { width: 1280, height: 860 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = context.pages()[0] || await context.newPage();
  b = {
    cookies: () => context.cookies(),
    viewport: (width, height) => page.setViewportSize({ width, height }),
    select: (sel, value) => page.selectOption(sel, value),
    fill: (sel, value) => page.fill(sel, value),
    waitFn: (fn, arg) => page.waitForFunction(fn, arg),
    close: () => context.close(),
  };
}
const waitFor = (sel) => page.waitForSelector(sel);
const click = async (sel) => { await waitFor(sel); await page.click(sel); };
// Reads wait for the element, as the page renders after its requests answer.
const text = async (sel) => { await waitFor(sel); return page.$eval(sel, (e) => e.innerText); };
const attr = async (sel, name) => { await waitFor(sel); return page.$eval(sel, (e, n) => e.getAttribute(n), name); };
const count = (sel) => page.$$eval(sel, (es) => es.length);
const visible = (sel) => page.$eval(sel, (e) => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length));
const waitText = (sel, needle) => b.waitFn(([s, t]) => { const e = document.querySelector(s); return !!e && e.innerText.includes(t); }, [sel, needle]);

// Puppeteer over BiDi cannot read request bodies; the confirmation dialog shows the body.
const postData = (request) => { try { return request.postData() || null; } catch (_) { return null; } };

const result = { browser: browserName, steps: [] };
const step = (name) => { result.steps.push(name); process.stderr.write(`step: ${name}\n`); };
const errors = [];
try {
  page.setDefaultTimeout(30000);
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  // Any console error fails the run, except the browser's own note that a request the flow
  // expects to be refused (a wrong login, a denied action) answered 4xx.
  page.on('console', (m) => {
    if (m.type() === 'error' && !/^Failed to load resource/.test(m.text())) errors.push(`console: ${m.text()}`);
  });
  const shot = (name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  const saRow = (name) => `#sa-table tr[data-sa="${name}"]`;

  step('login page');
  await page.goto(`${base}/console/`);
  await waitFor('#login-token');
  await shot('login');
  result.signedInShownAtLogin = await visible('#whoami');

  step('a wrong token is refused with the Status');
  await b.fill('#login-token', 'not-a-token');
  await click('#login-token-button');
  await waitFor('#login-error .status-error');
  result.badLogin = await text('#login-error .status-error');

  step('log in with a token');
  await b.fill('#login-token', env('CONSOLE_TOKEN'));
  await click('#login-token-button');
  await waitText('#who', env('CONSOLE_USER'));
  const cookies = await b.cookies();
  result.cookies = cookies.map((c) => ({ name: c.name, httpOnly: c.httpOnly, secure: c.secure, sameSite: c.sameSite }));
  result.storage = await page.evaluate(() => ({ local: localStorage.length, session: sessionStorage.length, cookie: document.cookie }));

  step('identities');
  await waitFor('#ns-select');
  await b.select('#ns-select', env('SA_NS'));
  await waitFor(saRow(env('SA_NAME')));
  await waitFor(`#token-table tr[data-token="${env('WEB_JTI')}"]`);
  result.tokenInventoryUnavailable = await count('[data-unavailable]');
  await shot('identities');
  // The filter is applied by the server: the table says which needle it shows.
  const needle = env('SA_NAME').slice(0, 2);
  await b.fill('#sa-filter', needle);
  await waitFor(`#sa-table[data-contains="${needle}"]`);
  result.filteredRows = await count('#sa-table tbody tr');
  await b.fill('#sa-filter', '');
  await waitFor('#sa-table[data-contains=""]');

  step('token inventory and revoke, through the identity API');
  // The page talks to the server's identity.badge.dev/v1; the revoke it sends is watched,
  // not answered here.
  const jti = env('WEB_JTI');
  result.revoke = null;
  const watchRevoke = (request) => {
    if (request.method() !== 'PATCH' || !request.url().includes('/identity.badge.dev/v1/')) return;
    const headers = request.headers();
    result.revoke = { path: new URL(request.url()).pathname, body: postData(request), contentType: headers['content-type'], csrf: !!headers['x-csrf-token'] };
  };
  page.on('request', watchRevoke);
  await click('nav button[data-view="identities"]');
  await waitFor(`#token-table tr[data-token="${jti}"]`);
  result.liveBefore = await text(`${saRow(env('SA_NAME'))} td:nth-child(2)`);
  result.tokenRow = await text(`#token-table tr[data-token="${jti}"]`);
  await shot('tokens');
  await click(`#token-table tr[data-token="${jti}"] button`);
  await waitFor('#confirm[open]');
  result.revokeRequest = await text('#confirm-request');
  await click('#confirm-ok');
  await waitFor(`#token-table tr[data-token="${jti}"] .tag.revoked`);
  result.liveAfter = await text(`${saRow(env('SA_NAME'))} td:nth-child(2)`);
  page.off('request', watchRevoke);

  step('disable a ServiceAccount, then enable it again');
  const other = env('DISABLE_SA');
  await click(`${saRow(other)} button[data-toggle="disable"]`);
  await waitFor('#confirm[open]');
  result.disableRequest = await text('#confirm-request');
  await click('#confirm-ok');
  await waitFor(`${saRow(other)}[data-disabled="true"]`);
  result.disabledState = await text(`${saRow(other)} td:nth-child(4)`);
  await shot('disabled');
  await checkpoint('disabled');
  await click(`${saRow(other)} button[data-toggle="enable"]`);
  await waitFor('#confirm[open]');
  result.enableRequest = await text('#confirm-request');
  await click('#confirm-ok');
  await waitFor(`${saRow(other)}[data-disabled="false"]`);
  await checkpoint('enabled');

  step('disabling where RBAC says no');
  await b.select('#ns-select', 'default');
  await click(`${saRow('operator')} button[data-toggle="disable"]`);
  await waitFor('#confirm[open]');
  await click('#confirm-ok');
  await waitFor('#action-status .status-error');
  result.disableRefused = await text('#action-status .status-error');
  result.operatorStillEnabled = await attr(saRow('operator'), 'data-disabled');
  await b.select('#ns-select', env('SA_NS'));
  await waitFor(saRow(env('SA_NAME')));

  step('permissions matrix');
  await click(`${saRow(env('SA_NAME'))} button`);
  await waitFor('#matrix');
  const cell = (r, v) => `#matrix td[data-resource="${r}"][data-verb="${v}"]`;
  result.matrix = {
    podsList: { class: await attr(cell('pods', 'list'), 'class'), text: await text(cell('pods', 'list')) },
    podsDelete: { class: await attr(cell('pods', 'delete'), 'class') },
    secretsGet: { class: await attr(cell('secrets', 'get'), 'class') },
  };
  result.leastPrivilege = await text('#least-privilege');
  result.leastPrivilegeDownload = await attr('#least-privilege-download', 'download');
  await shot('matrix');
  await b.fill('#pick-in', 'default');
  await click('#pick-go');
  await waitText('#matrix-namespace', 'In namespace default');
  result.podsListInDefault = await attr(cell('pods', 'list'), 'class');
  await b.fill('#pick-in', '');
  await click('#pick-go');
  await waitText('#matrix-namespace', `In namespace ${env('SA_NS')}`);

  step('who can act');
  await click('nav button[data-view="whocan"]');
  await waitFor('#whocan-table');
  result.whocan = await text('#whocan-table');
  await shot('whocan');

  step('create a bootstrap token (allowed)');
  await click('nav button[data-view="bootstrap"]');
  await waitFor('#bt-table');
  await click('#bt-create-button');
  await waitFor('#confirm[open]');
  result.confirmRequest = await text('#confirm-request');
  await shot('confirm');
  await click('#confirm-ok');
  await waitFor('#bt-token');
  const token = await text('#bt-token');
  result.createdToken = token;
  const id = token.split('.')[0];
  await waitFor(`#bt-table tr[data-token="${id}"]`);
  await shot('bootstrap');

  step('delete it (denied)');
  await click(`#bt-table tr[data-token="${id}"] button[data-delete]`);
  await waitFor('#confirm[open]');
  result.deleteRequest = await text('#confirm-request');
  await click('#confirm-ok');
  await waitFor('#action-status .status-error');
  result.refused = await text('#action-status .status-error');
  result.stillListed = await count(`#bt-table tr[data-token="${id}"]`);
  await shot('refused');

  step('keys, by keyboard');
  await page.focus('nav button[data-view="keys"]');
  await page.keyboard.press('Enter');
  await waitFor('#view[data-view="keys"] h2');
  await waitFor('#keys-table, #keys-body .status-error');
  result.keys = await text('#keys-body');
  result.keysNext = await text('#keys-next');
  await shot('keys');

  step('nodes');
  await click('nav button[data-view="nodes"]');
  await waitFor('#nodes-body table, #nodes-body p, #nodes-body .status-error');
  await shot('nodes');

  step('phone width');
  await b.viewport(390, 844);
  await click('nav button[data-view="permissions"]');
  await waitFor('#matrix');
  result.phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await shot('phone');
  await b.viewport(1280, 860);

  step('log out');
  await click('#logout');
  await waitFor('#login-token');
  result.signedInShownAfterLogout = await visible('#whoami');
  result.afterLogout = await page.evaluate(async () => (await fetch('/console/api/api/v1/namespaces')).status);
} catch (e) {
  errors.push(`driver: ${e.message}`);
} finally {
  await b.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
result.errors = errors;
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(0);
