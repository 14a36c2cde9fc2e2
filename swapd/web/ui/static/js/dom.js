// Tiny DOM helpers: build elements with plain function calls, no framework.
//
//   h('button', {class: 'btn', onclick: go, disabled: busy}, 'Load')
//
// Children may be strings, numbers, nodes, arrays of them, or null/false/undefined
// (skipped). Text always goes in as text nodes: nothing here ever parses HTML, so log
// lines and model output cannot inject markup.

const SVG_NS = 'http://www.w3.org/2000/svg';
const PROPS = new Set(['value', 'checked', 'disabled', 'selected', 'hidden', 'open', 'indeterminate']);

export function h(tag, props = null, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, children);
  return el;
}

export function svg(tag, attrs = null, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value != null && value !== false) el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function setProps(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'class') {
      el.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : value || '';
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key === 'style') {
      Object.assign(el.style, value); // CSSOM, allowed by the page's CSP
    } else if (PROPS.has(key)) {
      el[key] = value;
    } else if (value != null && value !== false) {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
}

export function append(el, children) {
  for (const child of children) {
    if (child == null || child === false || child === true) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replace everything inside `el` with `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// --- formatting ------------------------------------------------------------------------

export function fmtInt(n) {
  return n == null || n < 0 ? '—' : Math.round(n).toLocaleString('en-US');
}

export function fmtRate(n) {
  if (n == null || n < 0) return '—';
  return n >= 100 ? n.toFixed(0) : n.toFixed(1);
}

export function fmtMs(ms) {
  if (ms == null || ms < 0) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

/** 0:42, 4:05, 1:02:03 */
export function fmtClock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const hours = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60));
  const ss = String(s % 60).padStart(2, '0');
  return hours ? `${hours}:${mm.padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
}

/** 45s, 5m, 1h 30m */
export function fmtSpan(seconds) {
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return seconds % 60 ? `${Math.floor(seconds / 60)}m ${seconds % 60}s` : `${seconds / 60}m`;
  const m = Math.floor((seconds % 3600) / 60);
  return m ? `${Math.floor(seconds / 3600)}h ${m}m` : `${seconds / 3600}h`;
}

export function fmtTime(value) {
  const date = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value ?? '');
  return date.toLocaleTimeString([], {hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false});
}

export function fmtDateTime(epochSeconds) {
  if (epochSeconds == null) return '—';
  const date = new Date(epochSeconds * 1000);
  return `${date.toLocaleDateString()} ${fmtTime(epochSeconds)}`;
}

export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(1)} GiB`;
}

/** A stable colour for a name (chart series, legend). */
export function colourFor(name) {
  const palette = ['#3b82f6', '#10b981', '#f59e0b', '#ef4444', '#8b5cf6', '#06b6d4', '#ec4899', '#84cc16'];
  let hash = 0;
  for (const ch of String(name)) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return palette[hash % palette.length];
}
