// Logs: swapd's own log, all upstream output, or one model's output, live (a key limited
// to some models: only its models' own output, key.js)
// (/logs/stream/<source>: the history, then new text as it is written), with ANSI
// colours, a filter, follow (stick to the bottom) and pause.
import {ansiToNodes, newAnsiState, stripAnsi} from '../ansi.js';
import {h, replace} from '../dom.js';
import {seesEverything} from '../key.js';
import {openStream} from '../sse.js';
import {localModels, subscribe} from '../store.js';
import {pageHead} from '../ui.js';

const MAX_LINES = 5000;

/** The lines of one stream, rendered into `pre` as they come. */
class LogView {
  constructor(pre, onChange) {
    this.pre = pre;
    this.onChange = onChange;
    this.filter = '';
    this.follow = true;
    this.paused = false;
    this.clear();
  }

  clear() {
    this.lines = []; // complete lines, raw (escapes kept)
    this.partial = ''; // text after the last newline
    this.held = ''; // text that arrived while paused
    this.state = newAnsiState(); // ANSI style after the last rendered complete line
    this.pre.replaceChildren();
    this.partialEl = null;
    this.onChange(this);
  }

  write(text) {
    if (this.paused) {
      this.held += text;
      this.onChange(this);
      return;
    }
    const pieces = (this.partial + text).split('\n');
    this.partial = pieces.pop();
    for (const line of pieces) this.add(line);
    if (this.lines.length > MAX_LINES) {
      this.lines.splice(0, this.lines.length - MAX_LINES + 1000);
      this.redraw();
    } else {
      this.drawPartial();
    }
    this.onChange(this);
    this.scroll();
  }

  add(raw) {
    this.lines.push(raw);
    this.draw(raw);
  }

  matches(raw) {
    return !this.filter || stripAnsi(raw).toLowerCase().includes(this.filter);
  }

  lineElement(raw, state) {
    // a carriage return redraws the line (progress bars): keep what was drawn last
    const text = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const shown = text.slice(text.lastIndexOf('\r') + 1);
    const level = /^(?:\S+ )?\[(WARN|ERROR)\]/.exec(shown)?.[1]; // swapd's own warnings
    return h('div', {class: ['log-line', level && `log-${level.toLowerCase()}`]}, ansiToNodes(shown, state), shown === '' ? '\u200b' : null);
  }

  draw(raw) {
    const el = this.lineElement(raw, this.state);
    if (this.matches(raw)) this.pre.insertBefore(el, this.partialEl);
  }

  drawPartial() {
    if (this.partialEl) this.partialEl.remove();
    this.partialEl = null;
    if (this.partial && this.matches(this.partial)) {
      this.partialEl = this.lineElement(this.partial, {...this.state});
      this.pre.append(this.partialEl);
    }
  }

  redraw() {
    this.pre.replaceChildren();
    this.partialEl = null;
    this.state = newAnsiState();
    for (const raw of this.lines) this.draw(raw);
    this.drawPartial();
    this.scroll();
  }

  setFilter(text) {
    this.filter = text.trim().toLowerCase();
    this.redraw();
    this.onChange(this);
  }

  setPaused(paused) {
    this.paused = paused;
    if (!paused && this.held) {
      const held = this.held;
      this.held = '';
      this.write(held);
    }
    this.onChange(this);
  }

  scroll() {
    if (this.follow) this.pre.scrollTop = this.pre.scrollHeight;
  }

  shownCount() {
    return this.pre.querySelectorAll('.log-line').length;
  }
}

const SOURCES = [
  ['proxy', 'swapd (proxy)'],
  ['upstream', 'all models (upstream)'],
];

let source = '';

export function mount(root, params) {
  // swapd's own and the combined logs speak of every model: only for keys that see them all
  const sources = seesEverything() ? SOURCES : [];
  source = params.get('source') || source || (sources.length ? 'proxy' : localModels()[0]?.id || '');
  const pre = h('pre', {class: 'log', tabindex: '0', 'aria-label': 'Log output', 'aria-live': 'off'});
  const status = h('span', {class: 'muted small log-status'});
  const conn = h('span', {class: 'log-conn small'});
  const view = new LogView(pre, (v) => {
    const held = v.held ? ` · paused, ${v.held.split('\n').length - 1} new lines held` : '';
    status.textContent = v.filter ? `${v.shownCount()} of ${v.lines.length} lines${held}` : `${v.lines.length} lines${held}`;
  });

  const select = h('select', {class: 'input', 'aria-label': 'Log source', onchange: (e) => switchTo(e.target.value)});
  const fillSources = () => {
    const ids = localModels().map((m) => m.id);
    if (source && !ids.includes(source) && !sources.some(([id]) => id === source)) ids.push(source);
    replace(
      select,
      sources.length ? h('optgroup', {label: 'swapd'}, sources.map(([id, label]) => h('option', {value: id, selected: id === source}, label))) : null,
      ids.length ? h('optgroup', {label: 'One model'}, ids.map((id) => h('option', {value: id, selected: id === source}, id))) : null,
    );
  };
  fillSources();

  const follow = h('input', {type: 'checkbox', checked: true, onchange: (e) => {
    view.follow = e.target.checked;
    view.scroll();
  }});
  const pause = h('button', {type: 'button', class: 'btn', 'aria-pressed': 'false', onclick: () => {
    view.setPaused(!view.paused);
    pause.textContent = view.paused ? 'Resume' : 'Pause';
    pause.setAttribute('aria-pressed', String(view.paused));
  }}, 'Pause');
  const filterInput = h('input', {type: 'search', class: 'input', placeholder: 'Filter lines', 'aria-label': 'Filter lines', oninput: (e) => view.setFilter(e.target.value)});

  pre.addEventListener('scroll', () => {
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    if (atBottom !== view.follow) {
      view.follow = atBottom;
      follow.checked = atBottom;
    }
  });

  replace(
    root,
    pageHead('Logs', 'Live output; the history first, then new lines as they are written.'),
    h(
      'div',
      {class: 'card log-card'},
      h(
        'div',
        {class: 'toolbar'},
        select,
        filterInput,
        h('label', {class: 'check'}, follow, 'Follow'),
        pause,
        h('button', {type: 'button', class: 'btn', onclick: () => view.clear()}, 'Clear'),
        h('span', {class: 'spacer'}),
        status,
        conn,
      ),
      pre,
    ),
  );

  let stream = null;
  function switchTo(name) {
    source = name;
    history.replaceState(null, '', `/ui/logs?source=${encodeURIComponent(name)}`);
    if (stream) stream.close();
    view.clear();
    stream = openStream(`/logs/stream/${encodeURIComponent(name).replace(/%2F/g, '/')}`, {
      onOpen: () => view.clear(), // a reconnection replays the history
      onText: (text) => view.write(text),
      onStatus: (s, message) => {
        conn.dataset.state = s;
        conn.textContent = {open: '● live', connecting: '○ connecting', retrying: '○ reconnecting'}[s] || s;
        if (message) view.write(`\x1b[31m${message}\x1b[0m\n`);
      },
    });
  }
  if (source) switchTo(source);

  const off = subscribe((kind) => {
    if (kind !== 'models') return;
    if (!source && localModels().length) switchTo(localModels()[0].id); // the key's first model
    fillSources();
  });
  return () => {
    off();
    stream?.close();
  };
}
