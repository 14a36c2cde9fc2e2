// What /running says about memory and caches, for the models page: each device's budget,
// what swapd's models hold, and what the device itself reports (docs/memory.md), and per
// model its footprint and KV-cache token counts (docs/kvcache.md). /running is read when
// the models change and every few seconds while the page is open.
import {api} from './api.js';
import {key} from './key.js';
import {fmtBytes, fmtInt, h, replace} from './dom.js';
import {card} from './ui.js';

export const running = {
  models: new Map(), // model id -> its /running entry (footprint, kvCache, ...)
  devices: {}, // device name -> {budget, held, budgetFree, total, used, free}
};

let shown = ''; // what the page last showed of /running, to re-render only on a change

/** Read /running; true when a fact the page shows changed. */
export async function readRunning() {
  if (key.role === 'inference') return false; // /running is not open to it
  const response = await api('/running');
  if (!response.ok) return false;
  const body = await response.json();
  running.models = new Map(body.running.map((entry) => [entry.model, entry]));
  running.devices = body.memory?.devices || {};
  const facts = JSON.stringify([body.running.map((e) => [e.model, e.footprint, e.kvCache]), running.devices]);
  if (facts === shown) return false;
  shown = facts;
  return true;
}

const size = (n) => (n == null ? '—' : fmtBytes(n));

function share(n, whole) {
  return `${Math.max(0, Math.min(100, (n / whole) * 100)).toFixed(2)}%`;
}

function deviceView(name, d) {
  // the bar is what swapd's models hold against the budget (the device when there is none);
  // the device's own use counts everything on the machine, so it is only given in words
  const scale = d.budget || d.total || d.held || 1;
  return h(
    'section',
    {class: 'memory-device', dataset: {device: name}},
    h('h3', null, name),
    h(
      'div',
      {class: 'memory-bar', title: 'held by swapd’s models, of the budget (red: over it)'},
      h('span', {class: d.budget != null && d.held > d.budget ? 'memory-over' : 'memory-held', style: {width: share(d.held, scale)}}),
    ),
    h(
      'dl',
      {class: 'memory-facts'},
      h('dt', null, 'budget'), h('dd', {dataset: {fact: 'budget'}}, d.budget == null ? 'none' : size(d.budget)),
      h('dt', null, 'held by models'), h('dd', {dataset: {fact: 'held'}}, size(d.held)),
      h('dt', null, 'left in budget'), h('dd', {dataset: {fact: 'budgetFree'}}, size(d.budgetFree)),
      h('dt', null, 'device used / total'), h('dd', {dataset: {fact: 'device'}}, d.total == null ? '—' : `${size(d.used)} / ${size(d.total)}`),
      h('dt', null, 'device free'), h('dd', {dataset: {fact: 'free'}}, size(d.free)),
    ),
  );
}

/** The memory card (hidden while no budget is configured). */
export function memoryCard() {
  const box = h('div', {class: 'memory-devices'});
  const element = card('Memory', h('span', {class: 'muted small'}, 'budgets from memory.budgets'), box);
  element.classList.add('memory-card');
  const update = () => {
    const names = Object.keys(running.devices).sort();
    element.hidden = !names.some((n) => running.devices[n].budget != null);
    replace(box, names.map((n) => deviceView(n, running.devices[n])));
  };
  update();
  return [element, update];
}

/** A running model's footprint and KV-cache facts, or null when /running has none. */
export function modelFacts(modelId) {
  const entry = running.models.get(modelId);
  if (!entry) return null;
  const facts = [];
  const bytes = entry.footprint?.bytes;
  if (bytes && Object.keys(bytes).length) {
    const parts = Object.entries(bytes).sort().map(([device, n]) => `${device} ${fmtBytes(n)}`);
    facts.push(h('span', {class: 'fact', dataset: {fact: 'footprint'}, title: `footprint (${entry.footprint.source})`}, `footprint ${parts.join(', ')} (${entry.footprint.source})`));
  }
  const kv = entry.kvCache;
  if (kv) {
    facts.push(
      h('span', {class: 'fact', dataset: {fact: 'kvCache'}, title: 'KV cache: tokens restored at the last start; tokens and bytes saved on disk'},
        `KV cache ${fmtInt(kv.restoredTokens)} restored · ${fmtInt(kv.savedTokens)} saved (${fmtBytes(kv.savedBytes)})`),
    );
  }
  return facts.length ? h('div', {class: 'model-facts'}, facts) : null;
}
