// Small shared widgets: state badges, spinners, toasts, cards, empty states.
import {h} from './dom.js';

// State names as llama-swap sends them, and how the UI words them.
const STATE_LABELS = {
  sleepPending: 'going to sleep',
  asleep: 'asleep',
};
const BUSY_STATES = new Set(['starting', 'stopping', 'sleepPending', 'waking']);

export function stateBadge(state) {
  const name = state || 'unknown';
  return h(
    'span',
    {class: ['badge', `state-${name}`], dataset: {state: name}},
    BUSY_STATES.has(name) ? h('span', {class: 'badge-pulse', 'aria-hidden': 'true'}) : null,
    STATE_LABELS[name] || name,
  );
}

export function spinner(label = '') {
  return h('span', {class: 'spinner', role: 'status', 'aria-label': label || 'working'});
}

export function card(title, actions, ...body) {
  return h(
    'section',
    {class: 'card'},
    title || actions ? h('header', {class: 'card-head'}, h('h2', null, title), h('div', {class: 'card-actions'}, actions)) : null,
    body,
  );
}

export function empty(text) {
  return h('div', {class: 'empty'}, text);
}

export function pageHead(title, subtitle, ...extra) {
  return h('div', {class: 'page-head'}, h('div', null, h('h1', null, title), subtitle ? h('p', {class: 'muted'}, subtitle) : null), h('div', {class: 'page-tools'}, extra));
}

/** A message that fades after a few seconds (errors stay a little longer). */
export function toast(message, kind = 'info') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const el = h('div', {class: ['toast', `toast-${kind}`], role: kind === 'error' ? 'alert' : 'status'}, message);
  el.addEventListener('click', () => el.remove());
  box.append(el);
  setTimeout(() => el.remove(), kind === 'error' ? 8000 : 4000);
}

/** A modal question with Cancel and `confirmLabel`; resolves true when confirmed. Escape,
 * Cancel and a click outside all say no. */
export function confirmDialog(title, message, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = h(
      'dialog',
      {class: 'confirm-dialog', 'aria-labelledby': 'confirm-title'},
      h(
        'form',
        {method: 'dialog'},
        h('h2', {id: 'confirm-title'}, title),
        h('p', null, message),
        h(
          'div',
          {class: 'dialog-actions'},
          h('button', {type: 'submit', class: 'btn', value: 'cancel', autofocus: true}, 'Cancel'),
          h('button', {type: 'submit', class: 'btn btn-danger', value: 'confirm'}, confirmLabel),
        ),
      ),
    );
    dialog.addEventListener('click', (event) => event.target === dialog && dialog.close('cancel'));
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(dialog.returnValue === 'confirm');
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** A loading model's progress (a `loadProgress` reading): a bar, the stage and the time
 * left. A reading from elapsed time alone (`isEstimate`) gets a paler bar and a "~". */
export function progressBar(reading) {
  const percent = Math.max(0, Math.min(100, Math.round(reading.percent ?? reading.fraction * 100)));
  const eta = reading.eta == null ? '' : ` · about ${Math.max(1, Math.round(reading.eta))}s left`;
  const label = reading.label || reading.stage || 'loading';
  return h(
    'div',
    {class: ['progress', reading.isEstimate && 'progress-estimate'], dataset: {model: reading.model, stage: reading.stage || ''}},
    h(
      'div',
      {class: 'progress-track', role: 'progressbar', 'aria-label': `Loading ${reading.model}`, 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': percent},
      h('div', {class: 'progress-fill', style: {width: `${percent}%`}}),
    ),
    h('span', {class: 'progress-text'}, `${label}: ${reading.isEstimate ? '~' : ''}${percent}%${eta}`),
  );
}
