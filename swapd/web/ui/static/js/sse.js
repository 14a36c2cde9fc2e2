// Server-sent events without EventSource (which cannot send an Authorization header),
// and long-lived text streams that come back after a drop.
import {api, errorMessage, textChunks} from './api.js';

/**
 * An SSE parser (the WHATWG rules): feed it text in any chunking, it calls
 * `onEvent({event, data, id})` once per complete event. Comments (`: keep-alive`) are
 * skipped; lines end in \n, \r\n or \r.
 */
export class SSEParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = '';
    this.reset();
  }

  reset() {
    this.event = '';
    this.data = [];
    this.id = '';
  }

  feed(text) {
    this.buffer += text;
    for (;;) {
      const match = /\r\n|\n|\r/.exec(this.buffer);
      if (!match) return;
      // A lone \r at the very end may be the first half of \r\n: wait for the next chunk.
      if (match[0] === '\r' && match.index === this.buffer.length - 1) return;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      this.line(line);
    }
  }

  line(line) {
    if (line === '') {
      if (this.data.length) this.onEvent({event: this.event || 'message', data: this.data.join('\n'), id: this.id});
      this.reset();
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.event = value;
    else if (field === 'id') this.id = value;
  }
}

const FIRST_DELAY = 500;
const MAX_DELAY = 15000;

/**
 * Keep a GET text stream open: fetch `path` (with the API key), hand every chunk to
 * `onText`, and when the stream ends or fails, reconnect after a back-off (0.5 s,
 * doubling up to 15 s; back to 0.5 s once a connection delivered data).
 * `onOpen()` runs on every (re)connection, before its first chunk, so a view can drop
 * what the previous connection showed (swapd replays the history). `onStatus(s)` gets
 * 'connecting', 'open', 'retrying', or ('failed', message) after a 4xx answer (then it stops).
 * Returns `{close()}`.
 */
export function openStream(path, {onOpen = () => {}, onText, onStatus = () => {}}) {
  const controller = new AbortController();
  let delay = FIRST_DELAY;

  async function run() {
    while (!controller.signal.aborted) {
      onStatus('connecting');
      try {
        const response = await api(path, {signal: controller.signal, headers: {accept: 'text/event-stream, text/plain'}});
        if (response.status >= 400 && response.status < 500 && response.status !== 429) {
          onStatus('failed', await errorMessage(response)); // asking again would not help
          return;
        }
        if (!response.ok) throw new Error(`${response.status}`);
        onStatus('open');
        onOpen();
        for await (const chunk of textChunks(response)) {
          delay = FIRST_DELAY;
          onText(chunk);
        }
      } catch {
        if (controller.signal.aborted) return;
      }
      if (controller.signal.aborted) return;
      onStatus('retrying');
      await sleep(delay, controller.signal);
      delay = Math.min(delay * 2, MAX_DELAY);
    }
  }

  run();
  return {close: () => controller.abort()};
}

/** Like openStream, for SSE: `onEvent({event, data})` per event; a new parser per connection. */
export function openEventStream(path, {onOpen = () => {}, onEvent, onStatus}) {
  let parser = null;
  return openStream(path, {
    onStatus,
    onOpen: () => {
      parser = new SSEParser(onEvent);
      onOpen();
    },
    onText: (text) => parser.feed(text),
  });
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    }, {once: true});
  });
}
