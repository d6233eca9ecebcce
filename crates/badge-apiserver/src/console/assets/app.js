// The badge console. Every read and write is an API request under /console/api/, which the
// server sends through its own handler as the logged-in user. The credential never reaches
// this page: the session is an HttpOnly cookie, and writes carry the session's CSRF token.
'use strict';

const IDENTITY_API = '/apis/identity.badge.dev/v1';
const VERBS = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete', 'deletecollection'];
const BASE_RESOURCES = [
  ['', 'pods'], ['', 'secrets'], ['', 'configmaps'], ['', 'serviceaccounts'], ['', 'serviceaccounts/token'],
  ['rbac.authorization.k8s.io', 'roles'], ['rbac.authorization.k8s.io', 'rolebindings'],
];
const IDLE_DAYS = 30;
const PAGE = 500;
// The most rows a table draws; a filter narrows the rest.
const SHOWN = 200;
// ServiceAccounts per page of the Identities view.
const SA_PAGE = 50;
const SA_LABEL = 'identity.badge.dev/service-account';
const DISABLED_LABEL = 'identity.badge.dev/disabled';
const IDLE_SINCE_LABEL = 'identity.badge.dev/idle-since';

const state = { csrf: null, user: null, view: 'identities', namespace: 'default', sa: null, aborts: [] };

