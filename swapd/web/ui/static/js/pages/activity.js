// Activity: totals and a speed chart of the requests since swapd started (live token
// metrics), the requests in flight with Cancel, and the stored history (history.js).
import {showCapture} from '../capture.js';
import {speedChart} from '../chart.js';
import {fmtInt, fmtRate, h, replace} from '../dom.js';
import {historyCard} from '../history.js';
import {inflightCard} from '../inflight.js';
import {store, subscribe} from '../store.js';
import {card, pageHead} from '../ui.js';

function stat(label, value, hint = '') {
  return h('div', {class: 'stat', title: hint}, h('div', {class: 'stat-value'}, value), h('div', {class: 'stat-label'}, label));
}

function stats(records) {
  const sum = (key) => records.reduce((total, r) => total + Math.max(0, r[key] || 0), 0);
  const speeds = records.map((r) => r.tokens_per_second).filter((v) => v > 0);
  const average = speeds.length ? speeds.reduce((a, b) => a + b, 0) / speeds.length : -1;
  return h(
    'div',
    {class: 'stats'},
    stat('requests', fmtInt(records.length)),
    stat('tokens in', fmtInt(sum('input_tokens'))),
    stat('tokens out', fmtInt(sum('output_tokens'))),
    stat('cached tokens', fmtInt(sum('cache_tokens'))),
    stat('avg generation', speeds.length ? `${fmtRate(average)} t/s` : '—', 'mean tokens per second over requests that report it'),
  );
}

export function mount(root, params) {
  const statsBox = h('div');
  const chartBox = h('div');
  const [inflight, closeInflight] = inflightCard();
  const [requests, closeHistory] = historyCard();

  function render() {
    replace(statsBox, stats(store.metrics));
    replace(chartBox, speedChart(store.metrics, chartBox.clientWidth || 800));
  }

  replace(
    root,
    pageHead('Activity', 'Every request swapd recorded (kept across restarts), what is in flight now, and the generation speed of recent requests.'),
    statsBox,
    inflight,
    card('Generation speed', h('span', {class: 'muted small'}, 'tokens/s per request since swapd started'), chartBox),
    requests,
  );
  render();
  const off = subscribe((kind) => {
    if (kind === 'metrics' || kind === 'snapshot') render();
  });
  let width = chartBox.clientWidth;
  const resized = new ResizeObserver(() => {
    if (Math.abs(chartBox.clientWidth - width) < 8) return;
    width = chartBox.clientWidth;
    replace(chartBox, speedChart(store.metrics, width));
  });
  resized.observe(chartBox);
  const wanted = params.get('capture');
  if (wanted != null && wanted !== '') showCapture(wanted).addEventListener('close', () => history.replaceState(null, '', '/ui/activity'));
  return () => {
    off();
    closeInflight();
    closeHistory();
    resized.disconnect();
  };
}
