// The machine card of the models page: what /api/hardware found at start (CPU, RAM, OS,
// GPUs) and the latest /api/performance sample (CPU busy, memory, load, per-GPU use and
// temperature), both as llama-swap v250 shapes them (docs/observability.md).
import {api} from './api.js';
import {key} from './key.js';
import {fmtBytes, h, replace} from './dom.js';

const MiB = 1024 * 1024;
const pct = (n) => (n == null ? '—' : `${Math.round(n)}%`);
const mib = (n) => (n == null ? '—' : fmtBytes(n * MiB));

function fact(name, label, value) {
  return [h('dt', null, label), h('dd', {dataset: {fact: name}}, value)];
}

function machineView(hw) {
  const cpu = hw.cpu || {};
  const os = hw.operating_system || {};
  const threads = cpu.logical_thread_count;
  return h(
    'dl',
    {class: 'memory-facts hardware-facts'},
    fact('cpu', 'CPU', [cpu.model || cpu.vendor || '—', threads ? ` · ${threads} threads` : ''].join('')),
    fact('ram', 'RAM', hw.memory?.capacity_bytes ? fmtBytes(hw.memory.capacity_bytes) : '—'),
    fact('os', 'system', [os.name || os.family, os.version, hw.architecture?.name].filter(Boolean).join(' · ') || '—'),
    fact('gpus', 'GPUs', hw.accelerators?.length ? hw.accelerators.map((a) => `${a.model || a.vendor}${a.memory?.capacity_bytes ? ` (${fmtBytes(a.memory.capacity_bytes)})` : ''}`).join(', ') : 'none found'),
  );
}

function sampleView(sys, gpus) {
  if (!sys) return h('p', {class: 'muted small'}, 'No performance sample yet.');
  const cores = sys.cpu_util_per_core || [];
  const busy = cores.length ? cores.reduce((a, b) => a + b, 0) / cores.length : null;
  return [
    h(
      'dl',
      {class: 'memory-facts hardware-facts'},
      fact('cpuBusy', 'CPU busy', pct(busy)),
      fact('memUsed', 'memory used', `${mib(sys.mem_used_mb)} / ${mib(sys.mem_total_mb)}`),
      fact('load', 'load 1 / 5 / 15 min', [sys.load_avg_1, sys.load_avg_5, sys.load_avg_15].map((n) => (n == null ? '—' : n.toFixed(2))).join(' / ')),
    ),
    gpus.map((g) =>
      h(
        'dl',
        {class: 'memory-facts hardware-facts', dataset: {gpu: g.id}},
        fact('gpu', `gpu${g.id}`, g.name || ''),
        fact('gpuUtil', 'busy', pct(g.gpu_util_pct)),
        fact('gpuMem', 'memory', `${mib(g.mem_used_mb)} / ${mib(g.mem_total_mb)}`),
        fact('gpuTemp', 'temperature', g.temp_c == null ? '—' : `${Math.round(g.temp_c)} °C`),
      ),
    ),
  ];
}

const OPEN = 'swapd.hardwareOpen';

/** The card, folded until the user opens it (the choice is remembered), so a swapd without
 * these routes is never asked; returns [element, refresh] (refresh reads the latest sample
 * while the card is open). */
export function hardwareCard() {
  const machine = h('div', {class: 'memory-device'}, h('h3', null, 'machine'));
  const now = h('div', {class: 'memory-device'}, h('h3', null, 'now'));
  const body = h('div', {class: 'memory-devices'}, machine, now);
  const element = h(
    'details',
    {class: 'card hardware-card observer-only', open: localStorage.getItem(OPEN) === '1', ontoggle: () => {
      localStorage.setItem(OPEN, element.open ? '1' : '0');
      if (element.open) refresh().catch(() => {});
    }},
    h('summary', {class: 'card-head'}, h('h2', null, 'Hardware'), h('span', {class: 'muted small'}, 'CPU, memory and GPUs, sampled by swapd')),
    body,
  );
  let known = false;

  async function refresh() {
    if (!element.open || key.role === 'inference') return; // not open to an inference key
    if (!known) {
      const response = await api('/api/hardware');
      if (!response.ok) {
        await response.body?.cancel();
        replace(body, h('p', {class: 'muted small'}, response.status === 404 ? 'This swapd does not report its hardware.' : 'Hardware detection is unavailable.'));
        return;
      }
      replace(machine, h('h3', null, 'machine'), machineView(await response.json()));
      replace(body, machine, now);
      known = true;
    }
    const response = await api('/api/performance');
    if (!response.ok) {
      await response.body?.cancel();
      replace(now, h('h3', null, 'now'), h('p', {class: 'muted small'}, 'Sampling is off (performance.disabled).'));
      return;
    }
    const sample = await response.json();
    const sys = sample.sys_stats?.at(-1);
    const gpus = (sample.gpu_stats || []).filter((g) => g.timestamp === sys?.timestamp);
    replace(now, h('h3', null, 'now', sys ? h('span', {class: 'muted small'}, ` · ${sys.timestamp.slice(11, 19)} UTC`) : null), sampleView(sys, gpus));
  }
  return [element, refresh];
}
