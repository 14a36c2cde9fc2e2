// Activity: token metrics per request (live), a chart of generation speed, and the
// capture viewer for requests swapd recorded.
import {showCapture} from '../capture.js';
import {speedChart} from '../chart.js';
import {fmtInt, fmtMs, fmtRate, fmtTime, h, replace} from '../dom.js';
import {store, subscribe} from '../store.js';
import {card, empty, pageHead} from '../ui.js';

const MAX_ROWS = 200;
let model = ''; // the table's model filter

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

function row(record) {
  return h(
    'tr',
    {dataset: {id: record.id, model: record.model}},
    h('td', {class: 'num mono muted'}, record.id),
    h('td', {class: 'mono', title: record.timestamp}, fmtTime(record.timestamp)),
    h('td', {class: 'model-id'}, record.model),
    h('td', {class: 'num'}, fmtInt(record.input_tokens)),
    h('td', {class: 'num'}, fmtInt(record.output_tokens)),
    h('td', {class: 'num'}, fmtInt(record.cache_tokens)),
    h('td', {class: 'num'}, fmtRate(record.prompt_per_second)),
    h('td', {class: 'num'}, fmtRate(record.tokens_per_second)),
    h('td', {class: 'num'}, fmtMs(record.duration_ms)),
    h(
      'td',
      null,
      record.has_capture
        ? h('button', {type: 'button', class: 'btn btn-small', dataset: {capture: record.id}, onclick: () => openCapture(record)}, 'View')
        : h('span', {class: 'muted'}, '—'),
    ),
  );
}

function openCapture(record) {
  history.replaceState(null, '', `/ui/activity?capture=${record.id}`);
  const dialog = showCapture(record.id, record);
  dialog.addEventListener('close', () => history.replaceState(null, '', '/ui/activity'));
}

export function mount(root, params) {
  const statsBox = h('div');
  const chartBox = h('div');
  const tableBox = h('div');
  const select = h('select', {class: 'input', 'aria-label': 'Model', onchange: (e) => {
    model = e.target.value;
    renderTable();
  }});

  function renderTable() {
    const all = store.metrics;
    const models = [...new Set(all.map((r) => r.model))].sort();
    replace(select, h('option', {value: ''}, 'All models'), models.map((m) => h('option', {value: m, selected: m === model}, m)));
    const records = (model ? all.filter((r) => r.model === model) : all).slice(-MAX_ROWS).reverse();
    const columns = [['#', 'num'], ['Time'], ['Model'], ['Tokens in', 'num'], ['Tokens out', 'num'], ['Cached', 'num'], ['Prompt t/s', 'num'], ['Gen t/s', 'num'], ['Duration', 'num'], ['Capture']];
    replace(
      tableBox,
      records.length
        ? h('div', {class: 'table-wrap'}, h('table', {class: 'table metrics-table'}, h('thead', null, h('tr', null, columns.map(([t, c]) => h('th', {class: c}, t)))), h('tbody', null, records.map(row))))
        : empty(store.snapshot ? 'No requests yet. Send one from the Playground.' : 'Waiting for swapd…'),
    );
  }

  function render() {
    replace(statsBox, stats(store.metrics));
    replace(chartBox, speedChart(store.metrics, chartBox.clientWidth || 800));
    renderTable();
  }

  replace(
    root,
    pageHead('Activity', 'Token metrics of every request, live. Requests with a capture can be opened.'),
    statsBox,
    card('Generation speed', h('span', {class: 'muted small'}, 'tokens/s per request'), chartBox),
    card('Requests', select, tableBox),
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
    resized.disconnect();
  };
}
