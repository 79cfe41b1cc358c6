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

export const LINE_HEIGHT = 13;

/**
 * Where everything goes, all inside [0, width] x [0, height]: a header band (`headerLines`
 * info lines, then one legend line) above the axes, so the legend never covers a curve; the
 * plot box with room for tick labels and axis titles; a density strip on the right.
 */
export function layout(width, height, { headerLines = 0, padding = 6 } = {}) {
  const strip = Math.max(14, Math.round(width * 0.1));
  const headerTop = padding;
  const legendY = headerTop + headerLines * LINE_HEIGHT;
  const top = legendY + LINE_HEIGHT + 8;
  const box = {
    headerTop,
    infoY: headerTop,
    legendY,
    left: padding + 44, // y axis title + tick labels
    top,
    right: width - padding - strip - 6,
    bottom: height - padding - 30, // x tick labels + x axis title
    stripLeft: width - padding - strip,
    stripRight: width - padding,
    width,
    height,
    padding,
  };
  box.xTitleY = height - padding - 3;
  box.yTitleX = padding + 9;
  return box;
}

/** Backing-store size of a canvas shown at `cssW` x `cssH` CSS pixels under a canvas zoom and
 *  a device pixel ratio: one backing pixel per screen pixel (sharp at any zoom), capped. */
export function backingSize(cssW, cssH, zoom = 1, dpr = 1, maxSide = 4096) {
  let scale = Math.max(0.25, (Number(zoom) || 1) * (Number(dpr) || 1));
  scale = Math.min(scale, maxSide / Math.max(1, cssW), maxSide / Math.max(1, cssH));
  return { width: Math.max(1, Math.round(cssW * scale)), height: Math.max(1, Math.round(cssH * scale)), scale };
}

const DARK = {
  background: "#1e1e1e", axis: "#9ca3af", grid: "#374151", text: "#e5e7eb", muted: "#9ca3af",
  learned: "#3b82f6", default: "#f59e0b", density: "rgba(59,130,246,0.35)",
};
const LIGHT = {
  background: "#ffffff", axis: "#4b5563", grid: "#e5e7eb", text: "#111827", muted: "#4b5563",
  learned: "#2563eb", default: "#d97706", density: "rgba(37,99,235,0.25)",
};

/** Colours with good contrast on ComfyUI's dark and light themes. */
export function themeColors(isDark) {
  return { ...(isDark ? DARK : LIGHT) };
}

