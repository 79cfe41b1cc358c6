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

test("a payload without a default still draws the learned curve", () => {
  const { ctx, calls } = recordingContext();
  drawSchedule(ctx, 240, 180, { sigmas: [1, 0.5, 0], default_sigmas: null }, true);
  const strokes = calls.filter(([n]) => n === "stroke");
  assert.ok(strokes.some(([, color]) => color === themeColors(true).learned));
  assert.ok(!strokes.some(([, color]) => color === themeColors(true).default));
});
