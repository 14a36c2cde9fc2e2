// The activity history card: pages of /api/metrics/activity (swapd's SQLite store), with
// filters by model, status and time, page by page, exported as Markdown or CSV, and
// refreshed live when the event stream says a new row was written (`activity`).
import {apiJSON} from './api.js';
import {showCapture} from './capture.js';
import {download, toCSV, toMarkdown} from './export.js';
import {fmtInt, fmtMs, fmtRate, fmtTime, h, replace} from './dom.js';
import {localModels, subscribe} from './store.js';
import {card, empty, toast} from './ui.js';

const SINCE = [['', 'Any time'], ['900', 'Last 15 min'], ['3600', 'Last hour'], ['86400', 'Last 24 h'], ['604800', 'Last 7 days']];
const STATUSES = [['', 'Any status'], ['2xx', '2xx'], ['4xx', '4xx'], ['5xx', '5xx']];
const MAX_EXPORT_PAGES = 20; // of 999 rows each

// Kept across page visits, like the models page's filter.
const query = {model: '', status: '', since: '', page: 1, limit: 25};

function params(page, limit) {
  const p = new URLSearchParams({page: String(page), limit: String(limit)});
  if (query.model) p.append('model', query.model);
  if (query.status) p.append('status', query.status);
  if (query.since) p.set('start', new Date(Date.now() - Number(query.since) * 1000).toISOString().replace(/\.\d+Z$/, 'Z'));
  return p;
}

function statusCell(row) {
  const code = row.resp_status_code;
  const kind = code >= 500 ? 'bad' : code >= 400 ? 'warn' : 'ok';
  return h('td', {class: 'num', title: row.error_msg || ''}, h('span', {class: ['status-code', `status-${kind}`]}, code));
}

function rowView(row) {
  const t = row.tokens || {};
  return h(
    'tr',
    {dataset: {id: row.id, model: row.model, status: row.resp_status_code}},
    h('td', {class: 'num mono muted'}, row.id),
    h('td', {class: 'mono', title: row.timestamp}, fmtTime(row.timestamp)),
    h('td', {class: 'model-id'}, row.model || h('span', {class: 'muted'}, '—')),
    h('td', {class: 'mono small path-cell', title: row.req_path}, row.req_path),
    statusCell(row),
    h('td', {class: 'num'}, fmtInt(t.input_tokens)),
    h('td', {class: 'num'}, fmtInt(t.output_tokens)),
    h('td', {class: 'num'}, fmtInt(t.cache_tokens)),
    h('td', {class: 'num'}, fmtRate(t.prompt_per_second)),
    h('td', {class: 'num'}, fmtRate(t.tokens_per_second)),
    h('td', {class: 'num'}, fmtMs(row.duration_ms)),
    h(
      'td',
      null,
      row.has_capture
        ? h('button', {type: 'button', class: 'btn btn-small admin-only', dataset: {capture: row.capture_id}, onclick: () => openCapture(row)}, 'View')
        : h('span', {class: 'muted'}, '—'),
    ),
  );
}

function openCapture(row) {
  history.replaceState(null, '', `/ui/activity?capture=${row.capture_id}`);
  const dialog = showCapture(row.capture_id, row);
  dialog.addEventListener('close', () => history.replaceState(null, '', '/ui/activity'));
}

const COLUMNS = [['#', 'num'], ['Time'], ['Model'], ['Path'], ['Status', 'num'], ['Tokens in', 'num'], ['Tokens out', 'num'], ['Cached', 'num'], ['Prompt t/s', 'num'], ['Gen t/s', 'num'], ['Duration', 'num'], ['Capture']];

