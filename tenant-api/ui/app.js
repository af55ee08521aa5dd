// Granary dashboard: a pure client of the REST API under /v1, with the
// caller's own token. It can do nothing the API refuses that token.
// Every datum reaches the page as text (textContent / text nodes), never as
// HTML. The token lives in this tab's session storage only: never in
// persistent storage, a cookie or a URL.
'use strict';

(() => {
  const TOKEN_KEY = 'granary.token';
  const SIZES = ['32M', '64M', '128M', '256M', '512M', '1G'];
  const ADMIN_EVERY = 3000; // pools, proxies, keepers, spares, tenants
  const JOBS_EVERY = 1000; // jobs: live progress
  const DBS_EVERY = 2000;
  const AUDIT_EVERY = 5000;

  const $ = (id) => document.getElementById(id);

  // el builds an element. Strings among children become text nodes, so
  // data is never parsed as HTML.
  function el(tag, props, ...children) {
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

  function clear(node) { node.replaceChildren(); }

  // ---- formatting ----

  function fmtBytes(n) {
    n = Number(n) || 0;
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 || n >= 100 ? Math.round(n) : n.toFixed(1)) + ' ' + units[i];
  }

  function sizeBytes(s) {
    const m = /^(\d+)([MG])$/i.exec(String(s || ''));
    if (!m) return 0;
    return Number(m[1]) * (m[2].toUpperCase() === 'G' ? 1 << 30 : 1 << 20);
  }

  function fmtDur(sec) {
    sec = Math.max(0, sec);
    if (sec < 10) return sec.toFixed(1) + 's';
    if (sec < 60) return Math.round(sec) + 's';
    if (sec < 3600) return Math.floor(sec / 60) + 'm ' + Math.floor(sec % 60) + 's';
    if (sec < 86400) return Math.floor(sec / 3600) + 'h ' + Math.floor((sec % 3600) / 60) + 'm';
    return Math.floor(sec / 86400) + 'd ' + Math.floor((sec % 86400) / 3600) + 'h';
  }

  // parseTime is a timestamp in ms, or NaN for none (Go's zero time too).
  function parseTime(ts) {
    const t = Date.parse(ts);
    return isNaN(t) || t < Date.UTC(2000, 0, 1) ? NaN : t;
  }

  function ago(ts) {
    const t = parseTime(ts);
    return isNaN(t) ? '—' : fmtDur((Date.now() - t) / 1000) + ' ago';
  }

  // fmtTime is a timestamp as local date and time, to the second.
  function fmtTime(ts) {
    const t = parseTime(ts);
    if (isNaN(t)) return String(ts || '—');
    const d = new Date(t);
    const p2 = (n) => String(n).padStart(2, '0');
    return d.getFullYear() + '-' + p2(d.getMonth() + 1) + '-' + p2(d.getDate()) + ' ' +
      p2(d.getHours()) + ':' + p2(d.getMinutes()) + ':' + p2(d.getSeconds());
  }

  function pct(frac) { return Math.round(Math.min(1, Math.max(0, frac)) * 100); }

  // bar is a progress bar; its width is set through the CSSOM, which the
  // page's CSP allows (no inline style attribute).
  function bar(frac, cls) {
    const fill = el('span');
    fill.style.width = pct(frac) + '%';
    return el('div', { class: 'bar ' + (cls || ''), role: 'progressbar', 'aria-valuenow': pct(frac), 'aria-valuemin': 0, 'aria-valuemax': 100 }, fill);
  }

  function setBar(node, frac, cls) {
    node.className = 'bar ' + (cls || '');
    node.setAttribute('aria-valuenow', pct(frac));
    node.firstChild.style.width = pct(frac) + '%';
  }

  function fillClass(frac) { return frac >= 0.9 ? 'bad' : frac >= 0.8 ? 'warn' : 'ok'; }

  function badge(text, cls) { return el('span', { class: 'badge ' + (cls || '') }, text); }

  function stateClass(s) {
    switch (s) {
      case 'active': case 'done': case 'live': return 'ok';
      case 'running': case 'creating': case 'resizing': return 'info';
      case 'failed': case 'dropping': case 'failing': return 'bad';
      default: return '';
    }
  }

  function td(...children) { return el('td', null, ...children); }

  function emptyRow(tbody, cols, text) {
    tbody.append(el('tr', null, el('td', { class: 'empty', colspan: cols }, text)));
  }

  function shortID(id) { return String(id || '').slice(0, 8); }

  // ---- the API ----

  class APIError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  let token = null;

  // api calls the REST API with the session's token. It answers the parsed
  // JSON, or throws an APIError carrying the API's own error text.
  async function api(method, path, body) {
    const opts = { method, headers: { Authorization: 'Bearer ' + token }, cache: 'no-store', credentials: 'omit' };
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

  // gen changes at every login and logout, so late answers of a previous
  // session are dropped.
  let gen = 0;
  const banners = new Map();

  function setBanner(key, msg) {
    if (msg) banners.set(key, msg); else banners.delete(key);
    const b = $('banner');
    b.textContent = [...banners.values()].join(' · ');
    b.hidden = banners.size === 0;
  }

  // loop runs fn now and then every ms after each run ends, until the
  // session changes. An error shows in the banner; a 401 ends the session.
  function loop(key, ms, fn) {
    const g = gen;
    const tick = async () => {
      if (g !== gen) return;
      try {
        await fn(g);
        if (g === gen) setBanner(key, null);
      } catch (e) {
        if (g !== gen) return;
        if (e.status === 401) { logout('The API no longer accepts this token: ' + e.message); return; }
        setBanner(key, e.message);
      }
      if (g === gen) setTimeout(tick, ms);
    };
    tick();
  }

  function stamp() {
    const r = $('refreshed');
    r.textContent = 'updated ' + new Date().toLocaleTimeString();
    r.hidden = false;
  }

  // identify asks the API what the token is: the admin's if the admin
  // pools answer 200, else a tenant's if its dbs do. It throws the API's
  // error text for a token neither accepts.
  async function identify() {
    try {
      await api('GET', '/v1/admin/pools');
      return 'admin';
    } catch (e) {
      if (e.status !== 401 && e.status !== 403) throw e;
    }
    await api('GET', '/v1/dbs');
    return 'tenant';
  }

  async function login(tok) {
    token = tok;
    gen++;
    const g = gen;
    let role;
    try {
      role = await identify();
    } catch (e) {
      if (g !== gen) return;
      token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(e.message);
      return;
    }
    if (g !== gen) return;
    sessionStorage.setItem(TOKEN_KEY, tok);
    $('login').hidden = true;
    $('logout').hidden = false;
    $('who').hidden = false;
    $('who').textContent = role === 'admin' ? 'admin' : 'tenant';
    if (role === 'admin') startAdmin(); else startTenant();
  }

  function logout(msg) {
    gen++;
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    banners.clear();
    setBanner('', null);
    for (const id of ['admin', 'tenant', 'logout', 'who', 'refreshed']) $(id).hidden = true;
    resetAdmin();
    resetTenant();
    showLogin(msg);
  }

  function showLogin(msg) {
    $('login').hidden = false;
    $('admin').hidden = true;
    $('tenant').hidden = true;
    const err = $('login-error');
    err.textContent = msg || '';
    err.hidden = !msg;
    $('token').value = '';
    $('token').focus();
  }

  // ---- admin view ----

  const admin = { pools: [], proxies: [], keepers: [], spares: [], jobs: [], auditCursor: '', auditPaged: false };

  // resetAdmin empties every admin table, so nothing of one session is
  // left in the page for the next.
  function resetAdmin() {
    Object.assign(admin, { pools: [], proxies: [], keepers: [], spares: [], jobs: [], auditCursor: '', auditPaged: false });
    for (const t of $('admin').querySelectorAll('tbody')) clear(t);
    clear($('admin-stats'));
    clear($('spares'));
    $('audit-tenant').value = '';
    $('audit-action').value = '';
  }

  function startAdmin() {
    resetAdmin();
    $('admin').hidden = false;
    $('tenants-card').hidden = true;
    $('audit-card').hidden = true;
    loop('cluster', ADMIN_EVERY, refreshCluster);
    loop('jobs', JOBS_EVERY, refreshAdminJobs);
    loop('tenants', ADMIN_EVERY, refreshTenants);
    loop('audit', AUDIT_EVERY, () => (admin.auditPaged ? null : loadAudit(true)));
  }

  async function refreshCluster(g) {
    const [pools, proxies, keepers, spares] = await Promise.all([
      api('GET', '/v1/admin/pools'), api('GET', '/v1/admin/proxies'),
      api('GET', '/v1/admin/keepers'), api('GET', '/v1/admin/spares'),
    ]);
    if (g !== gen) return;
    Object.assign(admin, { pools: pools || [], proxies: proxies || [], keepers: keepers || [], spares: spares || [] });
    renderPools();
    renderPairs();
    renderProxies();
    renderKeepers();
    renderSpares();
    renderAdminStats();
    stamp();
  }

  function renderAdminStats() {
    let total = 0, free = 0, cap = 0, alloc = 0;
    for (const p of admin.pools) {
      total += p.total; free += p.free;
      cap += p.total * sizeBytes(p.size);
      alloc += (p.total - p.free) * sizeBytes(p.size);
    }
    const live = (ms) => ms.filter((m) => m.live).length;
    const running = admin.jobs.filter((j) => j.state === 'running').length;
    const stat = (label, value, hint) => el('div', { class: 'stat' },
      el('div', { class: 'label' }, label), el('div', { class: 'value' }, value), el('div', { class: 'hint' }, hint || ''));
    $('admin-stats').replaceChildren(
      stat('Slots used', (total - free) + ' / ' + total, free + ' free'),
      stat('Quota allocated', fmtBytes(alloc), 'of ' + fmtBytes(cap)),
      stat('Pairs', String(admin.pools.reduce((n, p) => n + p.pairs.length, 0)), admin.pools.filter((p) => p.total > 0).length + ' pools with capacity'),
      stat('Proxies live', live(admin.proxies) + ' / ' + admin.proxies.length),
      stat('Keepers live', live(admin.keepers) + ' / ' + admin.keepers.length),
      stat('Jobs running', String(running), admin.spares.length + ' spare servers'),
    );
  }

  function renderPools() {
    const tb = $('pools').tBodies[0];
    clear(tb);
    for (const p of admin.pools) {
      const used = p.total - p.free;
      const frac = p.total ? used / p.total : 0;
      const sb = sizeBytes(p.size);
      tb.append(el('tr', { dataset: { size: p.size } },
        td(el('strong', null, p.size)),
        td(String(p.pairs.length)),
        td(String(used)),
        td(String(p.free)),
        td(p.total ? bar(frac, fillClass(frac)) : el('span', { class: 'muted' }, 'no capacity'),
          p.total ? el('div', { class: 'bar-text' }, pct(frac) + '% of ' + p.total + ' slots') : null),
        td(fmtBytes(used * sb) + ' / ' + fmtBytes(p.total * sb)),
      ));
    }
    if (!admin.pools.length) emptyRow(tb, 6, 'no pools');
  }

  // lastReply is the freshest time any live proxy got an answer from addr.
  function lastReply(addr) {
    let best = NaN;
    for (const px of admin.proxies) {
      if (!px.live || !px.backend_ok) continue;
      const t = parseTime(px.backend_ok[addr]);
      if (!isNaN(t) && (isNaN(best) || t > best)) best = t;
    }
    return best;
  }

  function replyCell(addr) {
    const t = lastReply(addr);
    if (isNaN(t)) return td(el('span', { class: 'muted', title: 'no live proxy has talked to it lately' }, 'no proxy traffic'));
    const age = (Date.now() - t) / 1000;
    return td(badge(fmtDur(age) + ' ago', 'reply ' + (age < 5 ? 'ok' : age < 30 ? 'warn' : 'bad')));
  }

  function renderPairs() {
    const tb = $('pairs').tBodies[0];
    clear(tb);
    let n = 0;
    for (const p of admin.pools) {
      for (const pr of p.pairs) {
        n++;
        tb.append(el('tr', { dataset: { pair: pr.id } },
          td(el('span', { class: 'mono' }, pr.id)),
          td(pr.size),
          td(el('span', { class: 'mono' }, pr.master)),
          td(el('span', { class: 'mono' }, pr.replica)),
          td((pr.dbs - pr.free) + ' / ' + pr.dbs),
          td(pr.keeper ? el('span', { class: 'mono' }, pr.keeper) : el('span', { class: 'muted' }, 'none')),
          td(badge(pr.state || '—', stateClass(pr.state))),
          replyCell(pr.master),
          replyCell(pr.replica),
        ));
      }
    }
    if (!n) emptyRow(tb, 9, 'no pairs: add one with POST /v1/admin/pools/{size}/pairs');
  }

  function leaseCell(m) {
    const t = parseTime(m.lease_expires);
    if (isNaN(t)) return td('—');
    const left = (t - Date.now()) / 1000;
    if (m.live && left >= 0) return td(badge('live, ' + fmtDur(left) + ' left', 'ok'));
    return td(badge('lapsed ' + fmtDur(-left) + ' ago', 'bad'));
  }

  function upCell(m) {
    const t = parseTime(m.started);
    return td(isNaN(t) ? '—' : fmtDur((Date.now() - t) / 1000));
  }

  function renderProxies() {
    const tb = $('proxies').tBodies[0];
    clear(tb);
    for (const m of admin.proxies) {
      tb.append(el('tr', { dataset: { proxy: m.id } },
        td(el('span', { class: 'mono' }, m.id)),
        td(el('span', { class: 'mono' }, m.addr || '—')),
        leaseCell(m), upCell(m),
        td(String(m.conns)), td(String(m.dbs)), td(String(m.applied_version)),
      ));
    }
    if (!admin.proxies.length) emptyRow(tb, 7, 'no proxies registered');
  }

  function renderKeepers() {
    const tb = $('keepers').tBodies[0];
    clear(tb);
    for (const m of admin.keepers) {
      let watched = 0;
      for (const p of admin.pools) watched += p.pairs.filter((pr) => pr.keeper === m.id).length;
      tb.append(el('tr', { dataset: { keeper: m.id } },
        td(el('span', { class: 'mono' }, m.id)), leaseCell(m), upCell(m), td(String(watched)),
      ));
    }
    if (!admin.keepers.length) emptyRow(tb, 4, 'no keepers registered');
  }

  function renderSpares() {
    const ul = $('spares');
    clear(ul);
    for (const s of admin.spares) ul.append(el('li', { class: 'mono' }, s.addr));
    if (!admin.spares.length) ul.append(el('li', { class: 'muted' }, 'no spare servers'));
  }

  function jobProgressCell(j) {
    return td(bar(j.progress, j.state === 'failed' ? 'bad' : j.state === 'done' ? 'ok' : ''),
      el('div', { class: 'bar-text' }, pct(j.progress) + '%'));
  }

  function copiedText(j) {
    return j.bytes_total ? fmtBytes(j.bytes_copied) + ' / ' + fmtBytes(j.bytes_total) : j.bytes_copied ? fmtBytes(j.bytes_copied) : '—';
  }

  async function refreshAdminJobs(g) {
    const jobs = await api('GET', '/v1/admin/jobs');
    if (g !== gen) return;
    admin.jobs = jobs || [];
    const sorted = [...admin.jobs].sort((a, b) =>
      (a.state === 'running' ? 0 : 1) - (b.state === 'running' ? 0 : 1) ||
      (parseTime(b.updated) || 0) - (parseTime(a.updated) || 0));
    const tb = $('admin-jobs').tBodies[0];
    clear(tb);
    for (const j of sorted.slice(0, 40)) {
      tb.append(el('tr', { dataset: { job: j.id, state: j.state } },
        td(el('span', { class: 'mono', title: j.id }, shortID(j.id))),
        td(j.kind),
        td(j.tenant ? j.tenant + ' / ' + j.index : '—'),
        td(badge(j.state, stateClass(j.state))),
        td(el('span', { class: 'mono' }, j.step || '—')),
        jobProgressCell(j),
        td(copiedText(j)),
        td(ago(j.updated)),
        td(j.error ? el('span', { class: 'error-text' }, j.error) : ''),
      ));
    }
    if (!sorted.length) emptyRow(tb, 9, 'no jobs yet');
    renderAdminStats();
  }

  // hidden answers whether a status means the route is not there (yet):
  // optional panels hide instead of showing an error.
  function absent(e) { return e.status === 404 || e.status === 405 || e.status === 501; }

  const secretKey = /token|password|secret|hash/i;

  async function refreshTenants(g) {
    let data;
    try {
      data = await api('GET', '/v1/admin/tenants');
    } catch (e) {
      if (g === gen && absent(e)) { $('tenants-card').hidden = true; return; }
      throw e;
    }
    if (g !== gen) return;
    const list = Array.isArray(data) ? data : data && Array.isArray(data.tenants) ? data.tenants : [];
    const tb = $('tenants').tBodies[0];
    clear(tb);
    for (const t of list) {
      const lim = t && typeof t.limits === 'object' && t.limits ? t.limits : t || {};
      const name = t.name || t.tenant || t.id || '—';
      const other = [];
      for (const src of [t, lim]) {
        for (const [k, v] of Object.entries(src || {})) {
          if (['name', 'tenant', 'id', 'limits', 'max_connections', 'ops_per_sec'].includes(k) || secretKey.test(k)) continue;
          if (v === null || typeof v === 'object') continue;
          other.push(k + ' ' + v);
        }
      }
      const show = (v) => (v === undefined || v === null ? '—' : v === 0 ? 'unlimited' : String(v));
      tb.append(el('tr', { dataset: { tenant: name } },
        td(el('strong', null, name)), td(show(lim.max_connections)), td(show(lim.ops_per_sec)),
        td(el('span', { class: 'muted' }, other.join(', ')))));
    }
    if (!list.length) emptyRow(tb, 4, 'no tenants');
    $('tenants-card').hidden = false;
  }

  // loadAudit reads a page of the audit log: the first one (reset) or the
  // next one after the cursor the last answer gave.
  async function loadAudit(reset) {
    const g = gen;
    const q = new URLSearchParams();
    const tenant = $('audit-tenant').value.trim();
    const action = $('audit-action').value.trim();
    if (tenant) q.set('tenant', tenant);
    if (action) q.set('action', action);
    q.set('limit', '50');
    if (!reset && admin.auditCursor) q.set('cursor', admin.auditCursor);
    let data;
    try {
      data = await api('GET', '/v1/admin/audit?' + q.toString());
    } catch (e) {
      if (g !== gen) return;
      if (absent(e)) { $('audit-card').hidden = true; return; }
      if (e.status === 400) { // a bad filter: the API's text, beside the form
        $('audit-error').textContent = e.message;
        $('audit-error').hidden = false;
        $('audit-card').hidden = false;
        return;
      }
      throw e;
    }
    if (g !== gen) return;
    $('audit-error').hidden = true;
    const tb = $('audit').tBodies[0];
    if (reset) clear(tb);
    const entries = (data && Array.isArray(data.entries)) ? data.entries : [];
    for (const a of entries) {
      const ok = /^(ok|success|allowed|2\d\d)$/i.test(String(a.result));
      tb.append(el('tr', { dataset: { audit: a.id } },
        td(el('span', { title: ago(a.time) }, fmtTime(a.time))),
        td(a.actor), td(el('span', { class: 'mono' }, a.action)), td(el('span', { class: 'mono' }, a.target)),
        td(a.tenant || '—'), td(badge(String(a.result ?? '—'), ok ? 'ok' : 'bad')),
        td(el('span', { class: 'mono small', title: a.request_id }, shortID(a.request_id))),
      ));
    }
    if (reset && !entries.length) emptyRow(tb, 7, 'no entries');
    admin.auditCursor = (data && data.next) || '';
    $('audit-more').hidden = !admin.auditCursor;
    $('audit-card').hidden = false;
  }

  // ---- tenant view ----

  const tenant = { cards: new Map(), jobs: new Map() };

  function resetTenant() {
    tenant.cards.clear();
    tenant.jobs.clear();
    clear($('dbs'));
    clear($('tenant-jobs').tBodies[0]);
    $('tenant-jobs').hidden = true;
    $('no-jobs').hidden = false;
    $('create-error').hidden = true;
  }

  function startTenant() {
    resetTenant();
    clear($('tenant-stats'));
    $('tenant').hidden = false;
    loop('dbs', DBS_EVERY, refreshDBs);
    loop('jobs', JOBS_EVERY, (g) => pollJobs(g));
  }

  async function refreshDBs(g) {
    const dbs = await api('GET', '/v1/dbs');
    if (g !== gen) return;
    renderDBs(dbs || []);
    stamp();
  }

  function renderDBs(dbs) {
    const seen = new Set();
    for (const db of dbs) {
      seen.add(db.index);
      let c = tenant.cards.get(db.index);
      if (!c) {
        c = dbCard(db);
        tenant.cards.set(db.index, c);
        insertCard(c);
      }
      updateCard(c, db);
      if (db.job && db.state !== 'active') follow(db.job);
    }
    for (const [i, c] of tenant.cards) {
      if (!seen.has(i)) { c.root.remove(); tenant.cards.delete(i); }
    }
    $('no-dbs').hidden = dbs.length > 0;
    let used = 0, quota = 0;
    for (const db of dbs) { used += db.used_bytes; quota += db.quota_bytes; }
    const user = dbs.map((d) => { try { return new URL(d.url).username; } catch (e) { return ''; } }).find((u) => u);
    $('who').textContent = user ? 'tenant ' + decodeURIComponent(user) : 'tenant';
    const stat = (label, value, hint) => el('div', { class: 'stat' },
      el('div', { class: 'label' }, label), el('div', { class: 'value' }, value), el('div', { class: 'hint' }, hint || ''));
    const running = [...tenant.jobs.values()].filter((j) => j.state === 'running').length;
    $('tenant-stats').replaceChildren(
      stat('Databases', String(dbs.length)),
      stat('Used', fmtBytes(used), 'of ' + fmtBytes(quota) + ' quota'),
      stat('Active', String(dbs.filter((d) => d.state === 'active').length)),
      stat('Jobs running', String(running)),
    );
  }

  function insertCard(c) {
    const list = $('dbs');
    const after = [...list.children].find((n) => Number(n.dataset.index) > c.index);
    list.insertBefore(c.root, after || null);
  }

  function kvRow(label, value) {
    return [el('div', { class: 'k' }, label), el('div', { class: 'v' }, value)];
  }

  function copyButton(get) {
    const b = el('button', { type: 'button', class: 'btn tiny' }, 'Copy');
    b.addEventListener('click', async () => {
      try { await navigator.clipboard.writeText(get()); b.textContent = 'Copied'; } catch (e) { b.textContent = 'Select and copy'; }
      setTimeout(() => { b.textContent = 'Copy'; }, 1500);
    });
    return b;
  }

  // dbCard builds the card of one db once; updateCard refreshes its
  // fields in place so a choice being made is not reset by a refresh.
  function dbCard(db) {
    const c = { index: db.index, db: null };
    c.size = el('span', { class: 'badge info db-size' });
    c.state = el('span', { class: 'badge db-state' });
    c.mode = el('span', { class: 'badge db-mode' });
    c.used = bar(0, 'ok');
    c.usedText = el('div', { class: 'bar-text db-used' });
    c.warning = el('div', { class: 'db-warning', hidden: true });
    c.endpoint = el('code', { class: 'db-endpoint' });
    c.url = el('code', { class: 'db-url' });
    c.cli = el('code', { class: 'db-cli' });
    c.slot = el('span', { class: 'mono db-slot' });
    c.created = el('span', { class: 'db-created' });
    c.modeSel = el('select', { class: 'mode-select', 'aria-label': 'write mode' },
      el('option', { value: 'confirmed' }, 'confirmed'), el('option', { value: 'async' }, 'async'));
    c.resizeSel = el('select', { class: 'resize-size', 'aria-label': 'new size' });
    c.resizeBtn = el('button', { type: 'button', class: 'btn resize-btn' }, 'Resize');
    c.dropBtn = el('button', { type: 'button', class: 'btn danger drop-btn' }, 'Drop');
    c.confirm = el('span', { class: 'confirm', hidden: true },
      'Drop db ' + db.index + ' and all its data?',
      el('button', { type: 'button', class: 'btn danger solid drop-confirm' }, 'Drop it'),
      el('button', { type: 'button', class: 'btn drop-cancel' }, 'Cancel'));
    c.job = el('div', { class: 'db-job', hidden: true });
    c.error = el('p', { class: 'error-text db-error', role: 'alert', hidden: true });

    c.root = el('div', { class: 'db-card', dataset: { index: String(db.index) } },
      el('div', { class: 'db-title' }, el('span', { class: 'name' }, 'db ' + db.index), c.size, c.state, c.mode,
        el('span', { class: 'spacer' })),
      c.used, c.usedText, c.warning,
      el('div', { class: 'kv' },
        kvRow('Endpoint', c.endpoint),
        kvRow('URL', el('span', { class: 'copy-row' }, c.url, copyButton(() => c.url.textContent))),
        kvRow('redis-cli', el('span', { class: 'copy-row' }, c.cli, copyButton(() => c.cli.textContent))),
        kvRow('Slot', c.slot),
        kvRow('Created', c.created),
        kvRow('Write mode', c.modeSel)),
      el('div', { class: 'db-actions' },
        el('label', null, 'Resize to ', c.resizeSel), c.resizeBtn, el('span', { class: 'spacer' }), c.dropBtn, c.confirm),
      c.job, c.error);

    c.resizeBtn.addEventListener('click', () => act(c, 'PATCH', { size: c.resizeSel.value }));
    c.dropBtn.addEventListener('click', () => { c.dropBtn.hidden = true; c.confirm.hidden = false; });
    c.confirm.querySelector('.drop-cancel').addEventListener('click', () => { c.confirm.hidden = true; c.dropBtn.hidden = false; });
    c.confirm.querySelector('.drop-confirm').addEventListener('click', () => {
      c.confirm.hidden = true; c.dropBtn.hidden = false;
      act(c, 'DELETE');
    });
    c.modeSel.addEventListener('change', async () => {
      const g = gen;
      showCardError(c, null);
      try {
        const db2 = await api('PATCH', '/v1/dbs/' + c.index, { write_mode: c.modeSel.value });
        if (g === gen) updateCard(c, db2);
      } catch (e) {
        if (g !== gen) return;
        showCardError(c, e.message);
        if (c.db) c.modeSel.value = c.db.write_mode;
      }
    });
    return c;
  }

  function showCardError(c, msg) {
    c.error.textContent = msg || '';
    c.error.hidden = !msg;
  }

  function updateCard(c, db) {
    const prev = c.db;
    c.db = db;
    c.root.dataset.size = db.size;
    c.root.dataset.state = db.state;
    c.size.textContent = db.size;
    c.state.textContent = db.state;
    c.state.className = 'badge db-state ' + stateClass(db.state);
    c.mode.textContent = db.write_mode;
    const frac = db.quota_bytes ? db.used_bytes / db.quota_bytes : 0;
    setBar(c.used, frac, db.banned ? 'bad' : fillClass(frac));
    c.usedText.textContent = fmtBytes(db.used_bytes) + ' used of ' + fmtBytes(db.quota_bytes) + ' (' + pct(frac) + '%)';
    c.warning.textContent = db.warning || '';
    c.warning.hidden = !db.warning;
    c.endpoint.textContent = db.endpoint || 'not routed yet';
    c.url.textContent = db.url || '—';
    let cli = '—';
    const hp = /^(.*):(\d+)$/.exec(db.endpoint || '');
    if (hp) {
      let user = '';
      try { user = decodeURIComponent(new URL(db.url).username); } catch (e) { user = ''; }
      cli = 'redis-cli -h ' + hp[1] + ' -p ' + hp[2] + (user ? ' --user ' + user : '') + ' --pass <password> -n ' + db.index;
    }
    c.cli.textContent = cli;
    c.slot.textContent = db.slot && db.slot.pair ? db.slot.pair + ' db ' + db.slot.db : '—';
    c.created.textContent = ago(db.created);
    if (document.activeElement !== c.modeSel) c.modeSel.value = db.write_mode;
    if (!prev || prev.size !== db.size) {
      const cur = SIZES.indexOf(String(db.size).toUpperCase());
      c.resizeSel.replaceChildren(...SIZES.filter((s) => s !== String(db.size).toUpperCase())
        .map((s) => el('option', { value: s }, s)));
      const next = SIZES[cur + 1] || SIZES[cur - 1];
      if (next) c.resizeSel.value = next;
    }
    const busy = db.state !== 'active';
    c.resizeBtn.disabled = busy || c.pending;
    c.dropBtn.disabled = busy || c.pending;
    c.modeSel.disabled = db.state === 'dropping';
    renderCardJob(c);
  }

  // act starts a resize (PATCH with a size) or a drop (DELETE) and follows
  // the job the API answers with.
  async function act(c, method, body) {
    const g = gen;
    showCardError(c, null);
    c.pending = true;
    c.resizeBtn.disabled = c.dropBtn.disabled = true;
    try {
      const ref = await api(method, '/v1/dbs/' + c.index, body);
      if (g !== gen) return;
      if (ref && ref.job) follow(ref.job, { kind: method === 'DELETE' ? 'drop' : 'resize', index: c.index });
      refreshDBs(g).catch(() => {});
    } catch (e) {
      if (g === gen) showCardError(c, e.message);
    } finally {
      c.pending = false;
      if (g === gen && c.db) updateCard(c, c.db);
    }
  }

  // follow adds a job to the ones polled until they end, and reads it at
  // once rather than at the next tick.
  function follow(id, guess) {
    if (tenant.jobs.has(id)) return;
    tenant.jobs.set(id, Object.assign({ id, kind: '', index: '', state: 'running', step: '', progress: 0 }, guess || {}));
    renderTenantJobs();
    const g = gen;
    pollJobs(g, [id]).catch((e) => { if (g === gen) setBanner('jobs', e.message); });
  }

  // pollJobs reads the given jobs, or every running one, and refreshes the
  // dbs when one of them has ended.
  async function pollJobs(g, ids) {
    const live = ids ? ids.map((id) => tenant.jobs.get(id)).filter((j) => j)
      : [...tenant.jobs.values()].filter((j) => j.state === 'running');
    if (!live.length) return;
    let ended = false;
    await Promise.all(live.map(async (j) => {
      try {
        const got = await api('GET', '/v1/jobs/' + encodeURIComponent(j.id));
        if (g !== gen) return;
        tenant.jobs.set(j.id, got);
        if (got.state !== 'running') ended = true;
      } catch (e) {
        if (e.status !== 404) throw e;
        if (g === gen) { tenant.jobs.set(j.id, Object.assign({}, j, { state: 'failed', error: e.message })); ended = true; }
      }
    }));
    if (g !== gen) return;
    renderTenantJobs();
    for (const c of tenant.cards.values()) renderCardJob(c);
    if (ended) await refreshDBs(g);
  }

  function renderTenantJobs() {
    const tb = $('tenant-jobs').tBodies[0];
    clear(tb);
    const jobs = [...tenant.jobs.values()].reverse();
    for (const j of jobs) {
      tb.append(el('tr', { dataset: { job: j.id, state: j.state } },
        td(el('span', { class: 'mono', title: j.id }, shortID(j.id))),
        td(j.kind || '—'),
        td(String(j.index)),
        td(badge(j.state, stateClass(j.state))),
        td(el('span', { class: 'mono' }, j.step || '—')),
        jobProgressCell(j),
        td(copiedText(j)),
        td(j.error ? el('span', { class: 'error-text' }, j.error) : ''),
      ));
    }
    $('tenant-jobs').hidden = jobs.length === 0;
    $('no-jobs').hidden = jobs.length > 0;
  }

  // renderCardJob shows, on a db's card, the newest job followed for it.
  function renderCardJob(c) {
    let j = null;
    for (const x of tenant.jobs.values()) if (x.index === c.index) j = x;
    if (!j) { c.job.hidden = true; return; }
    const text = (j.kind || 'job') + ' ' + j.state + (j.step ? ' · step ' + j.step : '') + ' · ' + pct(j.progress) + '%' +
      (j.bytes_total ? ' · ' + copiedText(j) + ' copied' : '') + (j.error ? ' · ' + j.error : '');
    c.job.replaceChildren(bar(j.progress, j.state === 'failed' ? 'bad' : j.state === 'done' ? 'ok' : ''),
      el('div', { class: 'bar-text' }, text));
    c.job.dataset.state = j.state;
    c.job.hidden = false;
  }

  async function createDB(ev) {
    ev.preventDefault();
    const g = gen;
    const btn = $('create-btn');
    const err = $('create-error');
    err.hidden = true;
    btn.disabled = true;
    try {
      const db = await api('POST', '/v1/dbs', { size: $('create-size').value, write_mode: $('create-mode').value });
      if (g !== gen) return;
      if (db && db.job) follow(db.job, { kind: 'create', index: db.index });
      await refreshDBs(g);
    } catch (e) {
      if (g !== gen) return;
      err.textContent = e.message;
      err.hidden = false;
    } finally {
      btn.disabled = false;
    }
  }

  // ---- wiring ----

  function init() {
    $('create-size').replaceChildren(...SIZES.map((s) => el('option', { value: s }, s)));
    $('create-size').value = '64M';
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const tok = $('token').value.trim();
      if (tok) login(tok);
    });
    $('logout').addEventListener('click', () => logout());
    $('create-form').addEventListener('submit', createDB);
    $('audit-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      admin.auditPaged = false;
      loadAudit(true).catch((e) => setBanner('audit', e.message));
    });
    $('audit-more').addEventListener('click', () => {
      admin.auditPaged = true;
      loadAudit(false).catch((e) => setBanner('audit', e.message));
    });
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) login(saved); else showLogin();
  }

  init();
})();
