// Exporting activity rows as Markdown or CSV, in the browser, from rows already fetched.
//
// Both formats carry the same columns. CSV quotes every field that needs it (RFC 4180) and
// defuses a leading =, +, - or @ so a spreadsheet never runs a cell as a formula; Markdown
// escapes the pipes and line breaks that would break its table.

export const COLUMNS = [
  ['id', (r) => r.id],
  ['time', (r) => r.timestamp],
  ['model', (r) => r.model],
  ['method', (r) => r.method ?? ''],
  ['path', (r) => r.req_path],
  ['status', (r) => r.resp_status_code],
  ['input_tokens', (r) => r.tokens?.input_tokens],
  ['output_tokens', (r) => r.tokens?.output_tokens],
  ['cache_tokens', (r) => r.tokens?.cache_tokens],
  ['prompt_per_second', (r) => r.tokens?.prompt_per_second],
  ['tokens_per_second', (r) => r.tokens?.tokens_per_second],
  ['duration_ms', (r) => r.duration_ms],
  ['error', (r) => r.error_msg ?? ''],
];

function text(value) {
  return value == null ? '' : String(value);
}

function csvCell(value) {
  let cell = text(value);
  if (typeof value === 'string' && /^[=+\-@\t\r]/.test(cell)) cell = `'${cell}`;
  return /[",\r\n]/.test(cell) ? `"${cell.replace(/"/g, '""')}"` : cell;
}

export function toCSV(rows) {
  const lines = [COLUMNS.map(([name]) => name).join(',')];
  for (const row of rows) lines.push(COLUMNS.map(([, get]) => csvCell(get(row))).join(','));
  return `${lines.join('\r\n')}\r\n`;
}

function mdCell(value) {
  return text(value).replace(/\\/g, '\\\\').replace(/\|/g, '\\|').replace(/\r?\n|\r/g, '<br>');
}

export function toMarkdown(rows) {
  const head = `| ${COLUMNS.map(([name]) => name).join(' | ')} |`;
  const rule = `| ${COLUMNS.map(() => '---').join(' | ')} |`;
  const body = rows.map((row) => `| ${COLUMNS.map(([, get]) => mdCell(get(row))).join(' | ')} |`);
  return `${[head, rule, ...body].join('\n')}\n`;
}

/** Offer `content` as a file download named `name`. */
export function download(name, content, type) {
  const url = URL.createObjectURL(new Blob([content], {type}));
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
