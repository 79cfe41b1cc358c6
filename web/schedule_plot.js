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
  error: "#f87171", warning: "#fbbf24",
  // per-image / per-schedule colours: never the default's orange
  series: ["#3b82f6", "#10b981", "#f472b6", "#a78bfa", "#22d3ee", "#ef4444", "#a3e635", "#e879f9"],
};
const LIGHT = {
  background: "#ffffff", axis: "#4b5563", grid: "#e5e7eb", text: "#111827", muted: "#4b5563",
  learned: "#2563eb", default: "#d97706", density: "rgba(37,99,235,0.25)",
  error: "#b91c1c", warning: "#92400e",
  series: ["#2563eb", "#059669", "#db2777", "#7c3aed", "#0891b2", "#dc2626", "#65a30d", "#c026d3"],
};

/** Colours with good contrast on ComfyUI's dark and light themes. */
export function themeColors(isDark) {
  const c = isDark ? DARK : LIGHT;
  return { ...c, series: [...c.series] };
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

export function validCurve(v) {
  return Array.isArray(v) && v.length >= 2 && v.every((x) => Number.isFinite(x));
}

/** The valid per-image curves of a payload (the Learned Sampler's `items`), else []. */
export function imageCurves(payload) {
  return Array.isArray(payload?.items) ? payload.items.filter(validCurve) : [];
}

/**
 * How far the per-image schedules are apart: `count` curves, `maxDiff` the largest
 * difference between two images at one step (curves of one length only), `top` the largest
 * sigma, and `close` when that difference is under `closeFraction` of the sigma range (the
 * curves would draw as one line: the plot then zooms on the differences).
 */
export function spread(curves, closeFraction = 0.05) {
  const n = curves.length;
  const top = n ? Math.max(...curves.map((c) => Math.max(...c))) : 0;
  if (n < 2 || curves.some((c) => c.length !== curves[0].length)) {
    return { count: n, maxDiff: null, top, close: false };
  }
  let maxDiff = 0;
  for (let i = 0; i < curves[0].length; i++) {
    const col = curves.map((c) => c[i]);
    maxDiff = Math.max(maxDiff, Math.max(...col) - Math.min(...col));
  }
  return { count: n, maxDiff, top, close: maxDiff < closeFraction * (top || 1) };
}

/** Each image minus the batch mean, step by step (curves of one length). */
export function deviations(curves) {
  if (!curves.length) return [];
  const mean = curves[0].map((_, i) => curves.reduce((a, c) => a + c[i], 0) / curves.length);
  return curves.map((c) => c.map((v, i) => v - mean[i]));
}

/** A short number for the plot's text (3 significant digits). */
export function shortNumber(v) {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return "0";
  return Math.abs(v) >= 0.01 ? String(+v.toPrecision(3)) : v.toExponential(1);
}

/** The per-image legend entry: "8 images, each its own schedule". */
export function imageLegend(summary) {
  return summary && summary.count > 1 ? `${summary.count} images, each its own schedule` : "";
}

/** The header line saying how far apart the per-image schedules are (at one step). */
export function spreadLine(summary) {
  if (!summary || summary.count < 2 || summary.maxDiff === null) return "";
  return `per-image schedules differ by at most ${shortNumber(summary.maxDiff)} (sigma)`;
}

/** `n` distinct colours: the palette's series, then evenly spaced hues. */
export function seriesColors(n, colors) {
  const base = colors?.series || themeColors(true).series;
  const dark = colors?.isDark !== false;
  return Array.from({ length: n }, (_, i) => (i < base.length ? base[i]
    : `hsl(${Math.round((i * 137.5) % 360)}, 70%, ${dark ? 62 : 40}%)`));
}

/** Legend entries: the learned curve first (solid), then the default (dashed) if present;
 *  with several images, one entry that counts them. */
export function legendItems(payload) {
  if (!payload) return [];
  const images = imageCurves(payload);
  const items = images.length > 1
    ? [{ kind: "images", label: imageLegend(spread(images)), count: images.length }]
    : [{ kind: "learned", label: payload.label || "learned" }];
  if (validCurve(payload.default_sigmas)) {
    items.push({ kind: "default", label: payload.default_label || "default" });
  }
  return items;
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

/** `text` broken into lines no wider than `maxWidth` (at spaces; a long word is cut), at
 *  most `maxLines` (the last one ends with an ellipsis when text is left over). */
export function wrapText(text, maxWidth, measure, maxLines = 99) {
  const lines = [];
  let line = "";
  const words = String(text).split(/\s+/).filter(Boolean);
  for (let i = 0; i < words.length; i++) {
    const next = line ? `${line} ${words[i]}` : words[i];
    if (measure(next) <= maxWidth || !line) {
      line = next;
      continue;
    }
    lines.push(line);
    line = words[i];
    if (lines.length === maxLines) {
      lines[maxLines - 1] = fitText(`${lines[maxLines - 1]} ${words.slice(i).join(" ")}`,
        maxWidth, measure);
      return lines;
    }
  }
  if (line) lines.push(line);
  return lines.map((l) => fitText(l, maxWidth, measure));
}

function polyline(ctx, points) {
  ctx.beginPath();
  points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  ctx.stroke();
}

function begin(ctx, width, height, c) {
  ctx.save();
  ctx.beginPath();
  ctx.rect(0, 0, width, height);
  ctx.clip();
  ctx.fillStyle = c.background;
  ctx.fillRect(0, 0, width, height);
  ctx.font = "11px sans-serif";
  ctx.textBaseline = "alphabetic";
}

function resolveColors(colors) {
  return typeof colors === "object" && colors ? colors : themeColors(colors !== false);
}

/** Draw `message` lines centred vertically, wrapped to the width (placeholder, errors). */
function drawMessage(ctx, width, height, lines, colors, measure) {
  const wrapped = lines.flatMap(([text, color]) =>
    wrapText(text, width - 16, measure, 8).map((l) => [l, color]));
  let y = Math.max(LINE_HEIGHT, height / 2 - (wrapped.length * LINE_HEIGHT) / 2 + 10);
  for (const [line, color] of wrapped) {
    ctx.fillStyle = color || colors.text;
    ctx.fillText(line, 8, y);
    y += LINE_HEIGHT;
  }
}

/** Grid, axes, tick labels and axis titles of a plot box. */
function drawAxes(ctx, box, x, y, { xTicks, yTop, xTitle, yTitle, xLabel }, c, measure) {
  ctx.strokeStyle = c.grid;
  ctx.lineWidth = 1;
  ctx.fillStyle = c.text;
  ctx.font = "10px sans-serif";
  for (const t of niceTicks(0, yTop, 4)) {
    polyline(ctx, [[box.left, y(t)], [box.right, y(t)]]);
    const label = String(+t.toFixed(3));
    ctx.fillText(label, box.left - 4 - measure(label), y(t) + 3);
  }
  for (const t of xTicks) {
    const label = xLabel ? xLabel(t) : String(t);
    ctx.fillText(label, x(t) - measure(label) / 2, box.bottom + 12);
  }
  ctx.strokeStyle = c.axis;
  polyline(ctx, [[box.left, box.top], [box.left, box.bottom], [box.right, box.bottom]]);
  ctx.fillStyle = c.muted;
  ctx.fillText(xTitle, (box.left + box.right) / 2 - measure(xTitle) / 2, box.xTitleY);
  ctx.save();
  ctx.translate(box.yTitleX, (box.top + box.bottom) / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.fillText(yTitle, -measure(yTitle) / 2, 0);
  ctx.restore();
}

/**
 * The zoomed view of close per-image curves: each image minus the batch mean, on its own
 * y-scale, in the upper right of the plot box (where a falling schedule leaves room).
 * Returns the inset's rectangle.
 */
function drawDeviationInset(ctx, box, curves, colorsList, c, measure) {
  const dev = deviations(curves);
  const w = Math.max(60, (box.right - box.left) * 0.5);
  const h = Math.max(40, (box.bottom - box.top) * 0.42);
  const r = { left: box.right - w, top: box.top + 2, right: box.right - 2, bottom: box.top + h };
  const m = Math.max(1e-12, ...dev.flat().map(Math.abs));
  ctx.fillStyle = c.background;
  ctx.fillRect(r.left, r.top, r.right - r.left, r.bottom - r.top);
  ctx.strokeStyle = c.axis;
  ctx.lineWidth = 1;
  ctx.strokeRect?.(r.left, r.top, r.right - r.left, r.bottom - r.top);
  const inner = { top: r.top + LINE_HEIGHT + 2, bottom: r.bottom - 4 };
  const ix = linearScale([0, curves[0].length - 1], [r.left + 4, r.right - 4]);
  const iy = linearScale([-m, m], [inner.bottom, inner.top]);
  ctx.strokeStyle = c.grid;
  polyline(ctx, [[r.left + 4, iy(0)], [r.right - 4, iy(0)]]);
  ctx.lineWidth = 1.5;
  dev.forEach((d, i) => {
    ctx.strokeStyle = colorsList[i];
    polyline(ctx, d.map((v, k) => [ix(k), iy(v)]));
  });
  ctx.fillStyle = c.muted;
  ctx.font = "10px sans-serif";
  ctx.fillText(fitText(`zoom: each image minus the mean (±${shortNumber(m)})`, r.right - r.left - 6,
    measure), r.left + 3, r.top + LINE_HEIGHT - 2);
  return r;
}

/**
 * Draw the schedule plot on a 2D context (or any object with the same methods), in a
 * `width` x `height` CSS-pixel area. `payload`: { sigmas, default_sigmas?, items? (one curve
 * per image), label?, default_label?, policy?, family?, trained_steps?, resampling?, notice? }
 * or { error, stale? } (the node did not run: the message instead of an old plot), or null for
 * the placeholder. `colors`: from themeColors / paletteColors (a boolean picks the dark or
 * light set). Returns the plot box (null for a message).
 */
export function drawSchedule(ctx, width, height, payload, colors) {
  const c = resolveColors(colors);
  const measure = (t) => ctx.measureText(t)?.width ?? t.length * 6;
  begin(ctx, width, height, c);
  if (payload?.error) {
    drawMessage(ctx, width, height, [["Not run this time:", c.error], [payload.error, c.error],
      ["(images shown beside it may be from an earlier run)", c.muted]], c, measure);
    ctx.restore();
    return null;
  }
  if (!payload || !validCurve(payload.sigmas)) {
    drawMessage(ctx, width, height, [[PLACEHOLDER, c.text]], c, measure);
    ctx.restore();
    return null;
  }
  const learned = payload.sigmas;
  const other = validCurve(payload.default_sigmas) ? payload.default_sigmas : null;
  const images = imageCurves(payload);
  const perImage = images.length > 1;
  const summary = perImage ? spread(images) : null;
  const info = infoLines(payload).map((t) => [fitText(t, width - 12, measure), c.muted]);
  if (perImage && spreadLine(summary)) info.push([fitText(spreadLine(summary), width - 12, measure), c.text]);
  if (payload.notice) {
    for (const t of wrapText(payload.notice, width - 12, measure, 3)) info.push([t, c.warning]);
  }
  const legend = legendItems(payload);
  // legend entries wrapped into rows inside the canvas (never cut at the right edge)
  const rows = legendRows(legend.map((i) => i.label), width, measure, { left: 50 });
  const box = layout(width, height, { headerLines: info.length + (rows.at(-1)?.row ?? 0) });
  const steps = Math.max(learned.length, other ? other.length : 0, ...images.map((v) => v.length)) - 1;
  const top = Math.max(...learned, ...(other || [0]), ...images.map((v) => Math.max(...v)), 1e-9);
  const x = linearScale([0, steps], [box.left, box.right]);
  const y = linearScale([0, top], [box.bottom, box.top]);
  const xOf = (curve) => linearScale([0, curve.length - 1], [box.left, box.right]);
  const palette = seriesColors(images.length, c);
  palette[0] = c.learned;

  // header: info lines, then the legend (above the axes: never on a curve)
  info.forEach(([line, color], i) => {
    ctx.fillStyle = color;
    ctx.fillText(line, box.padding, box.infoY + (i + 1) * LINE_HEIGHT - 3);
  });
  const legendTop = box.infoY + info.length * LINE_HEIGHT;
  legend.forEach((item, k) => {
    const { label, row, x: lx } = rows[k];
    const ly = legendTop + (row + 1) * LINE_HEIGHT - 3;
    ctx.lineWidth = 2;
    if (item.kind === "images") { // a swatch of every image's colour
      const seg = 18 / Math.min(item.count, 6);
      for (let i = 0; i < Math.min(item.count, 6); i++) {
        ctx.strokeStyle = palette[i];
        polyline(ctx, [[lx + i * seg, ly - 4], [lx + (i + 1) * seg, ly - 4]]);
      }
    } else {
      ctx.strokeStyle = item.kind === "learned" ? c.learned : c.default;
      ctx.setLineDash(item.kind === "learned" ? [] : [4, 3]);
      polyline(ctx, [[lx, ly - 4], [lx + 18, ly - 4]]);
      ctx.setLineDash([]);
    }
    ctx.fillStyle = c.text;
    ctx.fillText(label, lx + 22, ly);
  });
  box.legend = rows;

  drawAxes(ctx, box, x, y, {
    xTicks: niceTicks(0, steps, Math.min(steps, 6)).filter(Number.isInteger), yTop: top,
    xTitle: "step", yTitle: "sigma",
  }, c, measure);

  if (perImage) { // each image its own colour, the first one on top with markers
    ctx.lineWidth = 1.5;
    images.slice(1).forEach((item, i) => {
      ctx.strokeStyle = palette[i + 1];
      polyline(ctx, schedulePath(item, xOf(item), y));
    });
  }
  // learned solid with markers, then the default dashed ON TOP: visible even when equal
  ctx.strokeStyle = c.learned;
  ctx.fillStyle = c.learned;
  ctx.lineWidth = perImage ? 2 : 2.5;
  const pts = schedulePath(learned, xOf(learned), y);
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
    polyline(ctx, schedulePath(other, xOf(other), y));
    ctx.setLineDash([]);
  }
  if (perImage && summary.close && summary.maxDiff > 0) {
    box.inset = drawDeviationInset(ctx, box, images, palette, c, measure);
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

const DASHES = [[], [6, 4], [2, 3], [8, 3, 2, 3], [4, 2], [1, 2]];

/**
 * Legend rows for several curves: entries laid out left to right and wrapped to the width, so
 * none is cut at the right edge. `items`: label strings. Returns [{ label, row, x }].
 */
export function legendRows(labels, width, measure, { left = 6, swatch = 22, gap = 14 } = {}) {
  const rows = [];
  let row = 0;
  let x = left;
  for (const text of labels) {
    const label = fitText(text, width - left - swatch - 6, measure);
    const w = swatch + measure(label);
    if (x > left && x + w > width - 6) {
      row += 1;
      x = left;
    }
    rows.push({ label, row, x });
    x += w + gap;
  }
  return rows;
}

/** x positions of a comparison: step / steps (fraction) or the step index. */
export function alignedSteps(n, xAxis = "fraction") {
  return Array.from({ length: n }, (_, i) => (xAxis === "step" ? i : i / Math.max(1, n - 1)));
}

/**
 * Compare Schedules / Preview Sigmas on the node: `payload` { curves: [{ label, sigmas }],
 * x_axis: "fraction" | "step", normalize, title } or { error }; every curve its own colour and
 * dash, the legend wrapped above the axes inside the canvas. Returns the plot box (with
 * `legend`: the entries drawn), or null.
 */
export function drawComparison(ctx, width, height, payload, colors) {
  const c = resolveColors(colors);
  const measure = (t) => ctx.measureText(t)?.width ?? t.length * 6;
  begin(ctx, width, height, c);
  const curves = (payload?.curves || []).filter((k) => validCurve(k?.sigmas));
  if (payload?.error || !curves.length) {
    drawMessage(ctx, width, height, payload?.error
      ? [["Not run this time:", c.error], [payload.error, c.error]]
      : [["run the graph to see the schedules", c.text]], c, measure);
    ctx.restore();
    return null;
  }
  const norm = !!payload.normalize;
  const series = curves.map((k) => (norm ? k.sigmas.map((v) => v / (k.sigmas[0] || 1)) : k.sigmas));
  const xs = series.map((s) => alignedSteps(s.length, payload.x_axis));
  const title = payload.title ? [fitText(payload.title, width - 12, measure)] : [];
  const legend = legendRows(curves.map((k) => String(k.label)), width, measure, { left: 6 });
  const rows = legend.length ? legend.at(-1).row + 1 : 0;
  const box = layout(width, height, { headerLines: title.length + rows - 1 });
  box.right = width - box.padding - 8; // no density strip here
  const xMax = Math.max(...xs.map((v) => v.at(-1)), 1e-9);
  const top = Math.max(...series.flat(), 1e-9);
  const x = linearScale([0, xMax], [box.left, box.right]);
  const y = linearScale([0, top], [box.bottom, box.top]);
  const palette = seriesColors(series.length, c);
  palette[0] = c.learned;

  ctx.fillStyle = c.text;
  title.forEach((t, i) => ctx.fillText(t, box.padding, box.infoY + (i + 1) * LINE_HEIGHT - 3));
  const legendTop = box.infoY + title.length * LINE_HEIGHT;
  legend.forEach((entry, i) => {
    const ly = legendTop + (entry.row + 1) * LINE_HEIGHT - 3;
    ctx.strokeStyle = palette[i];
    ctx.lineWidth = 2;
    ctx.setLineDash(DASHES[i % DASHES.length]);
    polyline(ctx, [[entry.x, ly - 4], [entry.x + 18, ly - 4]]);
    ctx.setLineDash([]);
    ctx.fillStyle = c.text;
    ctx.fillText(entry.label, entry.x + 22, ly);
  });
  const fraction = payload.x_axis !== "step";
  drawAxes(ctx, box, x, y, {
    xTicks: fraction ? niceTicks(0, 1, 4) : niceTicks(0, xMax, Math.min(xMax, 6)).filter(Number.isInteger),
    yTop: top, xTitle: fraction ? "step / steps" : "step",
    yTitle: norm ? "sigma / first sigma" : "sigma",
  }, c, measure);
  // first curve on top: draw the others first
  for (let i = series.length - 1; i >= 0; i--) {
    ctx.strokeStyle = palette[i];
    ctx.lineWidth = i === 0 ? 2.5 : 1.8;
    ctx.setLineDash(DASHES[i % DASHES.length]);
    polyline(ctx, series[i].map((v, k) => [x(xs[i][k]), y(v)]));
    ctx.setLineDash([]);
  }
  ctx.restore();
  box.legend = legend;
  return box;
}