// ---- small DOM helpers: text only, never HTML strings ----
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
const $ = (sel) => document.querySelector(sel);
function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
function when(t) {
  if (!t) return el('span', { class: 'muted' }, 'never');
  const d = new Date(t);
  return el('time', { datetime: t, title: t }, ago(d));
}
function ago(d) {
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  const abs = Math.abs(s);
  const unit = abs < 90 ? [abs, 's'] : abs < 5400 ? [Math.round(abs / 60), 'm'] : abs < 129600 ? [Math.round(abs / 3600), 'h'] : [Math.round(abs / 86400), 'd'];
  return s >= 0 ? `${unit[0]}${unit[1]} ago` : `in ${unit[0]}${unit[1]}`;
}
function table(headers, rows, attrs) {
  return el('div', { class: 'table-wrap' },
    el('table', attrs || {}, el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col' }, h)))), el('tbody', {}, rows)));
}

// ---- the API, through the console's proxy ----
class ApiError extends Error {
  constructor(code, status) {
    super((status && status.message) || `HTTP ${code}`);
    this.code = code;
    this.status = status;
  }
}

async function call(method, path, body, contentType) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = contentType || 'application/json';
  if (method !== 'GET') headers['X-CSRF-Token'] = state.csrf || '';
  const response = await fetch('/console/api' + path, {
    method, headers, credentials: 'same-origin', cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (response.status === 401 && state.user) {
    showLogin();
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}
const get = (path) => call('GET', path);

function statusBox(error, context) {
  const s = error.status || {};
  const box = el('div', { class: 'status-error', role: 'alert' },
    el('strong', {}, `${context ? context + ': ' : ''}${s.code || error.code || ''} ${s.reason || ''}`.trim()),
    el('span', { class: 'status-message' }, s.message || error.message));
  return box;
}
function notAvailable(what, error) {
  return el('div', { class: 'notice', role: 'note', dataset: { unavailable: what } },
    el('strong', {}, `${what} is not available. `),
    error.code === 404
      ? 'This server does not serve it yet (the API answered 404).'
      : `The server refused to show it: ${(error.status && error.status.message) || error.message}`);
}

// Lists in pages of PAGE, following `continue`, so a large list never comes in one response.
async function listAll(path) {
  const sep = path.includes('?') ? '&' : '?';
  const items = [];
  let next = '';
  for (;;) {
    const page = await get(`${path}${sep}limit=${PAGE}${next ? `&continue=${encodeURIComponent(next)}` : ''}`);
    items.push(...(page.items || []));
    next = page.metadata && page.metadata.continue;
    if (!next) return { items, resourceVersion: page.metadata.resourceVersion };
  }
}

// A console endpoint outside the proxied API (the server-side search), answered as JSON.
async function fetchJson(url) {
  const response = await fetch(url, { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'application/json' } });
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (response.status === 401 && state.user) showLogin();
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// Streams a watch from `rv`, handing each change to `onEvent`; when the stream ends or
// fails (and was not aborted), calls `onEnd` once.
function watchFrom(path, rv, controller, onEvent, onEnd) {
  (async () => {
    try {
      await streamWatch(path, rv, controller.signal, (event) => {
        if (event.type === 'ADDED' || event.type === 'MODIFIED' || event.type === 'DELETED') onEvent(event);
      });
    } catch (_) { /* reconnect below */ }
    if (controller.signal.aborted) return;
    $('#live').textContent = 'Live updates paused; reconnecting.';
    setTimeout(() => { if (!controller.signal.aborted) onEnd(); }, 2000);
  })();
}

// One watch request, its newline-delimited events handed to `onEvent` until the server ends
// it; an ERROR event (the resourceVersion expired) ends it with an exception.
async function streamWatch(path, rv, signal, onEvent) {
  const sep = path.includes('?') ? '&' : '?';
  const response = await fetch(`/console/api${path}${sep}watch=1&allowWatchBookmarks=true&resourceVersion=${encodeURIComponent(rv)}`, {
    credentials: 'same-origin', signal, headers: { Accept: 'application/json' },
  });
  if (!response.ok || !response.body) throw new Error('watch refused');
  $('#live').textContent = 'Live: watching for changes.';
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (!line) continue;
      const event = JSON.parse(line);
      if (event.type === 'ERROR') throw new Error('watch expired');
      onEvent(event);
    }
  }
}

// ---- live updates: list, then watch from the list's resourceVersion with a streaming fetch ----
function watchList(path, onChange) {
  const controller = new AbortController();
  state.aborts.push(controller);
  const items = new Map();
  const key = (o) => `${o.metadata.namespace || ''}/${o.metadata.name}`;
  const run = async () => {
    while (!controller.signal.aborted) {
      let rv;
      try {
        const list = await listAll(path);
        items.clear();
        for (const o of list.items) items.set(key(o), o);
        rv = list.resourceVersion;
        onChange([...items.values()], null);
      } catch (e) {
        onChange(null, e);
        return;
      }
      try {
        await streamWatch(path, rv, controller.signal, (event) => {
          if (event.type === 'ADDED' || event.type === 'MODIFIED') items.set(key(event.object), event.object);
          else if (event.type === 'DELETED') items.delete(key(event.object));
          else return;
          onChange([...items.values()], null);
        });
      } catch (e) {
        if (controller.signal.aborted) return;
      }
      $('#live').textContent = 'Live updates paused; reconnecting.';
      await new Promise((r) => setTimeout(r, 2000));
    }
  };
  run();
}

// ---- RBAC: which bindings grant what, evaluated as the RBAC authorizer does ----
function subjectMatches(subject, sa) {
  const ns = sa.namespace;
  if (subject.kind === 'ServiceAccount') return subject.name === sa.name && (subject.namespace || '') === ns;
  if (subject.kind === 'User') return subject.name === `system:serviceaccount:${ns}:${sa.name}`;
  if (subject.kind === 'Group') return ['system:serviceaccounts', `system:serviceaccounts:${ns}`, 'system:authenticated'].includes(subject.name);
  return false;
}
function ruleAllows(rule, group, resource, verb, name) {
  const has = (list, v) => (list || []).includes('*') || (list || []).includes(v);
  if (!has(rule.verbs, verb) || !has(rule.apiGroups, group)) return false;
  const [base] = resource.split('/');
  const resources = rule.resources || [];
  const resourceOk = resources.includes('*') || resources.includes(resource) || (resource.includes('/') && resources.includes(`${base}/*`)) || (!resource.includes('/') && resources.includes('*/'));
  if (!resourceOk) return false;
  if (name !== undefined && (rule.resourceNames || []).length) return rule.resourceNames.includes(name);
  return true;
}
async function loadRbac(namespace) {
  const [roles, bindings, clusterRoles, clusterBindings] = await Promise.all([
    get(`/apis/rbac.authorization.k8s.io/v1/namespaces/${namespace}/roles`),
    get(`/apis/rbac.authorization.k8s.io/v1/namespaces/${namespace}/rolebindings`),
    get('/apis/rbac.authorization.k8s.io/v1/clusterroles'),
    get('/apis/rbac.authorization.k8s.io/v1/clusterrolebindings'),
  ]);
  const roleRules = (ref) => {
    const source = ref.kind === 'ClusterRole' ? clusterRoles.items : roles.items;
    const role = source.find((r) => r.metadata.name === ref.name);
    return role ? role.rules || [] : [];
  };
  const all = [
    ...bindings.items.map((b) => ({ binding: b, label: `RoleBinding ${namespace}/${b.metadata.name}` })),
    ...clusterBindings.items.map((b) => ({ binding: b, label: `ClusterRoleBinding ${b.metadata.name}` })),
  ].map((x) => ({ ...x, role: `${x.binding.roleRef.kind} ${x.binding.roleRef.name}`, rules: roleRules(x.binding.roleRef) }));
  return all;
}
function grantsFor(rbac, match, group, resource, verb, name) {
  return rbac.filter((b) => (b.binding.subjects || []).some(match) && b.rules.some((r) => ruleAllows(r, group, resource, verb, name)));
}

// ---- confirmations: each write shows its exact request first ----
function confirmRequest(what, method, path, body, contentType) {
  const dialog = $('#confirm');
  $('#confirm-what').textContent = what;
  const lines = [`${method} ${path}`];
  if (body !== undefined) lines.push(`Content-Type: ${contentType || 'application/json'}`, '', JSON.stringify(body, null, 2));
  $('#confirm-request').textContent = lines.join('\n');
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.returnValue = '';
    dialog.showModal();
    $('#confirm-cancel').focus();
  });
}
async function act(what, method, path, body, contentType) {
  const slot = clear($('#action-status'));
  if (!(await confirmRequest(what, method, path, body, contentType))) return null;
  try {
    const result = await call(method, path, body, contentType);
    slot.append(el('div', { class: 'ok-box', role: 'status' }, `Done: ${what}`));
    return result;
  } catch (e) {
    slot.append(statusBox(e, `Refused: ${what}`));
    return null;
  }
}

