// A small hand-drawn SVG line chart: generation speed (tokens/s) per request, one line
// per model, newest on the right.
import {h, svg} from './dom.js';

const PALETTE = ['#3b82f6', '#10b981', '#f59e0b', '#ef4444', '#8b5cf6', '#06b6d4', '#ec4899', '#84cc16'];
const H = 220;
const PAD = {left: 44, right: 12, top: 12, bottom: 24};

export function seriesColours(models) {
  return new Map([...new Set(models)].sort().map((m, i) => [m, PALETTE[i % PALETTE.length]]));
}

/** A tidy upper bound for the y axis: 1, 2 or 5 times a power of ten. */
function niceMax(value) {
  if (value <= 0) return 10;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 4, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

/** `records`: token-metrics records (oldest first); the last `limit` with a speed are drawn
 * `width` pixels wide (the chart is redrawn when its box is resized). */
export function speedChart(records, width = 800, limit = 120) {
  const W = Math.max(320, Math.round(width));
  const points = records.filter((r) => r.tokens_per_second > 0).slice(-limit);
  if (points.length === 0) return h('div', {class: 'chart-empty muted'}, 'No generation speeds yet: they appear as requests finish.');
  const colours = seriesColours(points.map((p) => p.model));
  const top = niceMax(Math.max(...points.map((p) => p.tokens_per_second)));
  const x = (i) => PAD.left + (points.length === 1 ? (W - PAD.left - PAD.right) / 2 : (i * (W - PAD.left - PAD.right)) / (points.length - 1));
  const y = (v) => PAD.top + (1 - v / top) * (H - PAD.top - PAD.bottom);

  const grid = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const value = top * f;
    return svg(
      'g',
      {class: 'chart-grid'},
      svg('line', {x1: PAD.left, x2: W - PAD.right, y1: y(value), y2: y(value)}),
      svg('text', {x: PAD.left - 6, y: y(value) + 4, 'text-anchor': 'end'}, String(Number(value.toFixed(2)))),
    );
  });

  const series = [...colours].map(([model, colour]) => {
    const mine = points.map((p, i) => [p, i]).filter(([p]) => p.model === model);
    const path = mine.map(([p, i]) => `${x(i).toFixed(1)},${y(p.tokens_per_second).toFixed(1)}`).join(' ');
    return svg(
      'g',
      {class: 'chart-series', 'data-model': model},
      mine.length > 1 ? svg('polyline', {points: path, fill: 'none', stroke: colour, 'stroke-width': 2, 'stroke-linejoin': 'round'}) : null,
      mine.map(([p, i]) =>
        svg('circle', {cx: x(i), cy: y(p.tokens_per_second), r: 3.5, fill: colour}, svg('title', null, `#${p.id} ${model}: ${p.tokens_per_second.toFixed(1)} tokens/s`)),
      ),
    );
  });

  const first = points[0];
  const last = points[points.length - 1];
  const axis = svg(
    'g',
    {class: 'chart-axis'},
    svg('line', {x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom}),
    svg('text', {x: PAD.left, y: H - 6}, `#${first.id}`),
    points.length > 1 ? svg('text', {x: W - PAD.right, y: H - 6, 'text-anchor': 'end'}, `#${last.id}`) : null,
  );

  return h(
    'div',
    {class: 'chart'},
    svg('svg', {viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': 'Generation speed per request, tokens per second', class: 'chart-svg'}, grid, axis, series),
    h('div', {class: 'legend'}, [...colours].map(([model, colour]) => h('span', {class: 'legend-item'}, h('span', {class: 'swatch', style: {background: colour}}), model))),
  );
}
