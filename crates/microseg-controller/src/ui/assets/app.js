// microseg web UI: the token, API calls, the page router and DOM helpers (docs/UI.md).
// Plain JavaScript, no build step; every URL is relative so that it works behind the
// controller's TLS and under any host name.
'use strict';

const MS = (window.MS = { pages: {} });
const TOKEN_KEY = 'microseg.token';
const SVG_NS = 'http://www.w3.org/2000/svg';

// An HTML element: attrs holds attributes, `text`, `class`, and `on<event>` handlers.
MS.el = function (tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
};
MS.svg = function (tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
};
function build(node, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

MS.token = () => sessionStorage.getItem(TOKEN_KEY);

class ApiError extends Error {
  constructor(status, message, details) {
    super(message);
    this.status = status;
    this.details = details || [];
  }
  describe() {
    const head = this.status ? `${this.status}: ${this.message}` : this.message;
    return [head, ...this.details].join('\n');
  }
}
MS.ApiError = ApiError;

// GET (or `method`) ../v1/PATH?params with the token. A 401 or 403 (a wrong token, or
// one that opens the agent link only) forgets the token and shows the form again with
// the reason.
MS.api = async function (path, params, method) {
  const token = MS.token();
  if (!token) {
    showLogin('');
    throw new ApiError(401, 'no token given');
  }
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && String(v) !== '') q.set(k, v);
  }
  const url = '../v1/' + path + (q.toString() ? '?' + q : '');
  let res;
  try {
    res = await fetch(url, {
      method: method || 'GET',
      headers: { Authorization: 'Bearer ' + token, Accept: 'application/json' },
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (e) {
    throw new ApiError(0, 'the controller did not answer (' + e.message + ')');
  }
  let body = null;
  try {
    body = await res.json();
  } catch (_) {
    body = null;
  }
  if (!res.ok) {
    const err = new ApiError(res.status, (body && body.error) || res.statusText, body && body.details);
    if (res.status === 401 || res.status === 403) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(err.describe());
    }
    throw err;
  }
  return body;
};

// The page and its parameters from `#/PAGE?k=v&...`.
function parseHash() {
  let h = location.hash.replace(/^#/, '');
  if (h.startsWith('token=')) h = '/?' + h;
  const [path, query] = h.split('?', 2);
  const page = path.replace(/^\//, '') || 'map';
  return { page, params: new URLSearchParams(query || '') };
}
MS.params = () => parseHash().params;

// Moves to PAGE with these parameters (undefined ones left out); the router renders it.
MS.go = function (page, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null) q.set(k, v);
  }
  const hash = '#/' + page + (q.toString() ? '?' + q : '');
  if (location.hash === hash) route();
  else location.hash = hash;
};
MS.link = function (page, params) {
  const q = new URLSearchParams(params);
  return '#/' + page + (q.toString() ? '?' + q : '');
};

// `#token=...` (alone or among a page's parameters) goes to this tab's storage and
// out of the address bar and history.
function takeTokenFromHash() {
  const { page, params } = parseHash();
  if (!params.has('token')) return;
  const token = params.get('token').trim();
  params.delete('token');
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  const rest = params.toString();
  history.replaceState(null, '', location.pathname + location.search + '#/' + page + (rest ? '?' + rest : ''));
}

function showLogin(reason) {
  stopPage();
  generation++;
  const main = document.getElementById('main');
  main.replaceChildren();
  main.hidden = true;
  document.getElementById('login').hidden = false;
  document.getElementById('logout').hidden = true;
  const err = document.getElementById('login-error');
  err.textContent = reason || '';
  err.hidden = !reason;
  document.body.dataset.state = 'login';
  document.getElementById('token-input').focus();
}

let cleanup = null;
function stopPage() {
  if (cleanup) {
    try {
      cleanup();
    } catch (_) {
      /* a page's teardown must not stop the next one */
    }
  }
  cleanup = null;
}

let generation = 0;
async function route() {
  if (!MS.token()) {
    showLogin('');
    return;
  }
  document.getElementById('login').hidden = true;
  document.getElementById('logout').hidden = false;
  document.getElementById('main').hidden = false;
  const { page, params } = parseHash();
  const p = MS.pages[page] || MS.pages.map;
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.page === page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  stopPage();
  const main = document.getElementById('main');
  main.replaceChildren(MS.el('h1', { text: p.title }));
  document.title = 'microseg: ' + p.title;
  document.body.dataset.state = 'loading';
  const mine = ++generation;
  try {
    const stop = await p.render(main, params, () => mine === generation);
    if (mine === generation) cleanup = stop || null;
    else if (stop) stop();
  } catch (e) {
    if (mine !== generation) return;
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return;
    main.append(MS.errorBox(e));
  }
  if (mine === generation) document.body.dataset.state = 'ready';
}

// A visible error (role=alert) with the API's message.
MS.errorBox = function (e, id) {
  const text = e instanceof ApiError ? e.describe() : String(e && e.message ? e.message : e);
  return MS.el('p', { class: 'error', role: 'alert', id }, text);
};

MS.fmtTime = function (t) {
  if (!t) return '';
  return String(t).replace('T', ' ').replace(/\.\d+Z$/, 'Z');
};
MS.fmtBytes = function (n) {
  if (n < 1024) return n + ' B';
  const u = ['KiB', 'MiB', 'GiB', 'TiB'];
  let i = -1;
  do {
    n /= 1024;
    i++;
  } while (n >= 1024 && i < u.length - 1);
  return n.toFixed(1) + ' ' + u[i];
};
// A flow endpoint as text: workload name, else address.
MS.endpoint = (workload, ip, port) => (workload || ip) + (port !== undefined ? ':' + port : '');

MS.WINDOWS = ['5m', '15m', '1h', '6h', '24h', '7d'];
// A select of time windows; a value not in the list (from a link) is kept as an option.
MS.windowSelect = function (id, value) {
  const opts = MS.WINDOWS.includes(value) ? MS.WINDOWS : [value, ...MS.WINDOWS];
  return MS.el('select', { id, name: 'since' }, opts.map((w) => MS.el('option', { value: w, selected: w === value }, 'last ' + w)));
};

function boot() {
  takeTokenFromHash();
  document.getElementById('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = document.getElementById('token-input');
    const token = input.value.trim();
    input.value = '';
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    route();
  });
  document.getElementById('logout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin('');
  });
  window.addEventListener('hashchange', () => {
    takeTokenFromHash();
    route();
  });
  route();
}
document.addEventListener('DOMContentLoaded', boot);