// ---- views ----
const views = {
  async identities(view) {
    view.append(el('h2', {}, 'Identities'));
    const nsSelect = el('select', { id: 'ns-select' });
    const filter = el('input', { id: 'sa-filter', type: 'search', placeholder: 'name contains…' });
    view.append(el('div', { class: 'row' },
      el('div', {}, el('label', { for: 'ns-select' }, 'Namespace'), nsSelect),
      el('div', {}, el('label', { for: 'sa-filter' }, 'Filter ServiceAccounts'), filter)));
    const body = el('div', { id: 'identities-body' });
    view.append(body);
    try {
      const namespaces = await get(`/api/v1/namespaces?limit=${PAGE}`);
      for (const ns of namespaces.items) nsSelect.append(el('option', { value: ns.metadata.name, selected: ns.metadata.name === state.namespace }, ns.metadata.name));
    } catch (e) {
      nsSelect.append(el('option', { value: state.namespace }, state.namespace));
      body.before(statusBox(e, 'Listing namespaces'));
    }
    nsSelect.addEventListener('change', () => { state.namespace = nsSelect.value; show('identities'); });
    const ns = state.namespace;
    // One page at a time, searched and paged by the server; `pages` holds the continue
    // token of each page seen so far, for Previous.
    const paging = { pages: [''], at: 0, next: '', generation: 0, watches: null, reload: null };
    const load = async () => {
      const generation = ++paging.generation;
      if (paging.watches) paging.watches.abort();
      const needle = filter.value.trim();
      const data = { accounts: null, accountsError: null, tokens: null, tokensMore: false, tokenError: null, usage: null };
      const search = (path, extra) => `/console/search${path}?limit=${SA_PAGE}${extra}`;
      try {
        const cont = paging.pages[paging.at];
        const page = await fetchJson(search(`/api/v1/namespaces/${ns}/serviceaccounts`, `&contains=${encodeURIComponent(needle)}${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`));
        data.accounts = page.items || [];
        data.accountsRv = page.metadata.resourceVersion;
        paging.next = page.metadata.continue || '';
      } catch (e) {
        data.accountsError = e;
      }
      const names = (data.accounts || []).map((sa) => sa.metadata.name);
      const selector = `${SA_LABEL} in (${names.join(',')})`;
      if (names.length) {
        await Promise.all([
          get(`${IDENTITY_API}/namespaces/${ns}/issuedtokens?limit=${PAGE}&labelSelector=${encodeURIComponent(selector)}`).then((list) => {
            data.tokens = list.items || [];
            data.tokensMore = !!(list.metadata && list.metadata.continue);
            data.tokensRv = list.metadata.resourceVersion;
          }, (e) => { data.tokenError = e; }),
          fetchJson(search(`${IDENTITY_API}/namespaces/${ns}/serviceaccountusages`, `&names=${encodeURIComponent(names.join(','))}`)).then((list) => {
            data.usage = new Map((list.items || []).map((u) => [u.metadata.name, u]));
            data.usageRv = list.metadata.resourceVersion;
          }, () => { data.usage = null; }),
        ]);
      } else {
        data.tokens = [];
      }
      if (generation !== paging.generation) return;
      renderIdentities(body, ns, data, needle, paging, load);
      // Live updates: a change to what this page shows reloads the page.
      const controller = new AbortController();
      state.aborts.push(controller);
      paging.watches = controller;
      let pending = null;
      const reload = () => {
        if (pending || controller.signal.aborted) return;
        pending = setTimeout(() => { pending = null; if (!controller.signal.aborted) load(); }, 300);
      };
      const shown = new Set(names);
      const relevant = (o) => shown.has(o.metadata.name) || (!paging.next && o.metadata.name.toLowerCase().includes(needle.toLowerCase()));
      if (data.accountsRv) watchFrom(`/api/v1/namespaces/${ns}/serviceaccounts`, data.accountsRv, controller, (event) => { if (relevant(event.object)) reload(); }, reload);
      if (names.length && data.tokensRv) watchFrom(`${IDENTITY_API}/namespaces/${ns}/issuedtokens?labelSelector=${encodeURIComponent(selector)}`, data.tokensRv, controller, reload, reload);
      if (names.length && data.usageRv) watchFrom(`${IDENTITY_API}/namespaces/${ns}/serviceaccountusages`, data.usageRv, controller, (event) => { if (shown.has(event.object.metadata.name)) reload(); }, reload);
    };
    let typing = null;
    filter.addEventListener('input', () => {
      clearTimeout(typing);
      typing = setTimeout(() => { paging.pages = ['']; paging.at = 0; load(); }, 250);
    });
    await load();
  },

  async permissions(view) {
    view.append(el('h2', {}, 'Effective permissions'));
    const picked = await pickServiceAccount(view, 'permissions');
    if (!picked) return;
    const sa = state.sa;
    const target = sa.in || sa.namespace;
    const out = el('div', { id: 'matrix-body' });
    view.append(out);
    out.append(el('p', { class: 'muted' }, `Asking the server what system:serviceaccount:${sa.namespace}:${sa.name} may do in ${target}…`));
    let rbac = [];
    let rbacError = null;
    try { rbac = await loadRbac(target); } catch (e) { rbacError = e; }
    const match = (s) => subjectMatches(s, sa);
    const rows = new Map(BASE_RESOURCES.map(([g, r]) => [`${g}|${r}`, [g, r]]));
    for (const b of rbac) {
      if (!(b.binding.subjects || []).some(match)) continue;
      for (const rule of b.rules) for (const g of rule.apiGroups || []) for (const r of rule.resources || []) {
        if (g !== '*' && r !== '*' && !r.endsWith('/*')) rows.set(`${g}|${r}`, [g, r]);
      }
    }
    const cells = [];
    for (const [g, r] of rows.values()) for (const v of VERBS) cells.push({ g, r, v });
    let sarError = null;
    const user = `system:serviceaccount:${sa.namespace}:${sa.name}`;
    const groups = ['system:serviceaccounts', `system:serviceaccounts:${sa.namespace}`, 'system:authenticated'];
    const queue = cells.slice();
    const worker = async () => {
      while (queue.length && !sarError) {
        const c = queue.shift();
        const [resource, subresource] = c.r.split('/');
        try {
          const review = await call('POST', '/apis/authorization.k8s.io/v1/subjectaccessreviews', {
            apiVersion: 'authorization.k8s.io/v1', kind: 'SubjectAccessReview',
            spec: { user, groups, resourceAttributes: { namespace: target, verb: c.v, group: c.g, resource, subresource: subresource || '' } },
          });
          c.allowed = !!(review.status && review.status.allowed);
        } catch (e) { sarError = e; }
      }
    };
    await Promise.all(Array.from({ length: 6 }, worker));
    clear(out);
    if (sarError) out.append(statusBox(sarError, 'SubjectAccessReview refused; showing what the readable RBAC objects grant'));
    if (rbacError) out.append(statusBox(rbacError, 'Reading RBAC bindings'));
    const byRow = new Map();
    for (const c of cells) {
      const grants = grantsFor(rbac, match, c.g, c.r, c.v);
      if (sarError) c.allowed = grants.length > 0;
      c.grants = grants;
      const k = `${c.g}|${c.r}`;
      if (!byRow.has(k)) byRow.set(k, []);
      byRow.get(k).push(c);
    }
    const trs = [...byRow.entries()].map(([k, cs]) => {
      const [g, r] = k.split('|');
      return el('tr', {},
        el('th', { scope: 'row' }, r, g ? el('span', { class: 'grants' }, g) : null),
        cs.map((c) => el('td', {
          class: `cell ${c.allowed ? 'allowed' : 'denied'}`, dataset: { resource: c.r, verb: c.v, group: c.g },
          title: c.grants.map((b) => `${b.label} → ${b.role}`).join('\n') || (c.allowed ? 'granted outside RBAC bindings (e.g. system:masters)' : 'denied'),
        }, c.allowed ? '✓' : '·', c.allowed ? c.grants.map((b) => el('span', { class: 'grants' }, b.binding.metadata.name)) : null)));
    });
    out.append(el('p', { id: 'matrix-namespace' }, `In namespace ${target}. A ✓ cell is allowed; under it, the bindings that grant it.`));
    try {
      const u = await get(`${IDENTITY_API}/namespaces/${sa.namespace}/serviceaccountusages/${sa.name}`);
      const last = u.status && u.status.lastAuthenticated && u.status.lastAuthenticated.time;
      if (!last || Date.now() - new Date(last).getTime() > IDLE_DAYS * 86400e3) {
        out.append(el('p', { class: 'notice', id: 'unused' }, `Granted but unused: this identity has not authenticated in ${IDLE_DAYS} days (last use: `, when(last), ').'));
      }
    } catch (_) { /* no usage data on this server */ }
    out.append(table(['resource', ...VERBS], trs, { id: 'matrix', 'aria-label': `Permissions of ${user}` }));
    const yaml = leastPrivilegeRole(sa, target, cells.filter((c) => c.allowed));
    const download = el('a', { href: URL.createObjectURL(new Blob([yaml], { type: 'application/yaml' })), download: `${sa.name}-least-privilege.yaml`, id: 'least-privilege-download' }, 'Download as YAML');
    out.append(el('h3', {}, 'Least-privilege suggestion'),
      el('p', {}, 'A Role granting exactly the allowed cells above, resource by resource, in place of wildcard or cluster-wide grants. Remove what the workload does not use. ', download),
      el('pre', { id: 'least-privilege' }, yaml));
  },

  async whocan(view) {
    view.append(el('h2', {}, 'Who can act as an identity'));
    const picked = await pickServiceAccount(view, 'whocan');
    if (!picked) return;
    const sa = state.sa;
    const out = el('div', { id: 'whocan-body' });
    view.append(out);
    let rbac;
    try { rbac = await loadRbac(sa.namespace); } catch (e) { out.append(statusBox(e, 'Reading RBAC bindings')); return; }
    const ways = [
      ['create its tokens', '', 'serviceaccounts/token', 'create', sa.name],
      ['impersonate it', '', 'serviceaccounts', 'impersonate', sa.name],
      ['run pods as it', '', 'pods', 'create', undefined],
    ];
    const rows = [];
    for (const [how, g, r, v, name] of ways) {
      for (const b of rbac) {
        if (!b.rules.some((rule) => ruleAllows(rule, g, r, v, name))) continue;
        for (const s of b.binding.subjects || []) {
          rows.push(el('tr', {}, el('td', {}, `${s.kind} ${s.namespace ? s.namespace + '/' : ''}${s.name}`), el('td', {}, how), el('td', {}, `${b.label} → ${b.role}`)));
        }
      }
    }
    rows.push(el('tr', {}, el('td', {}, 'Group system:masters'), el('td', {}, 'everything'), el('td', {}, 'always allowed')));
    let last = null;
    try {
      const u = await get(`${IDENTITY_API}/namespaces/${sa.namespace}/serviceaccountusages/${sa.name}`);
      last = u.status && u.status.lastAuthenticated && u.status.lastAuthenticated.time;
      out.append(el('p', {}, 'Last use of this identity: ', when(last)));
    } catch (e) {
      out.append(notAvailable('Usage data (identity.badge.dev/v1 serviceaccountusages)', e));
    }
    out.append(table(['Subject', 'May', 'Through'], rows, { id: 'whocan-table' }));
  },

  async keys(view) {
    view.append(el('h2', {}, 'Signing keys'));
    const body = el('div', { id: 'keys-body' });
    view.append(el('div', { class: 'buttons' },
      el('button', { type: 'button', id: 'key-rotate', on: { click: async () => { if (await act('Rotate the signing key', 'POST', '/badge/v1/keys/rotate')) show('keys'); } } }, 'Rotate')), body);
    let described;
    try { described = await get('/badge/v1/keys'); } catch (e) { body.append(statusBox(e, 'Reading the keys')); return; }
    const keys = described.keys || [];
    const rows = keys.map((k) => el('tr', { dataset: { kid: k.kid } },
      el('td', {}, el('code', {}, k.kid)), el('td', {}, k.algorithm || ''), el('td', {}, el('span', { class: `tag ${k.state}` }, k.state)),
      el('td', {}, when(k.created)), el('td', {}, k.activatesAt ? when(k.activatesAt) : ''), el('td', {}, k.retiresAt ? when(k.retiresAt) : ''),
      el('td', {}, String(k.verifiedTokens || 0)), el('td', {}, when(k.lastUsed)),
      el('td', {},
        el('button', { type: 'button', on: { click: async () => { if (await act(`Retire key ${k.kid}`, 'POST', `/badge/v1/keys/${encodeURIComponent(k.kid)}/retire`)) show('keys'); } } }, 'Retire'), ' ',
        el('button', { type: 'button', class: 'danger', on: { click: async () => { if (await act(`Revoke key ${k.kid}`, 'POST', `/badge/v1/keys/${encodeURIComponent(k.kid)}/revoke`)) show('keys'); } } }, 'Revoke'))));
    body.append(table(['Key', 'Alg', 'State', 'Created', 'Signs from', 'Retires', 'Verified', 'Last used', ''], rows, { id: 'keys-table' }));
    const upcoming = [];
    for (const k of keys) {
      if (k.activatesAt && new Date(k.activatesAt) > new Date()) upcoming.push([k.activatesAt, `${k.kid} starts signing`]);
      if (k.retiresAt && new Date(k.retiresAt) > new Date()) upcoming.push([k.retiresAt, `${k.kid} retires`]);
    }
    upcoming.sort((a, b) => new Date(a[0]) - new Date(b[0]));
    body.append(el('p', { id: 'keys-next' }, upcoming.length ? ['Next scheduled transition: ', upcoming[0][1], ' ', when(upcoming[0][0]), '.'] : 'No transition is scheduled.'));
    const extra = Object.entries(described).filter(([k]) => k !== 'keys');
    if (extra.length) body.append(el('h3', {}, 'Rotation'), el('pre', {}, JSON.stringify(Object.fromEntries(extra), null, 2)));
  },

  async bootstrap(view) {
    view.append(el('h2', {}, 'Bootstrap tokens'));
    const desc = el('input', { id: 'bt-description', value: 'joining a node' });
    const ttl = el('input', { id: 'bt-ttl', type: 'number', min: '1', value: '24' });
    const usageBoxes = ['authentication', 'signing'].map((u) => el('label', { class: 'inline' }, el('input', { type: 'checkbox', checked: true, dataset: { usage: u } }), ` ${u}`));
    const form = el('form', { id: 'bt-create' },
      el('div', { class: 'row' },
        el('div', {}, el('label', { for: 'bt-description' }, 'Description'), desc),
        el('div', {}, el('label', { for: 'bt-ttl' }, 'Expires in (hours)'), ttl),
        el('div', {}, el('span', {}, 'Usages'), usageBoxes)),
      el('div', { class: 'buttons' }, el('button', { type: 'submit', class: 'primary', id: 'bt-create-button' }, 'Create bootstrap token')));
    const created = el('div', { id: 'bt-created' });
    const body = el('div', { id: 'bt-body' });
    view.append(form, created, body);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const id = randomChars(6); const secret = randomChars(16);
      const stringData = {
        'token-id': id, 'token-secret': secret, description: desc.value,
        expiration: new Date(Date.now() + Number(ttl.value || 24) * 3600e3).toISOString().replace(/\.\d+Z$/, 'Z'),
      };
      for (const box of form.querySelectorAll('input[data-usage]')) if (box.checked) stringData[`usage-bootstrap-${box.dataset.usage}`] = 'true';
      const secretObject = { apiVersion: 'v1', kind: 'Secret', metadata: { name: `bootstrap-token-${id}`, namespace: 'kube-system' }, type: 'bootstrap.kubernetes.io/token', stringData };
      const shown = { ...secretObject, stringData: { ...stringData, 'token-secret': '<generated, shown once after creation>' } };
      clear($('#action-status'));
      if (!(await confirmRequest(`Create bootstrap token ${id}`, 'POST', '/api/v1/namespaces/kube-system/secrets', shown))) return;
      try {
        await call('POST', '/api/v1/namespaces/kube-system/secrets', secretObject);
        clear(created).append(el('div', { class: 'ok-box', role: 'status' }, 'Created. The token, shown only now: ', el('code', { id: 'bt-token' }, `${id}.${secret}`)));
      } catch (e) {
        $('#action-status').append(statusBox(e, `Refused: create bootstrap token ${id}`));
      }
    });
    watchList('/api/v1/namespaces/kube-system/secrets?fieldSelector=type%3Dbootstrap.kubernetes.io%2Ftoken', (items, error) => {
      clear(body);
      if (error) { body.append(statusBox(error, 'Listing bootstrap tokens')); return; }
      const decode = (s, k) => (s.data && s.data[k] ? atob(s.data[k]) : '');
      const rows = items.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name)).map((s) => {
        const id = decode(s, 'token-id') || s.metadata.name.replace('bootstrap-token-', '');
        const usages = Object.keys(s.data || {}).filter((k) => k.startsWith('usage-bootstrap-') && decode(s, k) === 'true').map((k) => el('span', { class: 'tag' }, k.slice(16)));
        const exp = decode(s, 'expiration');
        return el('tr', { dataset: { token: id } },
          el('td', {}, el('code', {}, id)), el('td', {}, decode(s, 'description')), el('td', {}, exp ? when(exp) : 'never'),
          el('td', {}, usages), el('td', {}, decode(s, 'auth-extra-groups')),
          el('td', {}, el('button', { type: 'button', class: 'danger', dataset: { delete: id }, on: { click: () => act(`Delete bootstrap token ${id}`, 'DELETE', `/api/v1/namespaces/kube-system/secrets/${s.metadata.name}`) } }, 'Delete')));
      });
      body.append(rows.length ? table(['Token ID', 'Description', 'Expires', 'Usages', 'Extra groups', ''], rows, { id: 'bt-table' }) : el('p', { class: 'muted', id: 'bt-table' }, 'No bootstrap tokens.'));
    });
  },

  async nodes(view) {
    view.append(el('h2', {}, 'Nodes'));
    const body = el('div', { id: 'nodes-body' });
    view.append(body);
    let leases = new Map();
    try {
      for (const l of (await get('/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases')).items || []) leases.set(l.metadata.name, l);
    } catch (_) { leases = new Map(); }
    watchList('/api/v1/nodes', (items, error) => {
      clear(body);
      if (error) { body.append(statusBox(error, 'Listing nodes')); return; }
      const rows = items.map((n) => {
        const ready = ((n.status && n.status.conditions) || []).find((c) => c.type === 'Ready');
        const lease = leases.get(n.metadata.name);
        return el('tr', { dataset: { node: n.metadata.name } },
          el('td', {}, n.metadata.name),
          el('td', {}, ready ? ready.status : 'Unknown'),
          el('td', {}, when(ready && ready.lastHeartbeatTime)),
          el('td', {}, when(lease && lease.spec && lease.spec.renewTime)),
          el('td', {}, (n.status && n.status.nodeInfo && n.status.nodeInfo.kubeletVersion) || ''));
      });
      body.append(rows.length ? table(['Node', 'Ready', 'Last heartbeat', 'Agent last contact (lease)', 'Version'], rows, { id: 'nodes-table' }) : el('p', { class: 'muted' }, 'No nodes have joined.'));
    });
  },
};

