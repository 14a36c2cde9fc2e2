// The machine card of the models page: what /api/hardware found at start (CPU, RAM, OS,
// GPUs) and the latest /api/performance sample (CPU busy, memory, load, per-GPU use and
// temperature), both as llama-swap v250 shapes them (docs/observability.md). Hidden when
// swapd answers neither (performance sampling off, or an older swapd).
import {api} from './api.js';
import {fmtBytes, h, replace} from './dom.js';
import {card} from './ui.js';

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

/** The card; returns [element, refresh] (refresh reads the latest sample). */
export function hardwareCard() {
  const machine = h('div', {class: 'memory-device'}, h('h3', null, 'machine'));
  const now = h('div', {class: 'memory-device'}, h('h3', null, 'now'));
  const element = card('Hardware', h('span', {class: 'muted small'}, 'sampled by swapd'), h('div', {class: 'memory-devices'}, machine, now));
  element.classList.add('hardware-card');
  element.hidden = true;
  let known = false;

  async function refresh() {
    if (!known) {
      const response = await api('/api/hardware');
      if (!response.ok) {
        await response.body?.cancel();
        return;
      }
      replace(machine, h('h3', null, 'machine'), machineView(await response.json()));
      known = true;
      element.hidden = false;
    }
    const response = await api('/api/performance');
    if (!response.ok) {
      await response.body?.cancel();
      now.hidden = true; // sampling is off: the machine's facts still stand
      return;
    }
    const body = await response.json();
    const sys = body.sys_stats?.at(-1);
    const gpus = (body.gpu_stats || []).filter((g) => g.timestamp === sys?.timestamp);
    now.hidden = false;
    replace(now, h('h3', null, 'now', sys ? h('span', {class: 'muted small'}, ` · ${sys.timestamp.slice(11, 19)} UTC`) : null), sampleView(sys, gpus));
  }
  return [element, refresh];
}
