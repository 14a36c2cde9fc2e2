// Models: every local model with its live state, group, TTL countdown, PID, port and last
// error, with load / unload / sleep / wake; peers' models listed apart.
import {api, errorMessage} from '../api.js';
import {fmtClock, fmtSpan, h, replace} from '../dom.js';
import {localModels, peerModels, store, subscribe} from '../store.js';
import {card, empty, pageHead, spinner, stateBadge, toast} from '../ui.js';

const RUNNING = new Set(['starting', 'ready', 'stopping', 'sleepPending', 'asleep', 'waking']);
const pending = new Map(); // model -> action in progress (kept across page visits)
const openErrors = new Set(); // models whose last error is unfolded
let showUnlisted = false;
let filter = '';

/** When TTL will unload `model` (epoch seconds), or null. */
function ttlDeadline(model) {
  if (model.state !== 'ready' || !model.ttl) return null;
  if (model.idleDeadline) return Math.max(model.idleDeadline, store.requestEnded[model.id] + model.ttl || 0);
  // swapd reports a deadline only for a model idle when the status was sent; a request
  // finishing later is seen as its metrics record.
  const ended = store.requestEnded[model.id];
  return ended && ended * 1000 > store.modelsAt ? ended + model.ttl : null;
}

function ttlCell(model) {
  if (!model.ttl) return h('span', {class: 'muted'}, '—');
  const deadline = ttlDeadline(model);
  if (deadline == null) return h('span', {class: 'muted', title: `Unloads after ${fmtSpan(model.ttl)} idle`}, fmtSpan(model.ttl));
  const left = deadline - Date.now() / 1000;
  return h(
    'span',
    {class: ['ttl', left < 30 && 'ttl-soon'], title: `Unloads after ${fmtSpan(model.ttl)} idle`},
    left > 0 ? fmtClock(left) : 'due',
    h('span', {class: 'muted'}, ` / ${fmtSpan(model.ttl)}`),
  );
}

async function act(model, action) {
  pending.set(model.id, action);
  render();
  try {
    const response = await api(`/api/models/${action}/${encodeURIComponent(model.id).replace(/%2F/g, '/')}`, {method: 'POST'});
    if (!response.ok) throw new Error(await errorMessage(response));
    await response.body?.cancel();
  } catch (error) {
    toast(`${action} ${model.id}: ${error.message}`, 'error');
  } finally {
    pending.delete(model.id);
    render();
  }
}

function actions(model) {
  const busy = pending.get(model.id);
  const button = (action, label, kind = '') =>
    h(
      'button',
      {type: 'button', class: ['btn', 'btn-small', kind], disabled: busy === action, dataset: {action}, onclick: () => act(model, action)},
      busy === action ? spinner(label) : null,
      label,
    );
  const running = RUNNING.has(model.state);
  return h(
    'div',
    {class: 'row-actions'},
    !running ? button('load', 'Load', 'btn-primary') : null,
    model.sleepable && model.state === 'ready' ? button('sleep', 'Sleep') : null,
    model.sleepable && model.state === 'asleep' ? button('wake', 'Wake', 'btn-primary') : null,
    running ? button('unload', 'Unload', 'btn-danger') : null,
    h('a', {class: 'btn btn-small btn-ghost', href: `/ui/logs?source=${encodeURIComponent(model.id)}`, title: `${model.id}'s output`}, 'Logs'),
  );
}

let ttlCells = new Map();

function modelRow(model) {
  const ttl = h('td', {class: 'num'}, ttlCell(model));
  ttlCells.set(model.id, [ttl, model]);
  const label = model.name && model.name !== model.id ? model.name : '';
  return h(
    'tr',
    {dataset: {model: model.id, state: model.state}},
    h(
      'td',
      null,
      h('div', {class: 'model-id'}, model.id, model.unlisted ? h('span', {class: 'tag'}, 'unlisted') : null),
      label || model.description ? h('div', {class: 'muted small'}, [label, model.description].filter(Boolean).join(' — ')) : null,
    ),
    h('td', {class: 'state-cell'}, stateBadge(model.state), model.inFlight ? h('span', {class: 'muted small'}, ` ${model.inFlight} in flight`) : null, model.waiting ? h('span', {class: 'muted small'}, ` ${model.waiting} waiting`) : null),
    h('td', null, model.group ? h('span', {class: 'tag'}, model.group) : h('span', {class: 'muted'}, '—')),
    ttl,
    h('td', {class: 'num mono'}, model.pid ?? h('span', {class: 'muted'}, '—')),
    h('td', {class: 'num mono'}, model.port ?? h('span', {class: 'muted'}, '—')),
    h('td', {class: 'error-cell'}, model.lastError ? h('details', {open: openErrors.has(model.id), ontoggle: (e) => (e.target.open ? openErrors.add(model.id) : openErrors.delete(model.id))}, h('summary', {class: 'error-text'}, firstLine(model.lastError)), h('pre', {class: 'error-pre'}, model.lastError)) : h('span', {class: 'muted'}, '—')),
    h('td', null, actions(model)),
  );
}

