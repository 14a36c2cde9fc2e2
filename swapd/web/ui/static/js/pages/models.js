// Models: every local model with its live state (a progress bar while it loads), group,
// TTL countdown, PID, port, last error, footprint and KV cache, with load / unload /
// sleep / wake; the memory budgets when configured; the machine (hardware.js); peers'
// models listed apart.
import {api, errorMessage} from '../api.js';
import {fmtClock, fmtSpan, h, replace} from '../dom.js';
import {localModels, peerModels, store, subscribe} from '../store.js';
import {hardwareCard} from '../hardware.js';
import {memoryCard, modelFacts, readRunning} from '../memory.js';
import {card, confirmDialog, empty, pageHead, progressBar, spinner, stateBadge, toast} from '../ui.js';

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

// Buttons never change meaning under the pointer (a double-click on Load must not unload):
// while our own action runs, its button stays put, disabled, with a spinner; while swapd
// moves the model between states, the button says so and is disabled; and a button that
// just took another's place ignores clicks for SETTLE_MS.
const SETTLE_MS = 700;
const settled = new Map(); // model -> {shape: the buttons last shown, until: performance.now() ms}
const DOING = {load: 'Loading…', unload: 'Unloading…', sleep: 'Sleeping…', wake: 'Waking…'};
const MOVING = {stopping: ['unload', 'Stopping…'], sleepPending: ['sleep', 'Going to sleep…'], waking: ['wake', 'Waking…']};

