// Granary dashboard, a tenant's view: its dbs, creating, resizing and
// dropping them, and following their jobs live.
import {
  $, el, clear, fmtBytes, ago, pct, bar, setBar, fillClass, badge, stateClass, td, shortID,
  jobProgressCell, copiedText, api, session, setBanner, loop, stamp, SIZES,
} from './core.js';

const DBS_EVERY = 2000;
const JOBS_EVERY = 1000; // jobs: live progress

// ---- tenant view ----

const tenant = { cards: new Map(), jobs: new Map() };

export function resetTenant() {
  tenant.cards.clear();
  tenant.jobs.clear();
  clear($('dbs'));
  clear($('tenant-jobs').tBodies[0]);
  $('tenant-jobs').hidden = true;
  $('no-jobs').hidden = false;
  $('create-error').hidden = true;
}

export function startTenant() {
  resetTenant();
  clear($('tenant-stats'));
  $('tenant').hidden = false;
  loop('dbs', DBS_EVERY, refreshDBs);
  loop('jobs', JOBS_EVERY, (g) => pollJobs(g));
}

async function refreshDBs(g) {
  const dbs = await api('GET', '/v1/dbs');
  if (g !== session.gen) return;
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
    // Any job on the db: a resize or drop (the db is not active), and an
    // import or restore (active but read-only), started here or elsewhere.
    if (db.job) follow(db.job);
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
    const g = session.gen;
    showCardError(c, null);
    try {
      const db2 = await api('PATCH', '/v1/dbs/' + c.index, { write_mode: c.modeSel.value });
      if (g === session.gen) updateCard(c, db2);
    } catch (e) {
      if (g !== session.gen) return;
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
  const warn = [db.read_only ? 'read-only while ' + db.read_only : '', db.warning || ''].filter((w) => w).join(' · ');
  c.warning.textContent = warn;
  c.warning.hidden = !warn;
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
  const g = session.gen;
  showCardError(c, null);
  c.pending = true;
  c.resizeBtn.disabled = c.dropBtn.disabled = true;
  try {
    const ref = await api(method, '/v1/dbs/' + c.index, body);
    if (g !== session.gen) return;
    if (ref && ref.job) follow(ref.job, { kind: method === 'DELETE' ? 'drop' : 'resize', index: c.index });
    refreshDBs(g).catch(() => {});
  } catch (e) {
    if (g === session.gen) showCardError(c, e.message);
  } finally {
    c.pending = false;
    if (g === session.gen && c.db) updateCard(c, c.db);
  }
}

// follow adds a job to the ones polled until they end, and reads it at
// once rather than at the next tick.
function follow(id, guess) {
  if (tenant.jobs.has(id)) return;
  tenant.jobs.set(id, Object.assign({ id, kind: '', index: '', state: 'running', step: '', progress: 0 }, guess || {}));
  renderTenantJobs();
  const g = session.gen;
  pollJobs(g, [id]).catch((e) => { if (g === session.gen) setBanner('jobs', e.message); });
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
      if (g !== session.gen) return;
      tenant.jobs.set(j.id, got);
      if (got.state !== 'running') ended = true;
    } catch (e) {
      if (e.status !== 404) throw e;
      if (g === session.gen) { tenant.jobs.set(j.id, Object.assign({}, j, { state: 'failed', error: e.message })); ended = true; }
    }
  }));
  if (g !== session.gen) return;
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
  const g = session.gen;
  const btn = $('create-btn');
  const err = $('create-error');
  err.hidden = true;
  btn.disabled = true;
  try {
    const db = await api('POST', '/v1/dbs', { size: $('create-size').value, write_mode: $('create-mode').value });
    if (g !== session.gen) return;
    if (db && db.job) follow(db.job, { kind: 'create', index: db.index });
    await refreshDBs(g);
  } catch (e) {
    if (g !== session.gen) return;
    err.textContent = e.message;
    err.hidden = false;
  } finally {
    btn.disabled = false;
  }
}


// initTenant wires the tenant view's forms, once.
export function initTenant() {
  $('create-size').replaceChildren(...SIZES.map((s) => el('option', { value: s }, s)));
  $('create-size').value = '64M';
  $('create-form').addEventListener('submit', createDB);
}