function leastPrivilegeRole(sa, target, allowed) {
  const byResource = new Map();
  for (const c of allowed) {
    const k = `${c.g}|${c.r}`;
    if (!byResource.has(k)) byResource.set(k, []);
    byResource.get(k).push(c.v);
  }
  const rules = new Map();
  for (const [k, verbs] of byResource) {
    const [g, r] = k.split('|');
    const rk = `${g}|${verbs.join(',')}`;
    if (!rules.has(rk)) rules.set(rk, { g, verbs, resources: [] });
    rules.get(rk).resources.push(r);
  }
  const q = (v) => JSON.stringify(v);
  const lines = ['apiVersion: rbac.authorization.k8s.io/v1', 'kind: Role', 'metadata:',
    `  name: ${q(`${sa.name}-least-privilege`)}`, `  namespace: ${q(target)}`, rules.size ? 'rules:' : 'rules: []'];
  for (const rule of rules.values()) {
    lines.push(`- apiGroups: [${q(rule.g)}]`, `  resources: [${rule.resources.map(q).join(', ')}]`, `  verbs: [${rule.verbs.map(q).join(', ')}]`);
  }
  lines.push('---', 'apiVersion: rbac.authorization.k8s.io/v1', 'kind: RoleBinding', 'metadata:',
    `  name: ${q(`${sa.name}-least-privilege`)}`, `  namespace: ${q(target)}`,
    'roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: ' + q(`${sa.name}-least-privilege`) + '}',
    'subjects:', `- {kind: ServiceAccount, name: ${q(sa.name)}, namespace: ${q(sa.namespace)}}`, '');
  return lines.join('\n');
}

