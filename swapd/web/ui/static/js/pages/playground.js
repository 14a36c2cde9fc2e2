// Playground: chat with any model, the reply streamed as it is generated.
//
// The request (POST /v1/chat/completions, stream: true) simply waits while swapd starts
// the model; meanwhile a spinner shows the model's state from the event stream. Reasoning
// (and sendLoadingState's progress lines, which arrive as reasoning) is shown folded
// above the answer. The conversation survives switching pages (not a reload).
import {api, errorMessage} from '../api.js';
import {fmtMs, fmtRate, h, replace} from '../dom.js';
import {SSEParser} from '../sse.js';
import {localModels, modelById, peerModels, store, subscribe} from '../store.js';
import {pageHead, progressBar, spinner, stateBadge} from '../ui.js';

const chat = {
  model: '',
  system: '',
  messages: [], // {role, content, reasoning?, pending?, error?, stats?, startedAt?}
  controller: null,
};

let redraw = null; // the mounted page's renderer, or null when another page is shown

function update() {
  if (redraw) redraw();
}

/** Read an OpenAI chat stream into `reply` as it arrives. */
async function readReply(response, reply) {
  let done = false;
  const parser = new SSEParser(({data}) => {
    if (done) return;
    if (data.trim() === '[DONE]') {
      done = true;
      return;
    }
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      return;
    }
    if (chunk.error) {
      reply.error = chunk.error.message || JSON.stringify(chunk.error);
      return;
    }
    const delta = chunk.choices?.[0]?.delta ?? {};
    if (delta.content) {
      reply.firstTokenAt ??= performance.now();
      reply.content += delta.content;
    }
    const reasoning = delta.reasoning_content ?? delta.reasoning;
    if (reasoning) reply.reasoning = (reply.reasoning || '') + reasoning;
    if (chunk.usage || chunk.timings) reply.usage = {...chunk.usage, ...chunk.timings};
    update();
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const {value, done: end} = await reader.read();
    if (end) break;
    parser.feed(value);
  }
  parser.feed('\n\n');
}

async function send(text) {
  const model = chat.model;
  chat.messages.push({role: 'user', content: text});
  const reply = {role: 'assistant', content: '', model, pending: true, startedAt: performance.now()};
  chat.messages.push(reply);
  const history = chat.messages.filter((m) => m !== reply && !m.error).map(({role, content}) => ({role, content}));
  const messages = chat.system.trim() ? [{role: 'system', content: chat.system.trim()}, ...history] : history;
  chat.controller = new AbortController();
  update();
  try {
    const response = await api('/v1/chat/completions', {
      method: 'POST',
      headers: {'content-type': 'application/json', accept: 'text/event-stream'},
      body: JSON.stringify({model, messages, stream: true}),
      signal: chat.controller.signal,
    });
    reply.responseAt = performance.now();
    update();
    if (!response.ok) {
      reply.error = await errorMessage(response);
    } else if ((response.headers.get('content-type') || '').includes('event-stream')) {
      await readReply(response, reply);
    } else {
      const body = await response.json(); // a server that ignored stream: true
      reply.content = body.choices?.[0]?.message?.content ?? '';
      reply.usage = {...body.usage, ...body.timings};
    }
  } catch (error) {
    reply.error = error.name === 'AbortError' ? 'stopped' : error.message;
  } finally {
    reply.pending = false;
    reply.finishedAt = performance.now();
    chat.controller = null;
    update();
  }
}

function replyStats(reply) {
  const parts = [];
  const usage = reply.usage || {};
  const out = usage.predicted_n ?? usage.completion_tokens;
  if (reply.firstTokenAt) parts.push(`first token after ${fmtMs(reply.firstTokenAt - reply.startedAt)}`);
  if (out != null) parts.push(`${out} tokens`);
  const speed = usage.predicted_per_second;
  if (speed > 0) parts.push(`${fmtRate(speed)} tokens/s`);
  if (reply.finishedAt) parts.push(`total ${fmtMs(reply.finishedAt - reply.startedAt)}`);
  return parts.join(' · ');
}

function waitingLine(reply) {
  const state = modelById(reply.model)?.state;
  if (reply.responseAt) return h('div', {class: 'waiting'}, spinner('generating'), ' Generating…');
  if (state && state !== 'ready') {
    const reading = store.progress.get(reply.model);
    return h(
      'div',
      {class: 'waiting'},
      spinner('loading model'),
      ` Waiting for ${reply.model} to load `,
      stateBadge(state),
      h('div', {class: 'progress-slot', dataset: {model: reply.model}}, reading ? progressBar(reading) : null),
    );
  }
  return h('div', {class: 'waiting'}, spinner('waiting'), ' Waiting for the reply…');
}