function firstLine(text) {
  const line = text.split('\n')[0];
  return line.length > 80 ? `${line.slice(0, 80)}…` : line;
}

let root = null;
let parts = null; // the page's fixed elements, filled by render()

function render() {
  if (!root) return;
  const all = localModels();
  const needle = filter.toLowerCase();
  const shown = all.filter((m) => (showUnlisted || !m.unlisted) && (!needle || `${m.id} ${m.name} ${m.description} ${m.group}`.toLowerCase().includes(needle)));
  const hidden = all.filter((m) => m.unlisted).length;
  ttlCells = new Map();
  summary();
  parts.unlisted.hidden = !hidden;
  parts.unlistedCount.textContent = `Show unlisted (${hidden})`;
  const columns = [['Model'], ['State'], ['Group'], ['TTL', 'num'], ['PID', 'num'], ['Port', 'num'], ['Last error'], ['']];
  replace(
    parts.table,
    shown.length
      ? h(
          'div',
          {class: 'table-wrap'},
          h(
            'table',
            {class: 'table models-table'},
            h('thead', null, h('tr', null, columns.map(([title, cls]) => h('th', {class: cls}, title)))),
            h('tbody', null, shown.map(modelRow)),
          ),
        )
      : empty(store.snapshot ? (all.length ? 'No model matches the filter.' : 'No models in the config.') : 'Waiting for swapd…'),
  );

  const peers = peerModels();
  parts.peers.hidden = !peers.length;
  replace(
    parts.peerTable,
    h(
      'div',
      {class: 'table-wrap'},
      h(
        'table',
        {class: 'table peers-table'},
        h('thead', null, h('tr', null, h('th', null, 'Model'), h('th', null, 'Peer'))),
        h('tbody', null, peers.map((m) => h('tr', {dataset: {model: m.id, peer: m.peerID}}, h('td', {class: 'model-id'}, m.id), h('td', null, h('span', {class: 'tag'}, m.peerID))))),
      ),
    ),
  );
}

function summary() {
  const all = localModels();
  const running = all.filter((m) => RUNNING.has(m.state)).length;
  const peers = peerModels().length;
  parts.summary.textContent = `${all.length} local · ${running} running · ${store.inflight} in flight${peers ? ` · ${peers} on peers` : ''}`;
}

function tick() {
  for (const [cell, model] of ttlCells.values()) {
    if (model.ttl && model.state === 'ready') replace(cell, ttlCell(model));
  }
}

export function mount(element) {
  root = element;
  const search = h('input', {type: 'search', class: 'input', placeholder: 'Filter models', value: filter, 'aria-label': 'Filter models', oninput: (e) => {
    filter = e.target.value;
    render();
  }});
  const unlistedCount = h('span');
  const unlisted = h('label', {class: 'check'}, h('input', {type: 'checkbox', checked: showUnlisted, onchange: (e) => {
    showUnlisted = e.target.checked;
    render();
  }}), unlistedCount);
  const head = pageHead('Models', ' ', search, unlisted);
  parts = {
    summary: head.querySelector('p'),
    unlisted,
    unlistedCount,
    table: h('div'),
    peers: null,
    peerTable: h('div'),
  };
  parts.peers = card('Peer models', null, h('p', {class: 'muted small card-note'}, 'Served by other servers: requests for these names are forwarded.'), parts.peerTable);
  replace(root, head, card(null, null, parts.table), parts.peers);
  render();
  const off = subscribe((kind) => {
    if (kind === 'models' || kind === 'snapshot') render();
    else if (kind === 'inflight') summary();
    else if (kind === 'metrics') tick();
  });
  const timer = setInterval(tick, 1000);
  return () => {
    off();
    clearInterval(timer);
    root = null;
  };
}