function renderIdentities(body, ns, data, needle, paging, load) {
  clear(body);
  if (data.accountsError) { body.append(statusBox(data.accountsError, 'Listing ServiceAccounts')); return; }
  if (data.tokenError) body.append(notAvailable('The token inventory (identity.badge.dev/v1 issuedtokens)', data.tokenError));
  const { usage, tokens } = data;
  const rows = data.accounts.map((sa) => {
    const name = sa.metadata.name;
    const live = (tokens || []).filter((t) => t.spec.serviceAccountName === name && !t.spec.revoked && (!t.spec.expiresAt || new Date(t.spec.expiresAt) > new Date()));
    const u = usage && usage.get(name);
    const last = u && u.status && u.status.lastAuthenticated && u.status.lastAuthenticated.time;
    const idle = !last || (Date.now() - new Date(last).getTime()) > IDLE_DAYS * 86400e3;
    const disabled = ((sa.metadata.labels || {})[DISABLED_LABEL]) === 'true';
    const na = el('span', { class: 'muted' }, 'n/a');
    const stateCell = disabled ? el('span', { class: 'tag revoked', title: `${DISABLED_LABEL}=true: its tokens fail` }, 'disabled')
      : usage ? (idle ? el('span', { class: 'tag idle', title: `no use in ${IDLE_DAYS} days` }, 'idle') : 'active') : na.cloneNode(true);
    const path = `/api/v1/namespaces/${ns}/serviceaccounts/${name}`;
    const toggle = disabled
      ? () => act(`Enable ServiceAccount ${ns}/${name}`, 'PATCH', path, { metadata: { labels: { [DISABLED_LABEL]: null, [IDLE_SINCE_LABEL]: null } } }, 'application/merge-patch+json')
      : () => act(`Disable ServiceAccount ${ns}/${name}: its tokens fail until it is enabled`, 'PATCH', path, { metadata: { labels: { [DISABLED_LABEL]: 'true' } } }, 'application/merge-patch+json');
    return el('tr', { dataset: { sa: name, disabled: String(disabled) } },
      el('td', {}, name),
      el('td', {}, tokens ? `${live.length}${data.tokensMore ? '+' : ''}` : na),
      el('td', {}, usage ? when(last) : na.cloneNode(true)),
      el('td', {}, stateCell),
      el('td', {},
        el('button', { type: 'button', on: { click: () => { state.sa = { namespace: ns, name }; show('permissions'); } } }, 'Permissions'), ' ',
        el('button', { type: 'button', on: { click: () => { state.sa = { namespace: ns, name }; show('whocan'); } } }, 'Who can act'), ' ',
        el('button', { type: 'button', class: disabled ? null : 'danger', dataset: { toggle: disabled ? 'enable' : 'disable' }, on: { click: async () => { if (await toggle()) load(); } } }, disabled ? 'Enable' : 'Disable'),
      ));
  });
  body.append(table(['ServiceAccount', 'Live tokens', 'Last use', 'State', ''], rows, { id: 'sa-table', dataset: { contains: needle, page: String(paging.at + 1) } }));
  const pager = el('div', { class: 'buttons', id: 'sa-pager' },
    el('button', { type: 'button', id: 'sa-prev', disabled: paging.at === 0, on: { click: () => { paging.at -= 1; load(); } } }, 'Previous'),
    el('span', { class: 'muted' }, ` Page ${paging.at + 1}${needle ? `, names containing “${needle}”` : ''} `),
    el('button', { type: 'button', id: 'sa-next', disabled: !paging.next, on: { click: () => { paging.pages[paging.at + 1] = paging.next; paging.at += 1; load(); } } }, 'Next'));
  body.append(pager);
  if (!rows.length) body.append(el('p', { class: 'muted' }, needle ? 'No ServiceAccount on this page matches.' : 'No ServiceAccounts.'));
  if (tokens) body.append(tokenTable(ns, tokens, load));
}