/** Parse "#rgb", "#rrggbb" or "rgb(a)(r, g, b...)" into [r, g, b], or null. */
export function parseColor(text) {
  if (typeof text !== "string") return null;
  const s = text.trim();
  let m = s.match(/^#([0-9a-f]{3})$/i);
  if (m) return [...m[1]].map((c) => parseInt(c + c, 16));
  m = s.match(/^#([0-9a-f]{6})([0-9a-f]{2})?$/i);
  if (m) return [0, 2, 4].map((i) => parseInt(m[1].slice(i, i + 2), 16));
  m = s.match(/^rgba?\(\s*([\d.]+)[\s,]+([\d.]+)[\s,]+([\d.]+)/i);
  if (m) return [m[1], m[2], m[3]].map(Number);
  return null;
}

export function luminance([r, g, b]) {
  return 0.299 * r + 0.587 * g + 0.114 * b;
}

/**
 * Colours that follow the active palette: `vars` maps CSS variable names of the frontend
 * (`--comfy-input-bg`, `--input-text`, `--descrip-text`, `--border-color`) to their values;
 * the curves use the dark or light set, chosen by the background's brightness.
 */
export function paletteColors(vars = {}) {
  const bg = parseColor(vars["--comfy-input-bg"]) || parseColor(vars["--comfy-menu-bg"]);
  const isDark = bg ? luminance(bg) < 128 : true;
  const c = themeColors(isDark);
  if (bg) c.background = vars["--comfy-input-bg"]?.trim() || vars["--comfy-menu-bg"].trim();
  if (parseColor(vars["--input-text"])) c.text = vars["--input-text"].trim();
  if (parseColor(vars["--descrip-text"])) c.muted = vars["--descrip-text"].trim();
  if (parseColor(vars["--border-color"])) c.grid = vars["--border-color"].trim();
  c.isDark = isDark;
  return c;
}

export const PLACEHOLDER = "run the graph to see the schedule";

/** The lines shown above the plot: policy name, family, trained step count, resampling, a
 * calibration's summary. */
export function infoLines(payload) {
  if (!payload) return [];
  const head = [];
  if (payload.policy) head.push(payload.policy);
  if (payload.family) head.push(payload.family);
  if (Number.isFinite(payload.trained_steps)) head.push(`trained for ${payload.trained_steps} steps`);
  const lines = head.length ? [head.join(" · ")] : [];
  if (payload.resampling) lines.push(payload.resampling);
  if (payload.summary) lines.push(payload.summary);
  return lines;
}

/** Legend entries: the learned curve first (solid), then the default (dashed) if present. */
export function legendItems(payload) {
  if (!payload) return [];
  const items = [{ kind: "learned", label: payload.label || "learned" }];
  if (validCurve(payload.default_sigmas)) {
    items.push({ kind: "default", label: payload.default_label || "default" });
  }
  return items;
}

export function validCurve(v) {
  return Array.isArray(v) && v.length >= 2 && v.every((x) => Number.isFinite(x));
}

/** `text` cut to fit `maxWidth` (with an ellipsis), measured by `measure(text) -> width`. */
export function fitText(text, maxWidth, measure) {
  if (measure(text) <= maxWidth) return text;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (measure(`${text.slice(0, mid)}…`) <= maxWidth) lo = mid;
    else hi = mid - 1;
  }
  return lo > 0 ? `${text.slice(0, lo)}…` : "";
}

function polyline(ctx, points) {
  ctx.beginPath();
  points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  ctx.stroke();
}

/**
 * Draw the schedule plot on a 2D context (or any object with the same methods), in a
 * `width` x `height` CSS-pixel area. `payload`: { sigmas, default_sigmas?, label?,
 * default_label?, policy?, family?, trained_steps?, resampling? } or null for the placeholder.
 * `colors`: from themeColors / paletteColors (a boolean picks the dark or light set).
 */
export function drawSchedule(ctx, width, height, payload, colors) {
  const c = typeof colors === "object" && colors ? colors : themeColors(colors !== false);
  const measure = (t) => ctx.measureText(t)?.width ?? t.length * 6;
  ctx.save();
  ctx.beginPath();
  ctx.rect(0, 0, width, height);
  ctx.clip();
  ctx.fillStyle = c.background;
  ctx.fillRect(0, 0, width, height);
  ctx.font = "11px sans-serif";
  ctx.textBaseline = "alphabetic";
  if (!payload || !validCurve(payload.sigmas)) {
    ctx.fillStyle = c.text;
    const text = fitText(PLACEHOLDER, width - 8, measure);
    ctx.fillText(text, Math.max(4, (width - measure(text)) / 2), height / 2);
    ctx.restore();
    return null;
  }
  const learned = payload.sigmas;
  const other = validCurve(payload.default_sigmas) ? payload.default_sigmas : null;
  const info = infoLines(payload);
  const box = layout(width, height, { headerLines: info.length });
  const steps = Math.max(learned.length, other ? other.length : 0) - 1;
  const itemMax = Array.isArray(payload.items)
    ? Math.max(0, ...payload.items.filter(validCurve).map((v) => Math.max(...v))) : 0;
  const top = Math.max(...learned, ...(other || [0]), itemMax, 1e-9);
  const x = linearScale([0, steps], [box.left, box.right]);
  const y = linearScale([0, top], [box.bottom, box.top]);

  // header: info lines, then the legend (above the axes: never on a curve)
  ctx.fillStyle = c.muted;
  info.forEach((line, i) => {
    ctx.fillText(fitText(line, width - 2 * box.padding, measure), box.padding,
      box.infoY + (i + 1) * LINE_HEIGHT - 3);
  });
  let lx = box.left;
  const ly = box.legendY + LINE_HEIGHT - 3;
  for (const item of legendItems(payload)) {
    const color = item.kind === "learned" ? c.learned : c.default;
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.setLineDash(item.kind === "learned" ? [] : [4, 3]);
    polyline(ctx, [[lx, ly - 4], [lx + 18, ly - 4]]);
    ctx.setLineDash([]);
    ctx.fillStyle = c.text;
    const label = fitText(item.label, Math.max(0, box.stripRight - lx - 24), measure);
    ctx.fillText(label, lx + 22, ly);
    lx += 22 + measure(label) + 14;
  }

  // grid, axes, tick labels and axis titles
  ctx.strokeStyle = c.grid;
  ctx.lineWidth = 1;
  ctx.fillStyle = c.text;
  ctx.font = "10px sans-serif";
  for (const t of niceTicks(0, top, 4)) {
    polyline(ctx, [[box.left, y(t)], [box.right, y(t)]]);
    const label = String(+t.toFixed(3));
    ctx.fillText(label, box.left - 4 - measure(label), y(t) + 3);
  }
  for (const t of niceTicks(0, steps, Math.min(steps, 6)).filter(Number.isInteger)) {
    const label = String(t);
    ctx.fillText(label, x(t) - measure(label) / 2, box.bottom + 12);
  }
  ctx.strokeStyle = c.axis;
  polyline(ctx, [[box.left, box.top], [box.left, box.bottom], [box.right, box.bottom]]);
  ctx.fillStyle = c.muted;
  ctx.fillText("step", (box.left + box.right) / 2 - measure("step") / 2, box.xTitleY);
  ctx.save();
  ctx.translate(box.yTitleX, (box.top + box.bottom) / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.fillText("sigma", -measure("sigma") / 2, 0);
  ctx.restore();

  // the other images of a batch (Learned Sampler: each image its own sigmas), thin, behind
  const extra = Array.isArray(payload.items) ? payload.items.slice(1).filter(validCurve) : [];
  if (extra.length) {
    ctx.save();
    ctx.globalAlpha = 0.45;
    ctx.strokeStyle = c.learned;
    ctx.lineWidth = 1;
    for (const item of extra) {
      polyline(ctx, schedulePath(item, linearScale([0, item.length - 1], [box.left, box.right]), y));
    }
    ctx.restore();
  }

  // learned solid with markers, then the default dashed ON TOP: visible even when equal
  ctx.strokeStyle = c.learned;
  ctx.fillStyle = c.learned;
  ctx.lineWidth = 2.5;
  const pts = schedulePath(learned, linearScale([0, learned.length - 1], [box.left, box.right]), y);
  polyline(ctx, pts);
  for (const [px, py] of pts) {
    ctx.beginPath();
    ctx.arc(px, py, 2.5, 0, 2 * Math.PI);
    ctx.fill();
  }
  if (other) {
    ctx.strokeStyle = c.default;
    ctx.lineWidth = 1.5;
    ctx.setLineDash([5, 4]);
    polyline(ctx, schedulePath(other, linearScale([0, other.length - 1], [box.left, box.right]), y));
    ctx.setLineDash([]);
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
  ctx.restore();
  return box;
}
