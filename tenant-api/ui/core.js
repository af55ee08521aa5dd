// Granary dashboard, shared parts: building DOM from data as text (never
// HTML), formatting, the REST client and the session's polling loops.

// session is the signed-in state. token is kept in memory and in this tab's
// session storage only (app.js). gen changes at every login and logout, so
// late answers of a previous session are dropped. onUnauthorized ends the
// session when the API stops accepting the token.
export const session = { token: null, gen: 0, onUnauthorized: () => {} };

export const SIZES = ['32M', '64M', '128M', '256M', '512M', '1G'];

export const $ = (id) => document.getElementById(id);

// el builds an element. Strings among children become text nodes, so
// data is never parsed as HTML.
export function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = String(v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

export function clear(node) { node.replaceChildren(); }

// ---- formatting ----

export function fmtBytes(n) {
  n = Number(n) || 0;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 || n >= 100 ? Math.round(n) : n.toFixed(1)) + ' ' + units[i];
}

export function sizeBytes(s) {
  const m = /^(\d+)([MG])$/i.exec(String(s || ''));
  if (!m) return 0;
  return Number(m[1]) * (m[2].toUpperCase() === 'G' ? 1 << 30 : 1 << 20);
}

export function fmtDur(sec) {
  sec = Math.max(0, sec);
  if (sec < 10) return sec.toFixed(1) + 's';
  if (sec < 60) return Math.round(sec) + 's';
  if (sec < 3600) return Math.floor(sec / 60) + 'm ' + Math.floor(sec % 60) + 's';
  if (sec < 86400) return Math.floor(sec / 3600) + 'h ' + Math.floor((sec % 3600) / 60) + 'm';
  return Math.floor(sec / 86400) + 'd ' + Math.floor((sec % 86400) / 3600) + 'h';
}

// parseTime is a timestamp in ms, or NaN for none (Go's zero time too).
export function parseTime(ts) {
  const t = Date.parse(ts);
  return isNaN(t) || t < Date.UTC(2000, 0, 1) ? NaN : t;
}

export function ago(ts) {
  const t = parseTime(ts);
  return isNaN(t) ? '—' : fmtDur((Date.now() - t) / 1000) + ' ago';
}

// fmtTime is a timestamp as local date and time, to the second.
export function fmtTime(ts) {
  const t = parseTime(ts);
  if (isNaN(t)) return String(ts || '—');
  const d = new Date(t);
  const p2 = (n) => String(n).padStart(2, '0');
  return d.getFullYear() + '-' + p2(d.getMonth() + 1) + '-' + p2(d.getDate()) + ' ' +
    p2(d.getHours()) + ':' + p2(d.getMinutes()) + ':' + p2(d.getSeconds());
}

export function pct(frac) { return Math.round(Math.min(1, Math.max(0, frac)) * 100); }

// bar is a progress bar; its width is set through the CSSOM, which the
// page's CSP allows (no inline style attribute).
export function bar(frac, cls) {
  const fill = el('span');
  fill.style.width = pct(frac) + '%';
  return el('div', { class: 'bar ' + (cls || ''), role: 'progressbar', 'aria-valuenow': pct(frac), 'aria-valuemin': 0, 'aria-valuemax': 100 }, fill);
}

export function setBar(node, frac, cls) {
  node.className = 'bar ' + (cls || '');
  node.setAttribute('aria-valuenow', pct(frac));
  node.firstChild.style.width = pct(frac) + '%';
}

export function fillClass(frac) { return frac >= 0.9 ? 'bad' : frac >= 0.8 ? 'warn' : 'ok'; }

export function badge(text, cls) { return el('span', { class: 'badge ' + (cls || '') }, text); }

export function stateClass(s) {
  switch (s) {
    case 'active': case 'done': case 'live': return 'ok';
    case 'running': case 'creating': case 'resizing': return 'info';
    case 'failed': case 'dropping': case 'failing': return 'bad';
    default: return '';
  }
}

export function td(...children) { return el('td', null, ...children); }

export function emptyRow(tbody, cols, text) {
  tbody.append(el('tr', null, el('td', { class: 'empty', colspan: cols }, text)));
}

export function shortID(id) { return String(id || '').slice(0, 8); }

export function jobProgressCell(j) {
  return td(bar(j.progress, j.state === 'failed' ? 'bad' : j.state === 'done' ? 'ok' : ''),
    el('div', { class: 'bar-text' }, pct(j.progress) + '%'));
}

export function copiedText(j) {
  return j.bytes_total ? fmtBytes(j.bytes_copied) + ' / ' + fmtBytes(j.bytes_total) : j.bytes_copied ? fmtBytes(j.bytes_copied) : '—';
}

// ---- the API ----

export class APIError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}


// api calls the REST API with the session's token. It answers the parsed
// JSON, or throws an APIError carrying the API's own error text.
export async function api(method, path, body) {
  const opts = { method, headers: { Authorization: 'Bearer ' + session.token }, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, opts);
  } catch (e) {
    throw new APIError(0, 'cannot reach the API: ' + e.message);
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!resp.ok) {
    const msg = data && typeof data.error === 'string' ? data.error : 'HTTP ' + resp.status;
    throw new APIError(resp.status, msg);
  }
  return data;
}

// ---- session ----

const banners = new Map();

export function setBanner(key, msg) {
  if (msg) banners.set(key, msg); else banners.delete(key);
  const b = $('banner');
  b.textContent = [...banners.values()].join(' · ');
  b.hidden = banners.size === 0;
}

// loop runs fn now and then every ms after each run ends, until the
// session changes. An error shows in the banner; a 401 ends the session.
export function loop(key, ms, fn) {
  const g = session.gen;
  const tick = async () => {
    if (g !== session.gen) return;
    try {
      await fn(g);
      if (g === session.gen) setBanner(key, null);
    } catch (e) {
      if (g !== session.gen) return;
      if (e.status === 401) { session.onUnauthorized('The API no longer accepts this token: ' + e.message); return; }
      setBanner(key, e.message);
    }
    if (g === session.gen) setTimeout(tick, ms);
  };
  tick();
}

export function stamp() {
  const r = $('refreshed');
  r.textContent = 'updated ' + new Date().toLocaleTimeString();
  r.hidden = false;
}


export function clearBanners() {
  banners.clear();
  setBanner('', null);
}