function tokenTable(ns, tokens, reload) {
  const rows = tokens.slice(0, SHOWN).map((t) => {
    const s = t.spec || {}; const st = t.status || {};
    const ref = s.boundObjectRef ? `${s.boundObjectRef.kind}/${s.boundObjectRef.name}` : '';
    return el('tr', { dataset: { token: t.metadata.name } },
      el('td', {}, s.serviceAccountName), el('td', {}, when(s.issuedAt)), el('td', {}, when(st.lastUsed && st.lastUsed.time)),
      el('td', {}, s.expiresAt ? when(s.expiresAt) : 'never'), el('td', {}, (s.audiences || []).join(', ')), el('td', {}, ref),
      el('td', {}, el('code', {}, s.keyID || '')), el('td', {}, String(st.useCount || 0)),
      el('td', {}, s.revoked ? el('span', { class: 'tag revoked' }, 'revoked')
        : el('button', { type: 'button', class: 'danger', on: { click: async () => {
          if (await act(`Revoke token ${t.metadata.name} of ${s.serviceAccountName}`, 'PATCH', `${IDENTITY_API}/namespaces/${ns}/issuedtokens/${t.metadata.name}`, { spec: { revoked: true } }, 'application/merge-patch+json')) reload();
        } } }, 'Revoke')));
  });
  return el('div', {}, el('h3', {}, 'Issued tokens'), table(['ServiceAccount', 'Issued', 'Last used', 'Expires', 'Audiences', 'Bound to', 'Key', 'Uses', ''], rows, { id: 'token-table' }),
    tokens.length > SHOWN ? el('p', { class: 'muted' }, `Showing ${SHOWN} of ${tokens.length}; filter to narrow.`) : null);
}

