// The page shell: client-side routes under /ui/, the top bar's live status, the theme.
//
// Every page module exports `mount(root, params)` and returns a cleanup function, called
// when the user goes to another page.
import {api, apiKey, onKeyChange, setApiKey} from './api.js';
import {key, loadKey} from './key.js';
import {loadModelList, startEvents, store, subscribe} from './store.js';
import * as models from './pages/models.js';
import * as logs from './pages/logs.js';
import * as activity from './pages/activity.js';
import * as playground from './pages/playground.js';
import * as config from './pages/config.js';

const PAGES = {models, logs, activity, playground, config};
const TITLES = {models: 'Models', logs: 'Logs', activity: 'Activity', playground: 'Playground', config: 'Config'};

let cleanup = null;

function pageFromPath(pathname) {
  const name = pathname.replace(/^\/ui\/?/, '').split('/')[0];
  return PAGES[name] ? name : 'models';
}

function render() {
  if (cleanup) cleanup();
  cleanup = null;
  const name = pageFromPath(location.pathname);
  const root = document.getElementById('view');
  root.replaceChildren();
  root.dataset.page = name;
  document.title = `${TITLES[name]} · swapd`;
  for (const link of document.querySelectorAll('.nav a')) {
    if (link.dataset.page === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  cleanup = PAGES[name].mount(root, new URLSearchParams(location.search)) || null;
}

/** Go to a UI path without reloading the page. */
function navigate(path) {
  if (path !== location.pathname + location.search) history.pushState(null, '', path);
  render();
}

document.addEventListener('click', (event) => {
  const link = event.target.closest('a[href^="/ui"]');
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || link.target) return;
  event.preventDefault();
  navigate(link.getAttribute('href'));
});
window.addEventListener('popstate', render);

// --- top bar -----------------------------------------------------------------------------

function showConnection() {
  const el = document.getElementById('conn');
  const text = {open: 'live', connecting: 'connecting', retrying: 'reconnecting', list: 'not live'}[store.connection] || store.connection;
  el.dataset.state = store.connection;
  el.querySelector('.conn-text').textContent = text;
  el.title = {
    open: 'Receiving live events from swapd',
    list: 'This API key may use models but not follow swapd live: the list is as it was when the page loaded',
  }[store.connection] || 'Waiting for the event stream';
}

function showInflight() {
  const el = document.getElementById('inflight');
  el.textContent = store.inflight ? `${store.inflight} in flight` : '';
}

function showKey() {
  document.getElementById('key-button').hidden = !apiKey();
}

const THEMES = ['auto', 'light', 'dark'];

function applyTheme(theme) {
  if (theme === 'auto') delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  localStorage.setItem('swapd.theme', theme);
  document.getElementById('theme-button').textContent = theme;
  document.getElementById('theme-button').title = `Theme: ${theme} (click to change)`;
}

async function boot() {
  applyTheme(localStorage.getItem('swapd.theme') || 'auto');
  document.getElementById('theme-button').addEventListener('click', () => {
    const current = localStorage.getItem('swapd.theme') || 'auto';
    applyTheme(THEMES[(THEMES.indexOf(current) + 1) % THEMES.length]);
  });
  document.getElementById('key-button').addEventListener('click', () => {
    setApiKey('');
    location.reload();
  });
  onKeyChange(showKey);
  showKey();
  subscribe((kind) => {
    if (kind === 'connection') showConnection();
    if (kind === 'inflight') showInflight();
  });
  await loadKey(); // which controls to show, before the first page renders
  if (key.role === 'inference') loadModelList(); // the event feed is not open to it
  else startEvents();
  render();
  api('/api/version')
    .then((r) => (r.ok ? r.json() : null))
    .then((v) => {
      if (v) document.getElementById('version').textContent = `swapd ${v.version}`;
    })
    .catch(() => {});
}

boot();
