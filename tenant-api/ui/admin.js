// Granary dashboard, the admin's view: pools, pairs, proxies, keepers,
// spares, jobs, and the tenants' limits and the audit log where the API has
// them.
import {
  $, el, clear, fmtBytes, sizeBytes, fmtDur, parseTime, ago, fmtTime, pct, bar, fillClass, badge, stateClass,
  td, emptyRow, shortID, jobProgressCell, copiedText, api, session, setBanner, loop, stamp,
} from './core.js';

const ADMIN_EVERY = 3000; // pools, proxies, keepers, spares, tenants
const JOBS_EVERY = 1000; // jobs: live progress
const AUDIT_EVERY = 5000;

// ---- admin view ----

const admin = { pools: [], proxies: [], keepers: [], spares: [], jobs: [], auditCursor: '', auditPaged: false };

// resetAdmin empties every admin table, so nothing of one session is
// left in the page for the next.
export function resetAdmin() {
  Object.assign(admin, { pools: [], proxies: [], keepers: [], spares: [], jobs: [], auditCursor: '', auditPaged: false });
  for (const t of $('admin').querySelectorAll('tbody')) clear(t);
  clear($('admin-stats'));
  clear($('spares'));
  $('audit-tenant').value = '';
  $('audit-action').value = '';
}

export function startAdmin() {
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
  if (g !== session.gen) return;
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

// healthCell shows the keeper's last probes of the pair's two servers.
function healthCell(h) {
  if (!h) return td(el('span', { class: 'muted', title: 'no keeper has reported on this pair yet' }, 'no report'));
  const up = h.master_up && h.replica_up;
  const text = up ? 'both up' : (h.master_up ? 'replica down' : 'master down');
  return td(el('span', { class: 'health', title: 'reported by keeper ' + h.keeper + ' ' + ago(h.at) },
    badge(text, up ? 'ok' : 'bad')));
}

// lagCell shows how far the replica trails its master, in bytes and in
// seconds since its last acknowledgement.
function lagCell(h) {
  if (!h || h.lag_bytes < 0) return td(el('span', { class: 'muted' }, '—'));
  const cls = h.lag_sec > 10 ? 'bad' : h.lag_bytes > (1 << 20) || h.lag_sec > 2 ? 'warn' : 'ok';
  return td(el('span', { class: 'lag' }, badge(fmtBytes(h.lag_bytes) + (h.lag_sec > 0 ? ', ' + h.lag_sec + 's' : ''), cls)));
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
        healthCell(pr.health),
        lagCell(pr.health),
        replyCell(pr.master),
        replyCell(pr.replica),
      ));
    }
  }
  if (!n) emptyRow(tb, 11, 'no pairs: add one with POST /v1/admin/pools/{size}/pairs');
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


async function refreshAdminJobs(g) {
  const jobs = await api('GET', '/v1/admin/jobs');
  if (g !== session.gen) return;
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
    if (g === session.gen && absent(e)) { $('tenants-card').hidden = true; return; }
    throw e;
  }
  if (g !== session.gen) return;
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
  const g = session.gen;
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
    if (g !== session.gen) return;
    if (absent(e)) { $('audit-card').hidden = true; return; }
    if (e.status === 400) { // a bad filter: the API's text, beside the form
      $('audit-error').textContent = e.message;
      $('audit-error').hidden = false;
      $('audit-card').hidden = false;
      return;
    }
    throw e;
  }
  if (g !== session.gen) return;
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


// initAdmin wires the admin view's forms, once.
export function initAdmin() {
  $('audit-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    admin.auditPaged = false;
    loadAudit(true).catch((e) => setBanner('audit', e.message));
  });
  $('audit-more').addEventListener('click', () => {
    admin.auditPaged = true;
    loadAudit(false).catch((e) => setBanner('audit', e.message));
  });
}