async function pickServiceAccount(view, viewName) {
  const nsInput = el('input', { id: 'pick-ns', value: (state.sa && state.sa.namespace) || state.namespace });
  const saInput = el('input', { id: 'pick-sa', value: (state.sa && state.sa.name) || '' });
  const inInput = viewName === 'permissions' ? el('input', { id: 'pick-in', value: (state.sa && state.sa.in) || '', placeholder: 'its own' }) : null;
  const form = el('form', { class: 'row', id: 'pick-form' },
    el('div', {}, el('label', { for: 'pick-ns' }, 'Namespace'), nsInput),
    el('div', {}, el('label', { for: 'pick-sa' }, 'ServiceAccount'), saInput),
    inInput ? el('div', {}, el('label', { for: 'pick-in' }, 'Permissions in namespace'), inInput) : null,
    el('div', {}, el('button', { type: 'submit', id: 'pick-go' }, 'Show')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    state.sa = { namespace: nsInput.value.trim(), name: saInput.value.trim(), in: inInput ? inInput.value.trim() : (state.sa && state.sa.in) };
    show(viewName);
  });
  view.append(form);
  if (!state.sa || !state.sa.name) { view.append(el('p', { class: 'muted' }, 'Pick a ServiceAccount, or choose one from Identities.')); return false; }
  return true;
}

