// Drive the real ComfyUI frontend in headless Debian Chromium: load an API-format graph,
// run it, and read back the Learned Schedule node's plot canvas. Only 127.0.0.1 is used.
// Usage: node tests/browser/run_ui.mjs <server-url> <graph.json> <screenshot.png>
import { readFileSync, writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, graphPath, shot] = process.argv.slice(2);
const graph = JSON.parse(readFileSync(graphPath, "utf8"));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});
const result = { ok: false };
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("pageerror", (e) => console.error("pageerror:", e.message));
  // mark the first-visit tutorial as done so no templates dialog covers the canvas
  await fetch(`${url}/settings/Comfy.TutorialCompleted`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: "true",
  }).catch(() => {});
  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 60000 });
  await page.waitForFunction(() => window.app && window.app.graph && window.app.loadApiJson,
    null, { timeout: 60000 });
  await page.keyboard.press("Escape"); // the first visit opens a templates dialog
  await page.evaluate(async (g) => { await window.app.loadApiJson(g, "learned_schedules"); }, graph);
  result.before = await page.evaluate(() => document.querySelectorAll(
    'canvas[data-testid="learned-schedule-canvas"]').length);
  // the websocket must be up, or the executed message (and the plot) never arrives
  await page.waitForFunction(() => window.app.api?.socket?.readyState === 1, null,
    { timeout: 60000 }).catch(() => {});
  await page.waitForTimeout(500);
  await page.evaluate(async () => { await window.app.queuePrompt(0, 1); });
  // wait until the node received its ui payload and drew the curve
  await page.waitForFunction(() => {
    const node = window.app.graph._nodes.find((n) => n.type === "LearnedSchedules_LearnedSchedule");
    return node && node.__lsPayload;
  }, null, { timeout: 120000 });
  await page.waitForTimeout(500);
  const info = await page.evaluate(() => {
    const node = window.app.graph._nodes.find((n) => n.type === "LearnedSchedules_LearnedSchedule");
    const canvas = node.__lsCanvas;
    node.__lsCanvas.scrollIntoView?.();
    const ctx = canvas.getContext("2d");
    const { width, height } = canvas;
    const data = ctx.getImageData(0, 0, width, height).data;
    const targets = [[0x3b, 0x82, 0xf6], [0x25, 0x63, 0xeb]]; // learned colour, dark / light
    let curve = 0;
    for (let i = 0; i < data.length; i += 4) {
      for (const [r, g, b] of targets) {
        if (Math.abs(data[i] - r) < 12 && Math.abs(data[i + 1] - g) < 12 &&
            Math.abs(data[i + 2] - b) < 12) { curve++; break; }
      }
    }
    return { width, height, curve, sigmas: node.__lsPayload.sigmas };
  });
  Object.assign(result, info, { ok: true });
  // centre the node on screen for the screenshot
  await page.evaluate(() => {
    const node = window.app.graph._nodes.find((n) => n.type === "LearnedSchedules_LearnedSchedule");
    const c = window.app.canvas;
    if (c?.ds && node) {
      c.ds.offset[0] = -node.pos[0] + 300;
      c.ds.offset[1] = -node.pos[1] + 150;
      c.setDirty(true, true);
    }
  });
  await page.waitForTimeout(500);
  await page.screenshot({ path: shot });
} catch (e) {
  result.error = String(e && e.stack || e);
} finally {
  await browser.close();
}
writeFileSync(1, JSON.stringify(result) + "\n");