function messageView(message) {
  if (message.role === 'user') return h('div', {class: 'msg msg-user'}, h('div', {class: 'msg-body'}, message.content));
  const streaming = message.pending && message.responseAt && (message.content || message.reasoning);
  return h(
    'div',
    {class: ['msg', 'msg-assistant', message.pending && 'msg-pending'], dataset: {model: message.model}},
    h('div', {class: 'msg-meta muted small'}, message.model),
    message.reasoning
      ? h('details', {class: 'reasoning', open: message.pending && !message.content}, h('summary', null, 'Reasoning'), h('pre', null, message.reasoning))
      : null,
    message.content ? h('div', {class: 'msg-body'}, message.content, streaming ? h('span', {class: 'cursor', 'aria-hidden': 'true'}) : null) : null,
    message.pending && !message.content ? waitingLine(message) : null,
    message.error ? h('div', {class: 'error-text msg-error'}, message.error === 'stopped' ? 'Stopped.' : `Error: ${message.error}`) : null,
    !message.pending && !message.error ? h('div', {class: 'msg-stats muted small'}, replyStats(message)) : null,
  );
}

export function mount(root) {
  const select = h('select', {class: 'input', 'aria-label': 'Model', onchange: (e) => {
    chat.model = e.target.value;
    renderState();
  }});
  const state = h('span', {class: 'model-state'});
  const log = h('div', {class: 'chat-log', 'aria-live': 'polite'});
  const input = h('textarea', {class: 'input chat-input', rows: 3, placeholder: 'Message (Enter to send, Shift+Enter for a new line)', 'aria-label': 'Message'});
  const sendButton = h('button', {type: 'submit', class: 'btn btn-primary'}, 'Send');
  const stopButton = h('button', {type: 'button', class: 'btn', onclick: () => chat.controller?.abort()}, 'Stop');
  const clearButton = h('button', {type: 'button', class: 'btn btn-ghost', onclick: () => {
    chat.controller?.abort();
    chat.messages = [];
    update();
  }}, 'Clear');
  const system = h('textarea', {class: 'input', rows: 2, placeholder: 'You are a helpful assistant.', value: chat.system, 'aria-label': 'System prompt', oninput: (e) => {
    chat.system = e.target.value;
  }});

  const submit = (event) => {
    event?.preventDefault();
    const text = input.value.trim();
    if (!text || chat.controller || !chat.model) return;
    input.value = '';
    send(text);
  };
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) submit(event);
  });

  function fillModels() {
    const local = localModels().filter((m) => !m.unlisted || m.id === chat.model);
    const peers = peerModels();
    if (!chat.model && local.length) chat.model = (local.find((m) => m.state === 'ready') || local[0]).id;
    replace(
      select,
      local.length ? h('optgroup', {label: 'Local'}, local.map((m) => h('option', {value: m.id, selected: m.id === chat.model}, m.name && m.name !== m.id ? `${m.id} — ${m.name}` : m.id))) : null,
      peers.length ? h('optgroup', {label: 'Peers'}, peers.map((m) => h('option', {value: m.id, selected: m.id === chat.model}, `${m.id} (${m.peerID})`))) : null,
    );
    if (!local.length && !peers.length) select.append(h('option', {value: ''}, 'no models'));
  }

  function renderState() {
    const model = modelById(chat.model);
    replace(state, model ? stateBadge(model.state) : null);
  }

  function render() {
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    replace(log, chat.messages.length ? chat.messages.map(messageView) : h('div', {class: 'empty'}, 'Pick a model and say something. The first message loads the model if it is not running.'));
    if (atBottom) log.scrollTop = log.scrollHeight;
    const busy = Boolean(chat.controller);
    sendButton.disabled = busy;
    stopButton.hidden = !busy;
    renderState();
  }

  replace(
    root,
    pageHead('Playground', 'Chat with any model; replies stream in as they are generated.'),
    h(
      'div',
      {class: 'card chat'},
      h('div', {class: 'toolbar'}, h('label', {class: 'field-inline'}, 'Model', select), state, h('span', {class: 'spacer'}), clearButton),
      h('details', {class: 'system'}, h('summary', null, 'System prompt'), system),
      log,
      h('form', {class: 'chat-form', onsubmit: submit}, input, h('div', {class: 'chat-buttons'}, sendButton, stopButton)),
    ),
  );
  fillModels();
  redraw = render;
  render();
  input.focus();
  const off = subscribe((kind, detail) => {
    if (kind === 'models') {
      fillModels();
      render();
    } else if (kind === 'loadProgress') {
      // only the bar moves: the rest of the chat stays as it is
      for (const slot of root.querySelectorAll('.progress-slot')) {
        if (slot.dataset.model === detail.model && store.progress.has(detail.model)) replace(slot, progressBar(store.progress.get(detail.model)));
      }
    }
  });
  return () => {
    off();
    redraw = null;
  };
}
