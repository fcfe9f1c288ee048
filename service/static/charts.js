// A tiny line chart on a canvas: time on x, value on y, several series.
const PALETTE = ['#3558d8', '#1e9e5a', '#d98b12', '#b03ab8', '#0f9bb5', '#cf3a3a', '#6b7a12'];
const assigned = new Map();

/** A stable color per series name. */
export function colorFor(name) {
  if (!assigned.has(name)) assigned.set(name, PALETTE[assigned.size % PALETTE.length]);
  return assigned.get(name);
}

function niceMax(value, integer) {
  if (integer) return Math.max(4, Math.ceil(value / 4) * 4); // four whole-number steps
  if (value <= 0) return 1;
  const exp = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * exp).find((m) => m >= value * 1.05) || 10 * exp;
}

/**
 * @param {HTMLCanvasElement} canvas
 * @param {{label: string, color: string, width: number, points: [number, number][]}[]} series
 * @param {{integer?: boolean, seconds?: number}} options
 */
export function drawChart(canvas, series, { integer = false, seconds = 120, minSeconds = 20 } = {}) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = canvas.clientHeight || 240;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);

  const pad = { left: 44, right: 10, top: 22, bottom: 22 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  // the time axis grows with the data, from minSeconds up to seconds
  const now = Date.now();
  const oldest = Math.min(now, ...series.flatMap((s) => s.points.map(([t]) => t)));
  const span = Math.min(seconds, Math.max(minSeconds, Math.ceil((now - oldest) / 1000)));
  const from = now - span * 1000;
  const top = niceMax(Math.max(0, ...series.flatMap((s) => s.points.map(([, v]) => v))), integer);
  const x = (t) => pad.left + ((t - from) / (now - from)) * plotW;
  const y = (v) => pad.top + plotH - (v / top) * plotH;

  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = '#6b7385';
  ctx.strokeStyle = '#e2e5eb';
  ctx.lineWidth = 1;
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (let i = 0; i <= 4; i += 1) {
    const value = (top / 4) * i;
    const yy = Math.round(y(value)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad.left, yy);
    ctx.lineTo(width - pad.right, yy);
    ctx.stroke();
    ctx.fillText(integer ? String(Math.round(value)) : String(+value.toFixed(2)), pad.left - 6, yy);
  }
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  const step = span > 60 ? 30 : span > 30 ? 15 : 10;
  for (let ago = Math.floor(span / step) * step; ago >= 0; ago -= step) {
    ctx.fillText(ago ? `-${ago}s` : 'now', x(now - ago * 1000), height - pad.bottom + 6);
  }

  let legendX = pad.left;
  ctx.textAlign = 'left';
  ctx.textBaseline = 'middle';
  for (const s of series) {
    const points = s.points.filter(([t]) => t >= from);
    ctx.strokeStyle = s.color;
    ctx.lineWidth = s.width || 1.5;
    ctx.lineJoin = 'round';
    ctx.beginPath();
    points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
    ctx.stroke();
    if (points.length === 1) {
      ctx.fillStyle = s.color;
      ctx.fillRect(x(points[0][0]) - 2, y(points[0][1]) - 2, 4, 4);
    }
    ctx.fillStyle = s.color;
    ctx.fillRect(legendX, 7, 10, 3);
    ctx.fillStyle = '#1d2330';
    ctx.fillText(s.label, legendX + 14, 9);
    legendX += 22 + ctx.measureText(s.label).width;
  }
}
