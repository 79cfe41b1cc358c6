// Unit tests of the pure plotting module (node --test web/tests/).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  drawSchedule, kde, layout, linearScale, niceTicks, PLACEHOLDER, schedulePath, themeColors,
} from "../schedule_plot.js";

function recordingContext() {
  const calls = [];
  const state = { strokeStyle: "", fillStyle: "", dash: [] };
  const ctx = new Proxy(state, {
    get(target, prop) {
      if (prop in target) return target[prop];
      if (prop === "measureText") return (t) => ({ width: t.length * 6 });
      if (prop === "setLineDash") return (d) => { target.dash = d; calls.push(["setLineDash", d]); };
      if (prop === "stroke") {
        return () => calls.push(["stroke", target.strokeStyle, [...target.dash]]);
      }
      return (...args) => calls.push([prop, ...args]);
    },
    set(target, prop, value) { target[prop] = value; return true; },
  });
  return { ctx, calls };
}

test("linear scale maps and inverts", () => {
  const s = linearScale([0, 10], [100, 200]);
  assert.equal(s(0), 100);
  assert.equal(s(5), 150);
  assert.equal(s.invert(175), 7.5);
  const flipped = linearScale([0, 1], [90, 10]);
  assert.equal(flipped(1), 10);
});

test("nice ticks are 1/2/5 steps covering the range", () => {
  assert.deepEqual(niceTicks(0, 1, 5), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.deepEqual(niceTicks(0, 14.6, 4), [0, 5, 10]);
  const t = niceTicks(0.03, 0.97, 5);
  const step = t[1] - t[0];
  assert.ok([0.1, 0.2, 0.5].some((s) => Math.abs(s - step) < 1e-9));
  assert.ok(t[0] >= 0.03 && t.at(-1) <= 0.97);
});

test("kde integrates to about one and peaks near the data", () => {
  const grid = Array.from({ length: 2001 }, (_, i) => -1 + (3 * i) / 2000);
  const d = kde([0.2, 0.25, 0.3], grid);
  const area = d.reduce((a, v) => a + v, 0) * (3 / 2000);
  assert.ok(Math.abs(area - 1) < 0.01, `area ${area}`);
  const peak = grid[d.indexOf(Math.max(...d))];
  assert.ok(Math.abs(peak - 0.25) < 0.03);
  assert.deepEqual(kde([], [0, 1]), [0, 0]);
});

test("schedule path puts steps on x and sigmas on y", () => {
  const pts = schedulePath([1, 0.5, 0], linearScale([0, 2], [0, 100]), linearScale([0, 1], [50, 0]));
  assert.deepEqual(pts, [[0, 0], [50, 25], [100, 50]]);
});

test("layout leaves a density strip on the right", () => {
  const box = layout(300, 200);
  assert.ok(box.left < box.right && box.right < box.stripLeft && box.stripLeft < box.stripRight);
  assert.ok(box.stripRight <= 300 && box.bottom < 200 && box.top > 0);
});

test("themes differ and keep the learned curve visible", () => {
  const dark = themeColors(true);
  const light = themeColors(false);
  assert.notEqual(dark.background, light.background);
  assert.notEqual(dark.learned, dark.background);
  assert.notEqual(light.learned, light.background);
});

test("placeholder before the first run", () => {
  const { ctx, calls } = recordingContext();
  drawSchedule(ctx, 300, 200, null, true);
  assert.ok(calls.some(([name, text]) => name === "fillText" && text === PLACEHOLDER));
  assert.ok(!calls.some(([name]) => name === "stroke"));
});

test("learned schedule solid, default dashed", () => {
  const { ctx, calls } = recordingContext();
  const payload = { sigmas: [1, 0.7, 0.3, 0], default_sigmas: [1, 0.9, 0.6, 0], label: "p" };
  drawSchedule(ctx, 300, 200, payload, false);
  const c = themeColors(false);
  const strokes = calls.filter(([n]) => n === "stroke");
  assert.ok(strokes.some(([, color, dash]) => color === c.learned && dash.length === 0));
  assert.ok(strokes.some(([, color, dash]) => color === c.default && dash.length > 0));
  assert.ok(calls.some(([n, t]) => n === "fillText" && t === "p"));
  assert.ok(!calls.some(([n, t]) => n === "fillText" && t === PLACEHOLDER));
});

test("every image of a batch gets its own colour and the legend counts them", () => {
  const c = themeColors(false);
  const one = { sigmas: [1, 0.7, 0.3, 0], default_sigmas: [1, 0.75, 0.5, 0] };
  const items = [[1, 0.7, 0.3, 0], [1, 0.6, 0.2, 0], [1, 0.8, 0.4, 0]];
  const { ctx, calls } = recordingContext();
  drawSchedule(ctx, 400, 260, { ...one, items }, false);
  const curveColors = new Set(calls.filter(([n, color, dash]) => n === "stroke" && !dash.length &&
    color !== c.grid && color !== c.axis).map(([, color]) => color));
  assert.ok(curveColors.size >= 3, [...curveColors].join(" "));
  const texts = calls.filter(([n]) => n === "fillText").map(([, t]) => t);
  assert.ok(texts.some((t) => t.startsWith("3 images, each its own schedule")), texts.join("|"));
  // an invalid item is skipped: one valid image is a plain learned curve
  assert.deepEqual(legendItems({ ...one, items: [[1, 0.7, 0.3, 0], [null, "x"]] })
    .map((i) => i.kind), ["learned", "default"]);
});

test("close per-image curves: the legend says by how much, an inset zooms on them", () => {
  const base = [14.6, 9.1, 3.2, 0];
  const items = [0, 1, 2, 3].map((k) => base.map((v, i) => (i && i < 3 ? v + 0.004 * k : v)));
  const s = spread(items);
  assert.equal(s.count, 4);
  assert.ok(Math.abs(s.maxDiff - 0.012) < 1e-9 && s.close);
  assert.equal(imageLegend(s), "4 images, each its own schedule");
  assert.equal(spreadLine(s), "per-image schedules differ by at most 0.012 (sigma)");
  const dev = deviations(items);
  assert.ok(Math.abs(dev[3][1] - 0.006) < 1e-9 && dev[0][0] === 0);
  const { ctx, calls } = recordingContext();
  const box = drawSchedule(ctx, 420, 300, { sigmas: items[0], items }, true);
  assert.ok(box.inset && box.inset.left >= box.left && box.inset.right <= box.right);
  const texts = calls.filter(([n]) => n === "fillText").map(([, t]) => t);
  assert.ok(texts.some((t) => t.startsWith("zoom: each image minus")));
  assert.ok(texts.includes("per-image schedules differ by at most 0.012 (sigma)"), texts.join("|"));
  // far apart curves: no inset
  const far = [[1, 0.7, 0.3, 0], [1, 0.4, 0.1, 0]];
  assert.equal(spread(far).close, false);
  assert.equal(drawSchedule(recordingContext().ctx, 420, 300, { sigmas: far[0], items: far }, true)
    .inset, undefined);
  assert.equal(spread([[1, 0]]).maxDiff, null);
  assert.equal(new Set(seriesColors(12, themeColors(true))).size, 12);
  for (const dark of [true, false]) { // an image never takes the default curve's colour
    const c = themeColors(dark);
    assert.ok(!seriesColors(8, c).includes(c.default));
  }
});

test("an error replaces the old plot with the message", () => {
  const { ctx, calls } = recordingContext();
  const box = drawSchedule(ctx, 300, 200, { error: "x.safetensors is an AdaGen step-wise policy: use it in the Learned Sampler node." }, true);
  assert.equal(box, null);
  const texts = calls.filter(([n]) => n === "fillText").map(([, t]) => t).join(" ");
  assert.match(texts, /Not run this time/);
  assert.match(texts, /AdaGen step-wise/);
  assert.ok(!calls.some(([n]) => n === "stroke"));
});

test("the batch notice is written on the node", () => {
  const { ctx, calls } = recordingContext();
  const notice = "Batch of 8: every image uses the schedule of the first (a sampler takes one SIGMAS).";
  drawSchedule(ctx, 320, 260, { ...FULL_NOTICE, notice }, true);
  const texts = calls.filter(([n]) => n === "fillText").map(([, t]) => t).join(" ");
  assert.match(texts, /Batch of 8: every image uses/);
  assert.match(texts, /one SIGMAS/);
});

test("wrapped text fits its width and keeps every word", () => {
  const measure = (t) => t.length * 6;
  const text = "the quick brown fox jumps over the lazy dog again and again";
  const lines = wrapText(text, 60, measure);
  assert.ok(lines.every((l) => measure(l) <= 60));
  assert.equal(lines.join(" "), text);
  assert.equal(wrapText(text, 60, measure, 2).length, 2);
});

test("Compare Schedules: every curve drawn, the legend wrapped inside the canvas", () => {
  const labels = ["learned:digits_policy_L4 (6 steps)", "simple", "beta", "karras", "AYS", "other"];
  const curves = labels.map((label, k) => ({ label, sigmas: [1, 0.8 - 0.05 * k, 0.3, 0] }));
  for (const [w, h] of [[300, 260], [520, 400]]) {
    const { ctx, calls } = recordingContext();
    const box = drawComparison(ctx, w, h, { curves, x_axis: "fraction", title: "t" }, false);
    assert.equal(box.legend.length, 6);
    for (const e of box.legend) {
      assert.ok(e.x >= 0 && e.x + 22 + e.label.length * 6 <= w, `${e.label} at ${e.x} in ${w}`);
    }
    const texts = calls.filter(([n]) => n === "fillText");
    for (const [, t, tx, ty] of texts.filter(([, t]) => t !== "sigma")) { // (rotated title)
      assert.ok(tx >= 0 && ty <= h, `${t} ${tx},${ty}`);
    }
    assert.ok(texts.some(([, t]) => t === "simple"));
    const pts = calls.filter(([n]) => n === "moveTo" || n === "lineTo");
    for (const [, px, py] of pts) assert.ok(px >= 0 && px <= w && py >= 0 && py <= h);
  }
  const wide = legendRows(labels, 2000, (t) => t.length * 6);
  assert.ok(wide.every((e) => e.row === 0));
  assert.deepEqual(alignedSteps(3), [0, 0.5, 1]);
  assert.deepEqual(alignedSteps(3, "step"), [0, 1, 2]);
  const placeholder = recordingContext();
  assert.equal(drawComparison(placeholder.ctx, 300, 200, null, true), null);
});

test("Compare Schedules follows the palette", () => {
  const light = paletteColors({ "--comfy-input-bg": "#fafafa" });
  const { ctx, calls } = recordingContext();
  drawComparison(ctx, 300, 200, { curves: [{ label: "a", sigmas: [1, 0] }] }, light);
  assert.ok(calls.some(([n]) => n === "fillRect") && light.background === "#fafafa");
});

test("a payload without a default still draws the learned curve", () => {
  const { ctx, calls } = recordingContext();
  drawSchedule(ctx, 240, 180, { sigmas: [1, 0.5, 0], default_sigmas: null }, true);
  const strokes = calls.filter(([n]) => n === "stroke");
  assert.ok(strokes.some(([, color]) => color === themeColors(true).learned));
  assert.ok(!strokes.some(([, color]) => color === themeColors(true).default));
});

import {
  alignedSteps, backingSize, deviations, drawComparison, fitText, imageLegend, infoLines,
  legendItems, legendRows, paletteColors, parseColor, seriesColors, spread, spreadLine, wrapText,
} from "../schedule_plot.js";

const FULL_NOTICE = { sigmas: [1, 0.7, 0.3, 0], default_sigmas: [1, 0.9, 0.6, 0], policy: "p" };
const FULL = {
  sigmas: [1, 0.7, 0.3, 0], default_sigmas: [1, 0.9, 0.6, 0], label: "my_policy",
  default_label: "simple", policy: "my_policy.safetensors", family: "sd3", trained_steps: 4,
  resampling: "resampled from 4 to 3 steps",
};

test("layout keeps everything inside the node and the legend above the axes", () => {
  for (const [w, h, lines] of [[300, 200, 0], [240, 180, 2], [900, 600, 2]]) {
    const box = layout(w, h, { headerLines: lines });
    assert.ok(box.legendY + 13 <= box.top, "legend band above the plot box");
    assert.ok(box.left > 0 && box.right < box.stripLeft && box.stripRight <= w);
    assert.ok(box.top > 0 && box.bottom < h && box.xTitleY <= h);
    assert.ok(box.yTitleX > 0 && box.yTitleX < box.left);
  }
});

test("every line and marker lands inside the canvas", () => {
  const { ctx, calls } = recordingContext();
  const [w, h] = [260, 190];
  drawSchedule(ctx, w, h, FULL, true);
  const pts = calls.filter(([n]) => n === "moveTo" || n === "lineTo" || n === "arc");
  assert.ok(pts.length > 10);
  for (const [, px, py] of pts) {
    assert.ok(px >= 0 && px <= w && py >= 0 && py <= h, `${px},${py}`);
  }
});

test("info lines name the policy, family, trained steps and resampling", () => {
  const lines = infoLines(FULL);
  assert.equal(lines.length, 2);
  assert.match(lines[0], /my_policy\.safetensors/);
  assert.match(lines[0], /sd3/);
  assert.match(lines[0], /trained for 4 steps/);
  assert.equal(lines[1], FULL.resampling);
  assert.deepEqual(infoLines({ ...FULL, resampling: "" }).length, 1);
  const calibrated = infoLines({ ...FULL, summary: "latent PSNR to 30-step: calibrated 30 dB" });
  assert.equal(calibrated.length, 3);
  assert.equal(calibrated[2], "latent PSNR to 30-step: calibrated 30 dB");
  const { ctx, calls } = recordingContext();
  drawSchedule(ctx, 600, 300, FULL, true);
  const texts = calls.filter(([n]) => n === "fillText").map(([, t]) => t);
  assert.ok(texts.includes(lines[0]) && texts.includes(lines[1]));
  assert.ok(texts.includes("step") && texts.includes("sigma"), "axis titles");
});

test("legend text sits above the plot box, off the curves", () => {
  const { ctx, calls } = recordingContext();
  const box = drawSchedule(ctx, 400, 260, FULL, false);
  const legend = calls.filter(([n, t]) => n === "fillText" && (t === "my_policy" || t === "simple"));
  assert.equal(legend.length, 2);
  for (const [, , , ty] of legend) assert.ok(ty < box.top, `${ty} < ${box.top}`);
  assert.deepEqual(legendItems(FULL).map((i) => i.kind), ["learned", "default"]);
});

test("the default stays visible when it equals the learned curve", () => {
  const { ctx, calls } = recordingContext();
  const same = { ...FULL, default_sigmas: [...FULL.sigmas] };
  drawSchedule(ctx, 300, 200, same, true);
  const c = themeColors(true);
  const curveStrokes = calls.filter(([n, color]) => n === "stroke" &&
    (color === c.learned || color === c.default));
  const learnedAt = curveStrokes.findIndex(([, color, dash]) => color === c.learned && !dash.length);
  const lastDefault = curveStrokes.findLastIndex(([, color, dash]) => color === c.default && dash.length);
  assert.ok(learnedAt >= 0 && lastDefault > learnedAt, "dashed default drawn over the learned line");
});

test("backing store follows zoom and device pixel ratio, capped", () => {
  assert.deepEqual(backingSize(200, 100, 1, 1), { width: 200, height: 100, scale: 1 });
  const z = backingSize(200, 100, 2.5, 2);
  assert.equal(z.width, 1000);
  assert.equal(z.height, 500);
  const big = backingSize(2000, 1000, 4, 2, 4096);
  assert.ok(big.width <= 4096 && big.height <= 4096);
});

test("palette colours follow the frontend's CSS variables", () => {
  assert.deepEqual(parseColor("#fff"), [255, 255, 255]);
  assert.deepEqual(parseColor("#1e1e1e"), [30, 30, 30]);
  assert.deepEqual(parseColor("rgb(10, 20, 30)"), [10, 20, 30]);
  assert.equal(parseColor("var(--x)"), null);
  const dark = paletteColors({ "--comfy-input-bg": "#222", "--input-text": "#ddd" });
  const light = paletteColors({ "--comfy-input-bg": "#fafafa", "--input-text": "#111" });
  assert.equal(dark.isDark, true);
  assert.equal(light.isDark, false);
  assert.equal(light.background, "#fafafa");
  assert.equal(light.text, "#111");
  assert.notEqual(dark.learned, light.learned);
  assert.equal(paletteColors({}).isDark, true);
});

test("long text is cut to fit", () => {
  const measure = (t) => t.length * 6;
  assert.equal(fitText("short", 100, measure), "short");
  const cut = fitText("a".repeat(50), 60, measure);
  assert.ok(measure(cut) <= 60 && cut.endsWith("…"));
});
