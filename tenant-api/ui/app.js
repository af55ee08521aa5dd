// Granary dashboard: a pure client of the REST API under /v1, with the
// caller's own token. It can do nothing the API refuses that token.
// Every datum reaches the page as text (textContent / text nodes), never as
// HTML. The token lives in this tab's session storage only: never in
// persistent storage, a cookie or a URL.
//
// This file signs in and out and picks the view; core.js holds the shared
// parts, admin.js and tenant.js the two views. ES modules, no build step.
import { $, api, session, clearBanners } from './core.js';
import { initAdmin, resetAdmin, startAdmin } from './admin.js';
import { initTenant, resetTenant, startTenant } from './tenant.js';

const TOKEN_KEY = 'granary.token';

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
  session.token = tok;
  session.gen++;
  const g = session.gen;
  let role;
  try {
    role = await identify();
  } catch (e) {
    if (g !== session.gen) return;
    session.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(e.message);
    return;
  }
  if (g !== session.gen) return;
  sessionStorage.setItem(TOKEN_KEY, tok);
  $('login').hidden = true;
  $('logout').hidden = false;
  $('who').hidden = false;
  $('who').textContent = role === 'admin' ? 'admin' : 'tenant';
  if (role === 'admin') startAdmin(); else startTenant();
}

function logout(msg) {
  session.gen++;
  session.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  clearBanners();
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

// ---- wiring ----

function init() {
  initAdmin();
  initTenant();
  session.onUnauthorized = logout;
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const tok = $('token').value.trim();
    if (tok) login(tok);
  });
  $('logout').addEventListener('click', () => logout());
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) login(saved); else showLogin();
}

init();
