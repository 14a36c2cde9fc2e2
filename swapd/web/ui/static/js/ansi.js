// ANSI escape codes → styled spans (SGR colours and styles); every other escape is dropped.
//
//   const state = newAnsiState();
//   lineElement.append(...ansiToNodes('\x1b[31merror\x1b[0m ok', state));
//
// `state` carries the current style across calls, as a terminal would across lines.
// Colours 0-15 are CSS classes (`ansi-fg-1`, `ansi-bg-9`) so each theme picks readable
// shades; 256-colour and true-colour codes become inline CSSOM colours.

// CSI sequences (ESC [ ... final byte), OSC sequences (ESC ] ... BEL or ESC \), other ESC X.
const ESCAPE = /\x1b\[([0-9;:?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]/g;

export function newAnsiState() {
  return {fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false};
}

/** Remove every escape sequence (for filtering and copying). */
export function stripAnsi(text) {
  return text.replace(ESCAPE, '');
}

export function ansiToNodes(text, state = newAnsiState()) {
  const nodes = [];
  let last = 0;
  ESCAPE.lastIndex = 0;
  for (let match = ESCAPE.exec(text); match; match = ESCAPE.exec(text)) {
    if (match.index > last) nodes.push(styled(text.slice(last, match.index), state));
    if (match[2] === 'm') applySgr(match[1], state);
    last = ESCAPE.lastIndex;
  }
  if (last < text.length) nodes.push(styled(text.slice(last), state));
  return nodes;
}

function plain(state) {
  return state.fg == null && state.bg == null && !state.bold && !state.dim && !state.italic && !state.underline && !state.inverse;
}

function styled(text, state) {
  if (plain(state)) return document.createTextNode(text);
  const span = document.createElement('span');
  span.textContent = text;
  const classes = [];
  let fg = state.fg;
  let bg = state.bg;
  if (state.inverse) [fg, bg] = [bg ?? 'default-bg', fg ?? 'default-fg'];
  for (const [layer, colour] of [['fg', fg], ['bg', bg]]) {
    if (colour == null) continue;
    if (typeof colour === 'number') classes.push(`ansi-${layer}-${colour}`);
    else if (colour.startsWith('default')) classes.push(`ansi-${colour}`);
    else span.style[layer === 'fg' ? 'color' : 'backgroundColor'] = colour;
  }
  if (state.bold) classes.push('ansi-bold');
  if (state.dim) classes.push('ansi-dim');
  if (state.italic) classes.push('ansi-italic');
  if (state.underline) classes.push('ansi-underline');
  if (classes.length) span.className = classes.join(' ');
  return span;
}

function applySgr(params, state) {
  const codes = params === '' ? [0] : params.split(/[;:]/).map((p) => (p === '' ? 0 : Number(p)));
  for (let i = 0; i < codes.length; i++) {
    const code = codes[i];
    if (code === 0) Object.assign(state, newAnsiState());
    else if (code === 1) state.bold = true;
    else if (code === 2) state.dim = true;
    else if (code === 3) state.italic = true;
    else if (code === 4) state.underline = true;
    else if (code === 7) state.inverse = true;
    else if (code === 22) state.bold = state.dim = false;
    else if (code === 23) state.italic = false;
    else if (code === 24) state.underline = false;
    else if (code === 27) state.inverse = false;
    else if (code >= 30 && code <= 37) state.fg = code - 30;
    else if (code >= 90 && code <= 97) state.fg = code - 90 + 8;
    else if (code === 39) state.fg = null;
    else if (code >= 40 && code <= 47) state.bg = code - 40;
    else if (code >= 100 && code <= 107) state.bg = code - 100 + 8;
    else if (code === 49) state.bg = null;
    else if (code === 38 || code === 48) {
      const layer = code === 38 ? 'fg' : 'bg';
      if (codes[i + 1] === 5 && i + 2 < codes.length) {
        state[layer] = colour256(codes[i + 2]);
        i += 2;
      } else if (codes[i + 1] === 2 && i + 4 < codes.length) {
        state[layer] = `rgb(${codes[i + 2] & 255}, ${codes[i + 3] & 255}, ${codes[i + 4] & 255})`;
        i += 4;
      }
    }
  }
}

function colour256(n) {
  if (n < 16) return n; // the theme's own 16 colours
  if (n < 232) {
    const steps = [0, 95, 135, 175, 215, 255];
    const v = n - 16;
    return `rgb(${steps[Math.floor(v / 36)]}, ${steps[Math.floor(v / 6) % 6]}, ${steps[v % 6]})`;
  }
  const grey = 8 + (n - 232) * 10;
  return `rgb(${grey}, ${grey}, ${grey})`;
}
