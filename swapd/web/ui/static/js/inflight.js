// The in-flight card: every request swapd is serving right now (the event stream's
// `inflight` snapshot/upsert/remove), how long it has run and what it has sent, with a
// Cancel button (POST /api/inflight/<id>/cancel: its client gets an error, the upstream
// request is closed). Elapsed times tick locally between upserts.
import {api, errorMessage} from './api.js';
import {fmtBytes, fmtClock, h, replace} from './dom.js';
import {store, subscribe} from './store.js';
import {card, empty, spinner, toast} from './ui.js';

const cancelling = new Set(); // ids whose cancel is on its way

async function cancel(id) {
  if (cancelling.has(id)) return;
  cancelling.add(id);
  render();
  try {
    const response = await api(`/api/inflight/${encodeURIComponent(id)}/cancel`, {method: 'POST'});
    // 404: it ended on its own meanwhile, which is what the user wanted
    if (!response.ok && response.status !== 404) throw new Error(await errorMessage(response));
    await response.body?.cancel();
  } catch (error) {
    toast(`Cancel request ${id}: ${error.message}`, 'error');
  } finally {
    cancelling.delete(id);
    render();
  }
}

let box = null;
const seen = new Map(); // id -> [elapsed_ms at the last upsert, performance.now() then]

function elapsed(request) {
  const [ms, at] = seen.get(request.id) || [request.elapsed_ms || 0, performance.now()];
  return (ms + performance.now() - at) / 1000;
}

function rowView(request) {
  const busy = cancelling.has(request.id);
  return h(
    'tr',
    {dataset: {id: request.id, model: request.model || ''}},
    h('td', {class: 'num mono muted'}, request.id),
    h('td', {class: 'model-id'}, request.model || h('span', {class: 'muted'}, '—')),
    h('td', {class: 'mono small path-cell'}, `${request.method || 'POST'} ${request.req_path || ''}`),
    h('td', {class: 'num mono elapsed'}, fmtClock(elapsed(request))),
    h('td', {class: 'num'}, request.resp_bytes ? fmtBytes(request.resp_bytes) : h('span', {class: 'muted'}, '—')),
    h('td', {class: 'mono small muted'}, request.remote_ip || ''),
    h(
      'td',
      {class: 'actions-cell'},
      h(
        'button',
        // a double-click sends one cancel: the second click finds the button disabled
        {type: 'button', class: 'btn btn-small btn-danger admin-only', dataset: {action: 'cancel'}, disabled: busy, onclick: (e) => e.detail < 2 && cancel(request.id)},
        busy ? spinner('cancelling') : null,
        busy ? 'Cancelling…' : 'Cancel',
      ),
    ),
  );
}

function render() {
  if (!box) return;
  const requests = [...store.inflightRequests.values()];
  for (const r of requests) {
    const last = seen.get(r.id);
    if (!last || last[2] !== r) seen.set(r.id, [r.elapsed_ms || 0, performance.now(), r]);
  }
  for (const id of seen.keys()) if (!store.inflightRequests.has(id)) seen.delete(id);
  replace(
    box,
    requests.length
      ? h(
          'div',
          {class: 'table-wrap'},
          h(
            'table',
            {class: 'table inflight-table'},
            h('thead', null, h('tr', null, ['#', 'Model', 'Request', 'Elapsed', 'Sent', 'From', ''].map((t, i) => h('th', {class: [1, 2, 5, 6].includes(i) ? '' : 'num'}, t)))),
            h('tbody', null, requests.map(rowView)),
          ),
        )
      : empty(store.snapshot ? 'Nothing in flight.' : 'Waiting for swapd…'),
  );
}

function tick() {
  if (!box) return;
  for (const cell of box.querySelectorAll('tr[data-id] .elapsed')) {
    const request = store.inflightRequests.get(cell.closest('tr').dataset.id);
    if (request) cell.textContent = fmtClock(elapsed(request));
  }
}

/** The card; returns [element, cleanup]. */
export function inflightCard() {
  box = h('div');
  const element = card('In flight', h('span', {class: 'muted small'}, 'requests being served now'), box);
  render();
  const off = subscribe((kind) => {
    if (kind === 'inflight' || kind === 'snapshot') render();
  });
  const timer = setInterval(tick, 1000);
  return [element, () => {
    off();
    clearInterval(timer);
    box = null;
  }];
}