/** The card; returns [element, cleanup]. */
export function historyCard() {
  const tableBox = h('div', null, empty('Loading the history…'));
  const pager = h('div', {class: 'pager'});
  let generation = 0; // a newer fetch wins over an older one still on its way
  let refreshTimer = null;

  const select = (label, options, key) =>
    h(
      'select',
      {class: 'input', 'aria-label': label, onchange: (e) => {
        query[key] = e.target.value;
        if (key !== 'page') query.page = 1;
        load();
      }},
      options.map(([value, text]) => h('option', {value, selected: String(query[key]) === value}, text)),
    );
  const modelSelect = h('select', {class: 'input', 'aria-label': 'Model', onchange: (e) => {
    query.model = e.target.value;
    query.page = 1;
    load();
  }});
  function fillModels() {
    const ids = [...new Set([...localModels().map((m) => m.id), query.model].filter(Boolean))].sort();
    replace(modelSelect, h('option', {value: ''}, 'All models'), ids.map((id) => h('option', {value: id, selected: id === query.model}, id)));
  }
  const exportButton = (label, make, ext, type) =>
    h('button', {type: 'button', class: 'btn btn-small', dataset: {export: ext}, onclick: async (event) => {
      const button = event.currentTarget;
      button.disabled = true;
      try {
        const rows = await allRows();
        download(`swapd-activity.${ext}`, make(rows), type);
      } catch (error) {
        toast(`Export: ${error.message}`, 'error');
      } finally {
        button.disabled = false;
      }
    }}, label);

  async function load() {
    const mine = ++generation;
    try {
      const body = await apiJSON(`/api/metrics/activity?${params(query.page, query.limit)}`);
      if (mine !== generation) return;
      if (body.total_pages && query.page > body.total_pages) {
        query.page = body.total_pages; // rows aged out under us
        load();
        return;
      }
      show(body);
    } catch (error) {
      if (mine !== generation) return;
      replace(tableBox, h('p', {class: 'error-text'}, `Could not read the history: ${error.message}`));
    }
  }

  function show(body) {
    replace(
      tableBox,
      body.data.length
        ? h('div', {class: 'table-wrap'}, h('table', {class: 'table activity-table'}, h('thead', null, h('tr', null, COLUMNS.map(([t, c]) => h('th', {class: c}, t)))), h('tbody', null, body.data.map(rowView))))
        : empty(query.model || query.status || query.since ? 'No request matches the filter.' : 'No requests yet. Send one from the Playground.'),
    );
    const go = (page) => () => {
      query.page = page;
      load();
    };
    replace(
      pager,
      h('button', {type: 'button', class: 'btn btn-small', dataset: {page: 'prev'}, disabled: body.page <= 1, onclick: go(body.page - 1)}, '‹ Newer'),
      h('span', {class: 'muted small pager-text'}, `Page ${body.page} of ${Math.max(body.total_pages, 1)} · ${fmtInt(body.total)} request${body.total === 1 ? '' : 's'}`),
      h('button', {type: 'button', class: 'btn btn-small', dataset: {page: 'next'}, disabled: body.page >= body.total_pages, onclick: go(body.page + 1)}, 'Older ›'),
      select('Rows per page', [['25', '25 / page'], ['50', '50 / page'], ['100', '100 / page']], 'limit'),
    );
  }

  /** Every row the filter matches (up to MAX_EXPORT_PAGES of 999), newest first. */
  async function allRows() {
    const rows = [];
    for (let page = 1; page <= MAX_EXPORT_PAGES; page++) {
      const body = await apiJSON(`/api/metrics/activity?${params(page, 999)}`);
      rows.push(...body.data);
      if (page >= body.total_pages) break;
    }
    return rows;
  }

  fillModels();
  const tools = h(
    'div',
    {class: 'history-tools'},
    modelSelect,
    select('Status', STATUSES, 'status'),
    select('Time', SINCE, 'since'),
    exportButton('Markdown', toMarkdown, 'md', 'text/markdown'),
    exportButton('CSV', toCSV, 'csv', 'text/csv'),
  );
  const element = card('Request history', tools, tableBox, pager);
  load();
  const off = subscribe((kind) => {
    if (kind === 'models') fillModels();
    // a new row: page 1 shows it; other pages stay put under the reader's eyes
    if ((kind === 'activity' && query.page === 1) || kind === 'snapshot') {
      clearTimeout(refreshTimer);
      refreshTimer = setTimeout(load, 150);
    }
  });
  return [element, () => {
    off();
    clearTimeout(refreshTimer);
    generation++;
  }];
}
