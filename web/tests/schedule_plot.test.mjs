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

test("every image of a batch gets its own curve (Learned Sampler)", () => {
  const c = themeColors(false);
  const count = (payload) => {
    const { ctx, calls } = recordingContext();
    drawSchedule(ctx, 300, 200, payload, false);
    return calls.filter(([n, color]) => n === "stroke" && color === c.learned).length;
  };
  const one = { sigmas: [1, 0.7, 0.3, 0], default_sigmas: [1, 0.75, 0.5, 0] };
  const items = [[1, 0.7, 0.3, 0], [1, 0.6, 0.2, 0], [1, 0.8, 0.4, 0]];
  assert.equal(count({ ...one, items }), count(one) + 2);
  assert.equal(count({ ...one, items: [[1, 0.7, 0.3, 0], [null, "x"]] }), count(one));
});

test("a payload without a default still draws the learned curve", () => {
  const { ctx, calls } = recordingContext();
  drawSchedule(ctx, 240, 180, { sigmas: [1, 0.5, 0], default_sigmas: null }, true);
  const strokes = calls.filter(([n]) => n === "stroke");
  assert.ok(strokes.some(([, color]) => color === themeColors(true).learned));
  assert.ok(!strokes.some(([, color]) => color === themeColors(true).default));
});

import {
  backingSize, fitText, infoLines, legendItems, paletteColors, parseColor,
} from "../schedule_plot.js";

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