function randomChars(n) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = crypto.getRandomValues(new Uint8Array(n * 2));
  let out = '';
  for (const b of bytes) { if (b < 252 && out.length < n) out += alphabet[b % 36]; }
  return out.length === n ? out : randomChars(n);
}

// ---- navigation and session ----
async function show(name) {
  for (const c of state.aborts) c.abort();
  state.aborts = [];
  state.view = name;
  $('#live').textContent = '';
  clear($('#action-status'));
  for (const b of document.querySelectorAll('nav button')) b.setAttribute('aria-current', b.dataset.view === name ? 'page' : 'false');
  const view = clear($('#view'));
  view.dataset.view = name;
  try { await views[name](view); } catch (e) { view.append(statusBox(e)); }
}

function showLogin() {
  state.user = null; state.csrf = null;
  for (const c of state.aborts) c.abort();
  $('#app').hidden = true; $('#whoami').hidden = true; $('#login').hidden = false;
  $('#login-token').focus();
}
function showApp(session) {
  state.user = session.user; state.csrf = session.csrfToken;
  $('#who').textContent = session.user;
  $('#login').hidden = true; $('#app').hidden = false; $('#whoami').hidden = false;
  show(state.view);
}

async function login(body) {
  const slot = clear($('#login-error'));
  const response = await fetch('/console/login', { method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json', Accept: 'application/json' }, body: JSON.stringify(body) });
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  $('#login-token').value = '';
  if (!response.ok) { slot.append(statusBox(new ApiError(response.status, data), 'Login refused')); return; }
  showApp(data);
}

document.addEventListener('DOMContentLoaded', async () => {
  $('#login-form').addEventListener('submit', (e) => { e.preventDefault(); login({ token: $('#login-token').value }); });
  $('#login-cert-button').addEventListener('click', () => login({ certificate: true }));
  $('#logout').addEventListener('click', async () => {
    await fetch('/console/logout', { method: 'POST', credentials: 'same-origin', headers: { 'X-CSRF-Token': state.csrf || '' } });
    showLogin();
  });
  for (const b of document.querySelectorAll('nav button')) b.addEventListener('click', () => { show(b.dataset.view); $('#view').focus(); });
  const response = await fetch('/console/session', { credentials: 'same-origin' });
  if (response.ok) showApp(await response.json()); else showLogin();
});