async function act(model, action) {
  if (pending.has(model.id)) return;
  if (action === 'unload' && (model.inFlight || model.waiting) && !(await confirmUnload(model))) return;
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

/** Ask before cutting requests off; resolves true to unload. */
function confirmUnload(model) {
  const busy = [model.inFlight ? `${model.inFlight} request${model.inFlight > 1 ? 's' : ''} in flight` : '', model.waiting ? `${model.waiting} waiting` : ''].filter(Boolean).join(' and ');
  return confirmDialog(
    `Unload ${model.id}?`,
    `It has ${busy}. Unloading stops it now: requests in flight are cut off, and waiting ones start it again.`,
    'Unload',
  );
}

/** The buttons a model in its current state offers: [action, label, kind, disabled]. */
function buttonsFor(model) {
  const doing = pending.get(model.id);
  if (doing) return [[doing, DOING[doing], '', true]];
  if (MOVING[model.state]) {
    const [action, label] = MOVING[model.state];
    return [[action, label, '', true], ...(model.state === 'stopping' ? [] : [['unload', 'Unload', 'btn-danger', false]])];
  }
  if (!RUNNING.has(model.state)) return [['load', 'Load', 'btn-primary', false]];
  return [
    model.sleepable && model.state === 'ready' ? ['sleep', 'Sleep', '', false] : null,
    model.sleepable && model.state === 'asleep' ? ['wake', 'Wake', 'btn-primary', false] : null,
    ['unload', 'Unload', 'btn-danger', false],
  ].filter(Boolean);
}

/** Whether the buttons just changed (so they wait SETTLE_MS before taking clicks). Times
 * are performance.now()'s, the clock of an event's timeStamp. */
function settling(model, buttons) {
  const shape = buttons.map(([action, , , disabled]) => `${action}${disabled ? '-' : ''}`).join(' ');
  const now = performance.now();
  const last = settled.get(model.id);
  if (!last) {
    settled.set(model.id, {shape, until: 0}); // first sight: nothing moved under the pointer
    return false;
  }
  if (last.shape !== shape) {
    settled.set(model.id, {shape, until: now + SETTLE_MS});
    setTimeout(render, SETTLE_MS + 20);
    return true;
  }
  return now < last.until;
}

function actions(model) {
  const buttons = buttonsFor(model);
  const wait = settling(model, buttons);
  const button = ([action, label, kind, disabled]) =>
    h(
      'button',
      {
        type: 'button',
        class: ['btn', 'btn-small', 'admin-only', kind], // load/unload/sleep/wake: admin keys
        disabled: disabled || wait,
        dataset: {action},
        // the second click of a double-click never counts: the first one did the work; nor
        // does a click made while the button was settling but handled late (a busy page)
        onclick: (event) => event.detail < 2 && event.timeStamp >= (settled.get(model.id)?.until ?? 0) && act(model, action),
      },
      disabled ? spinner(label) : null,
      label,
    );
  return h(
    'div',
    {class: 'row-actions'},
    buttons.map(button),
    h('a', {class: 'btn btn-small btn-ghost observer-only', href: `/ui/logs?source=${encodeURIComponent(model.id)}`, title: `${model.id}'s output`}, 'Logs'),
  );
}

let ttlCells = new Map();
let progressCells = new Map(); // model -> the element its progress bar lives in

function progressView(model) {
  const reading = store.progress.get(model.id);
  return reading ? progressBar(reading) : null;
}

function modelRow(model) {
  const ttl = h('td', {class: ['num', !model.ttl && 'is-empty'], dataset: {label: 'TTL'}}, ttlCell(model));
  ttlCells.set(model.id, [ttl, model]);
  const progress = h('div', {class: 'progress-slot'}, progressView(model));
  progressCells.set(model.id, progress);
  const label = model.name && model.name !== model.id ? model.name : '';
  return h(
    'tr',
    {dataset: {model: model.id, state: model.state}},
    h(
      'td',
      {class: 'model-cell'},
      h('div', {class: 'model-id'}, breakable(model.id), model.unlisted ? h('span', {class: 'tag'}, 'unlisted') : null),
      model.aliases?.length ? h('div', {class: 'aliases small'}, h('span', {class: 'muted'}, 'also: '), model.aliases.map((alias) => h('span', {class: 'tag alias'}, alias))) : null,
      label || model.description ? h('div', {class: 'muted small'}, [label, model.description].filter(Boolean).join(' — ')) : null,
      RUNNING.has(model.state) ? modelFacts(model.id) : null,
    ),
    h('td', {class: 'state-cell'}, stateBadge(model.state), model.inFlight ? h('span', {class: 'muted small'}, ` ${model.inFlight} in flight`) : null, model.waiting ? h('span', {class: 'muted small'}, ` ${model.waiting} waiting`) : null, progress),
    h('td', {dataset: {label: 'group'}}, model.group ? h('span', {class: 'tag'}, model.group) : h('span', {class: 'muted'}, '—')),
    ttl,
    h('td', {class: ['num mono', model.pid == null && 'is-empty'], dataset: {label: 'pid'}}, model.pid ?? h('span', {class: 'muted'}, '—')),
    h('td', {class: ['num mono', model.port == null && 'is-empty'], dataset: {label: 'port'}}, model.port ?? h('span', {class: 'muted'}, '—')),
    h('td', {class: ['error-cell', !model.lastError && 'is-empty']}, model.lastError ? h('details', {open: openErrors.has(model.id), ontoggle: (e) => (e.target.open ? openErrors.add(model.id) : openErrors.delete(model.id))}, h('summary', {class: 'error-text'}, firstLine(model.lastError)), h('pre', {class: 'error-pre'}, model.lastError)) : h('span', {class: 'muted'}, '—')),
    h('td', {class: 'actions-cell'}, actions(model)),
  );
}

/** A model ID that may wrap after `/`, `-`, `_`, `.` or `:` but never inside a word. */
function breakable(id) {
  return id.split(/(?<=[\/\-_.:])/).flatMap((part, i) => (i ? [h('wbr'), part] : [part]));
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
  const shown = all.filter((m) => (showUnlisted || !m.unlisted) && (!needle || `${m.id} ${(m.aliases || []).join(' ')} ${m.name} ${m.description} ${m.group}`.toLowerCase().includes(needle)));
  const hidden = all.filter((m) => m.unlisted).length;
  ttlCells = new Map();
  progressCells = new Map();
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
  const [memory, showMemory] = memoryCard();
  const [hardware, readHardware] = hardwareCard();
  replace(root, head, card(null, null, parts.table), memory, hardware, parts.peers);
  const sample = () => readHardware().catch(() => {}); // trouble shows on the event stream
  render();
  // footprints, KV cache and budgets come from /running: read it when models change
  // state, and every few seconds (memory in use moves without a state change)
  let reading = false;
  let readTimer = null;
  const refresh = async () => {
    if (reading || !root) return;
    reading = true;
    try {
      if ((await readRunning()) && root) {
        showMemory();
        render();
      }
    } catch {
      // the event stream reports connection trouble
    } finally {
      reading = false;
    }
  };
  const off = subscribe((kind, detail) => {
    if (kind === 'models' || kind === 'snapshot') {
      render();
      clearTimeout(readTimer);
      readTimer = setTimeout(refresh, 200);
    } else if (kind === 'inflight') summary();
    else if (kind === 'metrics') tick();
    else if (kind === 'loadProgress') {
      const cell = progressCells.get(detail.model);
      const model = localModels().find((m) => m.id === detail.model);
      if (cell && model) replace(cell, progressView(model));
    }
  });
  const timer = setInterval(tick, 1000);
  const poll = setInterval(() => {
    refresh();
    sample();
  }, 5000);
  refresh();
  sample();
  return () => {
    off();
    clearInterval(timer);
    clearInterval(poll);
    clearTimeout(readTimer);
    root = null;
  };
}
