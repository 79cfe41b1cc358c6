// Pure plotting maths and drawing for the Learned Schedule node: no DOM, no ComfyUI.
// Unit-tested by web/tests/schedule_plot.test.mjs with Node's built-in test runner.

/** Linear map from `domain` to `range`, with `.invert`. */
export function linearScale([d0, d1], [r0, r1]) {
  const span = d1 - d0 || 1;
  const f = (v) => r0 + ((v - d0) / span) * (r1 - r0);
  f.invert = (p) => d0 + ((p - r0) / (r1 - r0 || 1)) * span;
  return f;
}

/** "Nice" tick values (1, 2 or 5 times a power of ten) covering [min, max]. */
export function niceTicks(min, max, count = 5) {
  if (!(max > min)) return [min];
  const raw = (max - min) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks = [];
  for (let v = Math.floor(min / step) * step; v <= max + step * 1e-9; v += step) {
    if (v >= min - step * 1e-9) ticks.push(Number(v.toFixed(12)));
  }
  return ticks;
}

/** Gaussian KDE of `values` evaluated on `grid` (Silverman bandwidth, floor 0.02). */
export function kde(values, grid, bandwidth) {
  const n = values.length;
  if (!n) return grid.map(() => 0);
  let bw = bandwidth;
  if (bw === undefined) {
    const mean = values.reduce((a, b) => a + b, 0) / n;
    const sd = n > 1 ? Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1)) : 0.1;
    bw = Math.max(1.06 * sd * n ** -0.2, 0.02);
  }
  const norm = 1 / (n * bw * Math.sqrt(2 * Math.PI));
  return grid.map((g) => values.reduce((acc, v) => acc + Math.exp(-0.5 * ((g - v) / bw) ** 2), 0) * norm);
}

/** Pixel points of a schedule: x = step index, y = sigma. */
export function schedulePath(sigmas, xScale, yScale) {
  return sigmas.map((s, i) => [xScale(i), yScale(s)]);
}

/** Plot rectangle leaving room for axes (left/bottom) and a density strip on the right. */
export function layout(width, height, { padding = 8 } = {}) {
  const strip = Math.max(18, Math.round(width * 0.14));
  return {
    left: padding + 34,
    top: padding + 4,
    right: width - padding - strip - 6,
    bottom: height - padding - 22,
    stripLeft: width - padding - strip,
    stripRight: width - padding,
  };
}

/** Colours with good contrast on ComfyUI's dark and light themes. */
export function themeColors(isDark) {
  return isDark
    ? { background: "#1e1e1e", axis: "#9ca3af", grid: "#374151", text: "#e5e7eb",
        learned: "#3b82f6", default: "#f59e0b", density: "rgba(59,130,246,0.35)" }
    : { background: "#ffffff", axis: "#4b5563", grid: "#e5e7eb", text: "#111827",
        learned: "#2563eb", default: "#d97706", density: "rgba(37,99,235,0.25)" };
}

export const PLACEHOLDER = "run the graph to see the schedule";

function validCurve(v) {
  return Array.isArray(v) && v.length >= 2 && v.every((x) => Number.isFinite(x));
}

function polyline(ctx, points) {
  ctx.beginPath();
  points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  ctx.stroke();
}

/**
 * Draw the schedule plot on a 2D context (or any object with the same methods).
 * payload: { sigmas, default_sigmas?, label?, default_label? } or null for the placeholder.
 */
export function drawSchedule(ctx, width, height, payload, isDark) {
  const c = themeColors(isDark);
  ctx.save();
  ctx.fillStyle = c.background;
  ctx.fillRect(0, 0, width, height);
  ctx.font = "11px sans-serif";
  if (!payload || !validCurve(payload.sigmas)) {
    ctx.fillStyle = c.text;
    const w = ctx.measureText(PLACEHOLDER).width || 0;
    ctx.fillText(PLACEHOLDER, Math.max(4, (width - w) / 2), height / 2);
    ctx.restore();
    return;
  }
  const learned = payload.sigmas;
  const other = validCurve(payload.default_sigmas) ? payload.default_sigmas : null;
  const box = layout(width, height);
  const steps = Math.max(learned.length, other ? other.length : 0) - 1;
  const top = Math.max(...learned, ...(other || [0]), 1e-9);
  const x = linearScale([0, steps], [box.left, box.right]);
  const y = linearScale([0, top], [box.bottom, box.top]);

  // grid and axes with ticks
  ctx.strokeStyle = c.grid;
  ctx.lineWidth = 1;
  ctx.fillStyle = c.text;
  for (const t of niceTicks(0, top, 4)) {
    polyline(ctx, [[box.left, y(t)], [box.right, y(t)]]);
    ctx.fillText(String(+t.toFixed(3)), 2, y(t) + 4);
  }
  for (const t of niceTicks(0, steps, Math.min(steps, 6)).filter(Number.isInteger)) {
    ctx.fillText(String(t), x(t) - 3, box.bottom + 14);
  }
  ctx.strokeStyle = c.axis;
  polyline(ctx, [[box.left, box.top], [box.left, box.bottom], [box.right, box.bottom]]);

  // default schedule dashed, learned solid with markers
  if (other) {
    ctx.strokeStyle = c.default;
    ctx.lineWidth = 1.5;
    ctx.setLineDash([5, 4]);
    polyline(ctx, schedulePath(other, linearScale([0, other.length - 1], [box.left, box.right]), y));
    ctx.setLineDash([]);
  }
  ctx.strokeStyle = c.learned;
  ctx.fillStyle = c.learned;
  ctx.lineWidth = 2;
  const pts = schedulePath(learned, linearScale([0, learned.length - 1], [box.left, box.right]), y);
  polyline(ctx, pts);
  for (const [px, py] of pts) {
    ctx.beginPath();
    ctx.arc(px, py, 2.5, 0, 2 * Math.PI);
    ctx.fill();
  }

  // density strip of the learned sigmas along the y axis (as in the paper's figure)
  const grid = Array.from({ length: 64 }, (_, i) => (top * i) / 63);
  const dens = kde(learned.slice(0, -1).map((s) => s / top), grid.map((g) => g / top));
  const dmax = Math.max(...dens, 1e-9);
  const sx = linearScale([0, dmax], [box.stripLeft, box.stripRight]);
  ctx.fillStyle = c.density;
  ctx.beginPath();
  ctx.moveTo(box.stripLeft, y(0));
  grid.forEach((g, i) => ctx.lineTo(sx(dens[i]), y(g)));
  ctx.lineTo(box.stripLeft, y(top));
  ctx.fill();

  // legend
  ctx.font = "10px sans-serif";
  ctx.fillStyle = c.learned;
  ctx.fillText(payload.label || "learned", box.left + 6, box.top + 10);
  if (other) {
    ctx.fillStyle = c.default;
    ctx.fillText(`- - ${payload.default_label || "default"}`, box.left + 6, box.top + 22);
  }
  ctx.restore();
}
