// The capture viewer: one recorded exchange (GET /api/captures/<id>) made readable.
//
// Bodies arrive base64-encoded. JSON is pretty-printed; an SSE stream is shown event by
// event (each JSON payload on one line) with the text it streamed assembled below;
// anything else is shown as text, or summarised when it is binary.
import {apiJSON} from './api.js';
import {fmtBytes, h, replace} from './dom.js';
import {SSEParser} from './sse.js';
import {spinner} from './ui.js';

export function decodeBody(b64) {
  if (b64 == null) return null;
  const binary = atob(b64);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  try {
    return {bytes, text: new TextDecoder('utf-8', {fatal: true}).decode(bytes)};
  } catch {
    return {bytes, text: null};
  }
}

function headerValue(headers, name) {
  const key = Object.keys(headers || {}).find((k) => k.toLowerCase() === name);
  return key ? headers[key] : '';
}

/** The SSE events of `text`, or null when it does not read as an event stream. */
export function sseEvents(text) {
  const events = [];
  new SSEParser((e) => events.push(e)).feed(`${text}\n\n`);
  return events.length ? events : null;
}

/** The text an OpenAI/Anthropic stream delivered, pieced together from its deltas. */
export function assembled(events) {
  let content = '';
  let reasoning = '';
  for (const {data} of events) {
    let value;
    try {
      value = JSON.parse(data);
    } catch {
      continue;
    }
    const delta = value?.choices?.[0]?.delta ?? {};
    content += delta.content ?? value?.choices?.[0]?.text ?? value?.delta?.text ?? value?.content ?? '';
    reasoning += delta.reasoning_content ?? delta.reasoning ?? value?.delta?.thinking ?? '';
  }
  return {content, reasoning};
}

function bodyView(b64, headers) {
  const body = decodeBody(b64);
  if (body == null || body.bytes.length === 0) return h('p', {class: 'muted'}, 'No body.');
  const size = h('span', {class: 'muted small'}, fmtBytes(body.bytes.length));
  if (body.text == null) return h('div', null, size, h('p', {class: 'muted'}, 'Binary content, not shown.'));
  const type = headerValue(headers, 'content-type');
  const trimmed = body.text.trim();
  if (type.includes('json') || /^[[{]/.test(trimmed)) {
    try {
      return h('div', null, size, h('pre', {class: 'code'}, JSON.stringify(JSON.parse(trimmed), null, 2)));
    } catch {
      // not JSON after all: fall through to text
    }
  }
  const events = type.includes('event-stream') || /^(data|event):/m.test(trimmed) ? sseEvents(body.text) : null;
  if (events) {
    const {content, reasoning} = assembled(events);
    return h(
      'div',
      null,
      h('span', {class: 'muted small'}, `${fmtBytes(body.bytes.length)} · ${events.length} events`),
      content || reasoning
        ? h('div', {class: 'assembled'}, h('div', {class: 'label'}, 'Streamed text'), reasoning ? h('pre', {class: 'code reasoning'}, reasoning) : null, content ? h('pre', {class: 'code'}, content) : null)
        : null,
      h(
        'ol',
        {class: 'sse-events'},
        events.map((e) => {
          let shown = e.data;
          try {
            shown = JSON.stringify(JSON.parse(e.data));
          } catch {
            // [DONE] and other plain payloads
          }
          return h('li', null, e.event !== 'message' ? h('span', {class: 'tag'}, e.event) : null, h('code', null, shown));
        }),
      ),
    );
  }
  return h('div', null, size, h('pre', {class: 'code'}, body.text));
}

function headerTable(headers) {
  const entries = Object.entries(headers || {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return h('p', {class: 'muted'}, 'No headers.');
  return h('table', {class: 'table headers-table'}, h('tbody', null, entries.map(([k, v]) => h('tr', null, h('th', null, k), h('td', {class: 'mono'}, v)))));
}

/** Open a modal dialog showing capture `id`. */
export function showCapture(id, record = null) {
  const content = h('div', {class: 'capture-body'}, spinner('loading capture'), ' Loading…');
  const dialog = h(
    'dialog',
    {class: 'capture-dialog', 'aria-label': `Capture ${id}`},
    h(
      'header',
      {class: 'dialog-head'},
      h('h2', null, `Request #${id}`, record ? h('span', {class: 'muted small'}, ` · ${record.model}`) : null),
      h('button', {type: 'button', class: 'btn btn-small', onclick: () => dialog.close()}, 'Close'),
    ),
    content,
  );
  dialog.addEventListener('close', () => dialog.remove());
  dialog.addEventListener('click', (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
  document.body.append(dialog);
  dialog.showModal();
  apiJSON(`/api/captures/${encodeURIComponent(id)}`)
    .then((capture) => {
      replace(
        content,
        h('p', null, h('span', {class: 'tag'}, 'POST'), ' ', h('code', null, capture.req_path)),
        h(
          'div',
          {class: 'capture-grid'},
          h('section', {class: 'capture-side'}, h('h3', null, 'Request'), h('h4', null, 'Headers'), headerTable(capture.req_headers), h('h4', null, 'Body'), bodyView(capture.req_body, capture.req_headers)),
          h('section', {class: 'capture-side'}, h('h3', null, 'Response'), h('h4', null, 'Headers'), headerTable(capture.resp_headers), h('h4', null, 'Body'), bodyView(capture.resp_body, capture.resp_headers)),
        ),
      );
    })
    .catch((error) => replace(content, h('p', {class: 'error-text'}, `Could not load the capture: ${error.message}`)));
  return dialog;
}
