// Talking to swapd: fetch with the API key, and asking for the key when swapd wants one.
//
// Every call goes through `api()`. A 401 opens one small form (however many calls got
// the 401 at once); the key is kept in sessionStorage (gone when the tab closes) and sent
// as `Authorization: Bearer`. Streams use fetch too (not EventSource, which cannot send
// headers), so the key works for them as well.
import {h} from './dom.js';

const STORAGE = 'swapd.apiKey';
let asking = null; // the open key form's promise, shared by every caller that got a 401
const keyListeners = new Set();

export function apiKey() {
  return sessionStorage.getItem(STORAGE) || '';
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(STORAGE, key);
  else sessionStorage.removeItem(STORAGE);
  for (const fn of keyListeners) fn(key);
}

export function onKeyChange(fn) {
  keyListeners.add(fn);
  return () => keyListeners.delete(fn);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** fetch(path) with the key; on 401, ask for a key and try again. */
export async function api(path, init = {}) {
  for (;;) {
    const used = apiKey();
    const headers = new Headers(init.headers || {});
    if (used) headers.set('Authorization', `Bearer ${used}`);
    // credentials: 'omit' keeps the browser from answering swapd's `WWW-Authenticate: Basic`
    // with its own login prompt: the key form below asks instead.
    const response = await fetch(path, {...init, headers, credentials: 'omit'});
    if (response.status !== 401) return response;
    await response.body?.cancel();
    if (apiKey() === used) await askForKey(used ? 'That key was not accepted. Try another one.' : '');
  }
}

/** api(), then the JSON body; a non-2xx answer throws ApiError with swapd's message. */
export async function apiJSON(path, init = {}) {
  const response = await api(path, init);
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  return response.json();
}

/** The message of an OpenAI-style (or any) error answer. */
export async function errorMessage(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    const error = body.error ?? body;
    return (typeof error === 'string' ? error : error.message) || `${response.status} ${response.statusText}`;
  } catch {
    return text.trim() || `${response.status} ${response.statusText}`;
  }
}

/** Yield a response body as text chunks. */
export async function* textChunks(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** Open the key form (once) and resolve when a key was entered. */
export function askForKey(message = '') {
  if (!asking) {
    asking = new Promise((resolve) => {
      const input = h('input', {type: 'password', name: 'key', autocomplete: 'current-password', required: true, placeholder: 'sk-…', 'aria-label': 'API key'});
      const dialog = h(
        'dialog',
        {class: 'key-dialog', 'aria-labelledby': 'key-title'},
        h(
          'form',
          {
            method: 'dialog',
            onsubmit: (event) => {
              event.preventDefault();
              const key = input.value.trim();
              if (!key) return;
              setApiKey(key);
              dialog.close();
              dialog.remove();
              asking = null;
              resolve(key);
            },
          },
          h('h2', {id: 'key-title'}, 'API key needed'),
          h('p', null, 'This swapd asks for an API key. It is kept in this browser tab only (sessionStorage) and sent as a Bearer token.'),
          message ? h('p', {class: 'error-text'}, message) : null,
          input,
          h('div', {class: 'dialog-actions'}, h('button', {type: 'submit', class: 'btn btn-primary'}, 'Use key')),
        ),
      );
      dialog.addEventListener('cancel', (event) => event.preventDefault()); // no way around it
      document.body.append(dialog);
      dialog.showModal();
      input.focus();
    });
  }
  return asking;
}
