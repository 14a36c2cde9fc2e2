// The live picture of swapd, fed by one /api/events stream for the whole page.
//
// Pages read `store` and `subscribe()` to hear what changed: 'models', 'metrics' (with
// the new records, or `reset` after a reconnect's snapshot), 'log' ({source, text,
// reset}), 'inflight', 'connection', 'configReload', 'modelPreloaded', 'loadProgress' (a
// loading model's stage, percent and ETA; the latest per model is in `store.progress`),
// 'activity' ({id} of a new row in the stored history).
import {api} from './api.js';
import {openEventStream} from './sse.js';

const MAX_LOG = 256 * 1024; // characters kept per log source
const MAX_METRICS = 1000;

export const store = {
  connection: 'connecting',
  models: [], // modelStatus entries: local models first (sorted), then peers'
  modelsAt: 0, // when the list arrived (ms), for countdowns
  metrics: [], // token-metrics records, oldest first
  logs: {proxy: '', upstream: ''},
  inflight: 0,
  inflightRequests: new Map(),  // id → llama-swap's in-flight entry
  requestEnded: {}, // model -> epoch seconds of its last finished request (seen live)
  snapshot: false, // the current connection's snapshot has arrived
  progress: new Map(), // model -> its latest loadProgress reading, while it loads
};

const LOADING = new Set(['starting', 'waking']);

const listeners = new Set();

export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(kind, detail = null) {
  for (const fn of [...listeners]) {
    try {
      fn(kind, detail);
    } catch (error) {
      console.error(error);
    }
  }
}

export function localModels() {
  return store.models.filter((m) => !m.peerID);
}

export function peerModels() {
  return store.models.filter((m) => m.peerID);
}

export function modelById(id) {
  return store.models.find((m) => m.id === id && !m.peerID);
}

let fresh = new Set(); // kinds whose first message on this connection is a snapshot

function onMessage({data}) {
  let kind;
  let payload;
  try {
    const outer = JSON.parse(data);
    kind = outer.type;
    payload = typeof outer.data === 'string' ? JSON.parse(outer.data) : outer.data;
  } catch {
    return;
  }
  const snapshot = fresh.delete(kind);
  switch (kind) {
    case 'modelStatus':
      store.models = Array.isArray(payload) ? payload : [];
      store.modelsAt = Date.now();
      // a reading outlives its load only until the status says the model moved on
      for (const id of store.progress.keys()) if (!LOADING.has(modelById(id)?.state)) store.progress.delete(id);
      emit('models');
      break;
    case 'logData': {
      const source = payload.source;
      const reset = fresh.delete(`log:${source}`);
      const text = (reset ? '' : store.logs[source] || '') + payload.data;
      store.logs[source] = text.length > MAX_LOG ? text.slice(text.indexOf('\n', text.length - MAX_LOG) + 1) : text;
      emit('log', {source, text: payload.data, reset});
      break;
    }
    case 'metrics': {
      const records = Array.isArray(payload) ? payload : [];
      if (snapshot) {
        store.metrics = records.slice(-MAX_METRICS);
      } else {
        store.metrics.push(...records);
        if (store.metrics.length > MAX_METRICS) store.metrics.splice(0, store.metrics.length - MAX_METRICS);
        const now = Date.now() / 1000;
        for (const record of records) store.requestEnded[record.model] = now;
        refreshCountsSoon();
      }
      emit('metrics', {records, reset: snapshot});
      break;
    }
    case 'inflight':
      // llama-swap v250's operations: a snapshot of the requests, then upserts and removes.
      if (payload.operation === 'snapshot') {
        store.inflightRequests = new Map(payload.requests.map((r) => [r.id, r]));
      } else if (payload.operation === 'upsert') {
        store.inflightRequests.set(payload.request.id, payload.request);
      } else if (payload.operation === 'remove') {
        store.inflightRequests.delete(payload.id);
      }
      store.inflight = store.inflightRequests.size;
      if (snapshot) {
        store.snapshot = true;
        emit('snapshot');
      }
      emit('inflight');
      break;
    case 'loadProgress':
      if (modelById(payload.model)?.state !== 'ready') store.progress.set(payload.model, payload);
      emit('loadProgress', payload);
      break;
    default:
      emit(kind, payload);
  }
}

// swapd sends model status and in-flight counts when a model changes state, not when a
// request ends; so after a request ends (its metrics record arrives), read the counts
// from /running once, shortly after.
let refreshTimer = null;

function refreshCountsSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(async () => {
    try {
      const response = await api('/running');
      if (!response.ok) return;
      const running = new Map((await response.json()).running.map((r) => [r.model, r]));
      for (const model of localModels()) {
        const entry = running.get(model.id);
        model.inFlight = entry?.inFlight ?? 0;
        model.waiting = entry?.waiting ?? 0;
      }
      store.inflight = localModels().reduce((total, m) => total + (m.inFlight || 0), 0);
      emit('models');
      emit('inflight');
    } catch {
      // the event stream reports connection trouble
    }
  }, 300);
}

let stream = null;

/**
 * Without the event feed (an inference key may use models but not read it): the models
 * the key may use, with their state at this moment, from /v1/models (shown as a list, not
 * live). Peers' models come last, as in the feed.
 */
export async function loadModelList() {
  store.connection = 'list';
  emit('connection', 'list');
  try {
    const response = await api('/v1/models');
    if (!response.ok) {
      await response.body?.cancel();
      return;
    }
    const {data} = await response.json();
    const entry = (m) => ({
      id: m.id,
      name: m.name || '',
      description: m.description || '',
      state: m.status === 'remote' ? '' : m.status || '',
      unlisted: false,
      peerID: m.meta?.llamaswap?.peerID || '',
    });
    const models = data.map(entry);
    store.models = [...models.filter((m) => !m.peerID), ...models.filter((m) => m.peerID)];
    store.modelsAt = Date.now();
    store.snapshot = true;
    emit('models');
  } catch {
    // offline: the page shows no models; a reload asks again
  }
}

export function startEvents() {
  if (stream) return;
  stream = openEventStream('/api/events', {
    onOpen: () => {
      fresh = new Set(['modelStatus', 'metrics', 'inflight', 'log:proxy', 'log:upstream']);
      store.snapshot = false;
    },
    onEvent: onMessage,
    onStatus: (status) => {
      store.connection = status;
      emit('connection', status);
    },
  });
}
