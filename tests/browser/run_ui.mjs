// Drive the real ComfyUI frontend in headless Debian Chromium, as a new user would: open every
// example from the templates panel, run it (tiny models swapped into the frontend's own
// prompt), reload the page, and check what is on screen (the plot's pixels, Schedule to Text's
// text) each time; the first one run is also run again cached, zoomed, re-coloured and
// tab-switched. Each renderer (classic canvas, Vue "Nodes 2.0") is a case of its own, run one
// after the other in one browser; messages our JS causes (console warnings and errors whose
// stack or source is ours) are collected per case. Only 127.0.0.1 is contacted (the newer
// frontends' calls to api.comfy.org are aborted).
// Usage: node tests/browser/run_ui.mjs <server-url> <spec.json>
//   spec: { module, examples: [stem], run: [stem], stand_ins: {set, replace}, out_dir,
//           cases?: [{ name, vue, full }] (default: one classic case with every check),
//           thumbnails_dir? (write <stem>.jpg thumbnails there), keep_seed? (run the
//             workflows' own seeds: scripts/render_thumbnails.py), pictures? ({stem: path}:
//             a PNG of that example's results, read at a larger zoom, for the README),
//           no_policy? ([stem]: open each on a server without policies and run it; the
//             sentence on screen is collected), stepwise? (a step-wise policy file: the full
//             case also runs the first example with it in Learned Schedule) }
// The frontend runs with its default settings (its default level-of-detail zoom included),
// as a user meets it; only the first-visit tutorial and the minimap are switched off.
//   result (in <out_dir>/result.json; stdout gets { ok, error, result_file }):
//     { ok, examples (the first case's), cases: { name: { examples, ours } }, ... }
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, specPath] = process.argv.slice(2);
const spec = JSON.parse(readFileSync(specPath, "utf8"));
mkdirSync(spec.out_dir, { recursive: true });
const LS = "LearnedSchedules_LearnedSchedule";
// the nodes with a schedule plot: Learned Schedule, Learned Sampler, Calibrate Schedule
const PLOT = [LS, "LearnedSchedules_LearnedSampler", "LearnedSchedules_CalibrateSchedule"];
const TEXT = "LearnedSchedules_ScheduleToText";
const OURS = "/extensions/learned-schedules/"; // where the frontend serves our JS
const result = { ok: false, examples: {}, cases: {}, screenshots: [] };
const alerts = [];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});

// Waits are for what the check needs (a frame drawn, a message received, a value stored),
// each bounded by the fixed pause it replaced, so a slow machine waits no shorter than before.

// n animation frames: the canvas and the DOM widgets over it drawn with what was just set
async function frames(page, n = 2) {
  await page.evaluate((n) => new Promise((done) => {
    const step = (k) => (k ? requestAnimationFrame(() => step(k - 1)) : done());
    step(n);
  }), n);
}

// the page-side condition, or the old fixed pause when it does not come true in time
async function until(page, fn, arg, ms) {
  await page.waitForFunction(fn, arg, { timeout: ms, polling: 50 }).catch(() => {});
}

async function openApp(page, first = true) {
  await page.waitForFunction(() => window.app?.graph && window.app.extensionManager?.command,
    null, { timeout: 90000 });
  // the websocket must be up, or the executed messages (and the plot) never arrive
  await page.waitForFunction(() => window.app.api?.socket?.readyState === 1, null,
    { timeout: 60000 }).catch(() => {});
  // a first visit may open a dialog (a reload gives it less time: the first ones are gone)
  await page.waitForTimeout(first ? 800 : 300);
  await page.keyboard.press("Escape");
}

// the workflow with this plot stored by the frontend (what a reload restores), before a reload
async function stored(page, ms) {
  await until(page, (ls) => {
    const node = window.app.graph._nodes.find((n) => ls.includes(n.type));
    const payload = node?.properties?.learned_schedule_plot;
    if (!payload) return true; // nothing to wait for
    const key = JSON.stringify(payload);
    return [localStorage, sessionStorage].some((s) => Object.keys(s).some((k) =>
      k.includes("orkflow") && s.getItem(k)?.includes(key)));
  }, PLOT, ms);
}

let lastDescription = "";
async function openTemplate(page, stem) {
  await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
  const dialog = page.locator('[role="dialog"]');
  await dialog.getByText(spec.module, { exact: true }).first().click({ timeout: 30000 });
  const card = dialog.locator(`[data-testid="template-workflow-${stem}"]`).first();
  await card.waitFor({ timeout: 30000 });
  // a card below the dialog's fold renders its image only once scrolled into view
  await card.scrollIntoViewIfNeeded({ timeout: 10000 }).catch(() => {});
  // its thumbnail: the .jpg beside the workflow (a missing one shows a 224 px placeholder)
  const img = card.locator("img").first();
  await page.waitForFunction((el) => el.complete && el.naturalWidth > 0,
    await img.elementHandle(), { timeout: 30000 }).catch(() => {});
  const thumb = await img.evaluate((el) => el.naturalWidth).catch(() => 0);
  // the one-sentence description our JS writes on the card (the frontend shows the name)
  lastDescription = await card.locator("[data-ls-description]").first()
    .textContent({ timeout: 5000 }).catch(() => "");
  await card.locator("h3").first().click();
  await page.waitForFunction(
    (ls) => window.app.graph._nodes.some((n) => ls.includes(n.type)) &&
      !document.querySelector('[role="dialog"]'), PLOT, { timeout: 60000 });
  // the zoom it opened with settled (a frontend may fit the view after loading)
  await page.waitForTimeout(300);
  await frames(page, 3);
  return thumb;
}

// what the user reads: the frontend's dialogs and toasts
async function messagesOnScreen(page) {
  return page.evaluate(() => [...document.querySelectorAll(
    '[role="dialog"], [role="alertdialog"], .p-toast-message')].map((e) => e.innerText).join("\n"));
}

// whether node text is drawn at the zoom a workflow opened with (the frontend switches to
// low-quality boxes without text below its level-of-detail zoom)
async function readable(page) {
  return page.evaluate(() => {
    const c = window.app.canvas;
    return { scale: c.ds.scale, low_quality: !!c.low_quality,
             threshold: c._lowQualityZoomThreshold ?? null };
  });
}

// what our plot on a node draws, recorded: its text (legends, info lines, messages) and the
// legend entries' positions, by drawing the node's payload again with a recording context
async function drawnPlot(page, type) {
  return page.evaluate(async ({ type, ours }) => {
    const node = window.app.graph._nodes.find((n) => n.type === type);
    const canvas = node?.__lsCanvas;
    if (!canvas) return null;
    const plot = await import(`${ours}schedule_plot.js`);
    const w = parseFloat(canvas.style.width) || canvas.width;
    const h = parseFloat(canvas.style.height) || canvas.height;
    const texts = [];
    const measure = canvas.getContext("2d");
    measure.font = "11px sans-serif";
    const ctx = new Proxy({}, {
      get(target, prop) {
        if (prop in target) return target[prop];
        if (prop === "measureText") return (t) => { measure.font = target.font || measure.font; return measure.measureText(t); };
        if (prop === "fillText") return (t, x, y) => texts.push([t, x, y]);
        return () => {};
      },
      set(target, prop, value) { target[prop] = value; return true; },
    });
    const payload = node.properties?.learned_schedule_plot || null;
    const draw = payload?.curves ? plot.drawComparison : plot.drawSchedule;
    const box = draw(ctx, w, h, payload, true);
    const legend = (box?.legend || []).map((e) => ({ label: e.label, x: e.x,
      right: e.x + 22 + measure.measureText(e.label).width }));
    return { width: w, height: h, texts: texts.map(([t]) => t), legend,
             inset: !!box?.inset, error: payload?.error ?? null,
             items: payload?.items?.length ?? 0 };
  }, { type, ours: OURS });
}

// a seed of this browser run: the API tests may have run the same graphs on this server, and a
// fully cached graph would not execute (the cached case is checked on purpose further down).
// A later case (the other renderer) posts the same prompts, which run again: ComfyUI's
// default cache keeps only the last prompt's results (with --cache-lru the Vue case's plots
// stayed empty after a cached run: the cached `executed` messages did not bring the payload).
// The Learned Sampler's plot comes from inside sampling, so its graphs get a new seed in
// every case.
const SEED = 1000 + (Date.now() % 100000);
let caseIndex = 0;

function standIns(prompt, stand) {
  const out = JSON.parse(JSON.stringify(prompt));
  const sampler = Object.values(out).some((n) => n.class_type === PLOT[1]);
  for (const node of Object.values(out)) {
    if (node.class_type === "RandomNoise" && !spec.keep_seed) {
      node.inputs.noise_seed = SEED + (sampler ? caseIndex : 0);
    }
    const rep = stand.replace[node.class_type];
    if (rep) {
      node.class_type = rep.class_type;
      node.inputs = { ...rep.inputs };
    }
    Object.assign(node.inputs, stand.set[node.class_type] || {});
    for (const [key, most] of Object.entries(stand.cap?.[node.class_type] || {})) {
      if (typeof node.inputs[key] === "number") node.inputs[key] = Math.min(node.inputs[key], most);
    }
  }
  return out;
}

async function runPrompt(page, prompt) {
  const body = await page.evaluate(async (p) => {
    const api = window.app.api;
    if (!window.__lsEnded) { // the prompts whose end reached this page (after their outputs)
      window.__lsEnded = new Set();
      for (const type of ["execution_success", "execution_error", "execution_interrupted"]) {
        api.addEventListener(type, (e) => window.__lsEnded.add(e.detail?.prompt_id));
      }
    }
    const r = await fetch("/api/prompt", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt: p, client_id: api.clientId ?? api.initialClientId }),
    });
    return r.json();
  }, prompt);
  if (!body.prompt_id) return { status: "rejected", body };
  const deadline = Date.now() + 300000;
  while (Date.now() < deadline) {
    const hist = await (await fetch(`${url}/history/${body.prompt_id}`)).json();
    const st = hist[body.prompt_id]?.status;
    if (st?.completed !== undefined && ["success", "error"].includes(st.status_str)) {
      // the executed messages reach the nodes before the end message does
      await until(page, (id) => window.__lsEnded?.has(id), body.prompt_id, 1000);
      await frames(page);
      if (st.status_str === "error") return { status: "error", messages: st.messages };
      return { status: "success" };
    }
    // until the end message (the history is written just after it), at most 500 ms a poll
    if (await page.evaluate((id) => window.__lsEnded?.has(id), body.prompt_id)) {
      await new Promise((r) => setTimeout(r, 50));
    } else {
      await until(page, (id) => window.__lsEnded?.has(id), body.prompt_id, 500);
    }
  }
  return { status: "timeout" };
}

// the first plot's canvas in the page with its payload drawn (a page-side condition)
function plotDrawn(ls) {
  const node = window.app.graph._nodes.find((n) => ls.includes(n.type));
  const c = node?.__lsCanvas;
  return !!(c?.isConnected && c.width > 0 && node.properties?.learned_schedule_plot);
}

async function plotState(page) {
  return page.evaluate((ls) => {
    const node = window.app.graph._nodes.find((n) => ls.includes(n.type));
    const canvas = node?.__lsCanvas;
    if (!canvas) return { curve: 0, payload: false };
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    const targets = [[0x3b, 0x82, 0xf6], [0x25, 0x63, 0xeb]]; // learned colour, dark / light
    let curve = 0;
    for (let i = 0; i < data.length; i += 4) {
      for (const [r, g, b] of targets) {
        if (Math.abs(data[i] - r) < 12 && Math.abs(data[i + 1] - g) < 12 &&
            Math.abs(data[i + 2] - b) < 12) { curve++; break; }
      }
    }
    const payload = node.properties?.learned_schedule_plot;
    const rect = canvas.parentElement.getBoundingClientRect();
    return { curve, payload: !!payload, width: canvas.width, height: canvas.height,
             sigmas: payload?.sigmas, rootHeight: rect.height };
  }, PLOT);
}

// what a user sees of one node type: the node's rectangle on screen (the Vue node element, or
// the canvas node), and our visible elements inside it (not hidden, not covered)
async function onScreen(page, types, vue) {
  return page.evaluate(({ types, vue }) => {
    const app = window.app;
    const node = app.graph._nodes.find((n) => types.includes(n.type));
    if (!node) return null;
    let box;
    const el = vue && document.querySelector(`[data-node-id="${node.id}"]`);
    if (el) {
      const r = el.getBoundingClientRect();
      box = [r.left, r.top, r.right, r.bottom];
    } else {
      const c = app.canvas.canvas.getBoundingClientRect();
      const title = window.LiteGraph.NODE_TITLE_HEIGHT || 30;
      const [x0, y0] = app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] - title]);
      const [x1, y1] = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0],
        node.pos[1] + node.size[1]]);
      box = [x0 + c.left, y0 + c.top, x1 + c.left, y1 + c.top];
    }
    const seen = (e) => {
      if (!e?.isConnected) return false;
      const r = e.getBoundingClientRect();
      if (r.width < 20 || r.height < 20) return false;
      const inside = r.left >= box[0] - 2 && r.right <= box[2] + 2 && r.top >= box[1] - 2 &&
        r.bottom <= box[3] + 2;
      const hit = document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);
      return inside && !!hit && (hit === e || e.contains(hit) || hit.contains(e));
    };
    const textareas = [...(el || document).querySelectorAll("textarea")].filter(seen);
    return { box, vue_element: !!el, plot_seen: seen(node.__lsCanvas?.parentElement),
             texts: textareas.map((a) => a.value) };
  }, { types, vue });
}

// the plot (zoomed onto its node) and Schedule to Text's text, as on screen
async function screenState(page, vue) {
  await focusNodes(page, PLOT, undefined, true);
  const plot = await seenWithin(page, PLOT, vue, (s) => s?.plot_seen);
  const out = { ...(await plotState(page)), plot };
  if (await page.evaluate((t) => window.app.graph._nodes.some((n) => n.type === t), TEXT)) {
    await focusNodes(page, [TEXT]);
    const text = await seenWithin(page, [TEXT], vue, (s) => s?.texts.some((v) => v.startsWith("1")));
    out.text_seen = text.texts.find((v) => v.startsWith("1")) ?? "";
  }
  return out;
}

// onScreen once ``ok`` holds of it, or as it is after the 900 ms the view once had to settle
async function seenWithin(page, types, vue, ok) {
  const t0 = Date.now();
  for (;;) {
    const seen = await onScreen(page, types, vue);
    if (ok(seen) || Date.now() - t0 > 900) return seen;
    await frames(page);
  }
}

// zoom onto the nodes of these types (``first``: the first of them only, the one checked)
async function focusNodes(page, types, clip, first = false) {
  await page.evaluate(({ types, clip, first }) => {
    const c = window.app.canvas;
    const all = window.app.graph._nodes.filter((n) => !types || types.includes(n.type));
    const nodes = first ? all.slice(0, 1) : all;
    const x0 = Math.min(...nodes.map((n) => n.pos[0])) - 20;
    const y0 = Math.min(...nodes.map((n) => n.pos[1])) - 50;
    const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])) + 20;
    const y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1])) + 20;
    const r = clip || { x: 60, y: 90, width: c.canvas.clientWidth - 60,
                        height: c.canvas.clientHeight - 90 };
    const scale = Math.min(r.width / (x1 - x0), r.height / (y1 - y0), 1.6);
    c.ds.scale = scale;
    c.ds.offset[0] = r.x / scale - x0 + (r.width / scale - (x1 - x0)) / 2;
    c.ds.offset[1] = r.y / scale - y0 + (r.height / scale - (y1 - y0)) / 2;
    c.setDirty(true, true);
  }, { types, clip, first });
  await until(page, plotsAtZoom, null, 900);
  await frames(page, 2);
}

// every plot on the page drawn for the canvas's zoom (our JS checks the zoom every 250 ms)
function plotsAtZoom() {
  const want = Math.max(0.25, window.app.canvas.ds.scale * (window.devicePixelRatio || 1));
  return window.app.graph._nodes.every((n) => !n.__lsCanvas?.isConnected ||
    Math.abs((n.__lsDrawn?.scale ?? -1) - want) < 1e-6);
}

// reload the page (the workflow comes back from the browser's storage), then run the same
// prompt again (every node cached: onExecuted does not fire), then zoom in
async function reloadAndRerun(page, ex) {
  const prompt = standIns(ex.prompt, spec.stand_ins);
  await stored(page, 1500);
  await page.reload({ waitUntil: "domcontentloaded" });
  await openApp(page, false);
  await until(page, plotDrawn, PLOT, 1500);
  await frames(page);
  ex.after_reload = await plotState(page);
  const shot = `${spec.out_dir}/after_reload.png`;
  await focusNodes(page, PLOT, undefined, true);
  await page.screenshot({ path: shot });
  result.screenshots.push(shot);
  ex.after_cached_run = { ...(await runPrompt(page, prompt)), ...(await plotState(page)) };
  await page.evaluate(() => { window.app.canvas.ds.scale = 2.5; window.app.canvas.setDirty(true, true); });
  await until(page, (ls) => { // the plot's backing store follows the zoom
    const c = window.app.graph._nodes.find((n) => ls.includes(n.type)).__lsCanvas;
    return c.width / parseFloat(c.style.width) >= 2.4;
  }, PLOT, 900);
  ex.sharp_at_zoom = await page.evaluate((ls) => {
    const c = window.app.graph._nodes.find((n) => ls.includes(n.type)).__lsCanvas;
    return { backing_over_css: c.width / parseFloat(c.style.width) };
  }, PLOT);
  ex.bounds = await plotBounds(page);
  ex.palette = await paletteSwitch(page);
  ex.after_tab_switch = await tabSwitch(page);
}

// the plot's on-screen rectangle against the node's (body below the title bar)
async function plotBounds(page) {
  await focusNodes(page, PLOT, undefined, true);
  return page.evaluate((ls) => {
    const app = window.app;
    const node = app.graph._nodes.find((n) => ls.includes(n.type));
    const el = app.canvas.canvas.getBoundingClientRect();
    const [x0, y0] = app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1]]);
    const [x1, y1] = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0],
      node.pos[1] + node.size[1]]);
    const r = node.__lsCanvas.getBoundingClientRect();
    return { node: [x0 + el.left, y0 + el.top, x1 + el.left, y1 + el.top],
             plot: [r.left, r.top, r.right, r.bottom] };
  }, PLOT);
}

// switch the colour palette: the plot is redrawn without a run (its background follows)
async function paletteSwitch(page) {
  const pixel = () => page.evaluate((ls) => {
    const c = window.app.graph._nodes.find((n) => ls.includes(n.type)).__lsCanvas;
    return [...c.getContext("2d").getImageData(1, 1, 1, 1).data.slice(0, 3)];
  }, PLOT);
  const setPalette = (id) => page.evaluate((id) =>
    window.app.extensionManager.setting.set("Comfy.ColorPalette", id), id);
  // both plots' backgrounds redrawn (lighter, or back to the first colour), at most 1.2 s
  const redrawn = (want) => until(page, ({ ls, want }) => {
    const px = (c) => (c ? [...c.getContext("2d").getImageData(1, 1, 1, 1).data.slice(0, 3)]
      : null);
    const plot = px(window.app.graph._nodes.find((n) => ls.includes(n.type)).__lsCanvas);
    const cmp = px(window.app.graph._nodes.find(
      (n) => n.type === "LearnedSchedules_CompareSchedules")?.__lsCanvas);
    const sum = (p) => p[0] + p[1] + p[2];
    if (want.light) {
      return sum(plot) > sum(want.before) + 200 && (!cmp || sum(cmp) > want.cmp + 200);
    }
    return plot.join() === want.before.join() && (!cmp || sum(cmp) === want.cmp);
  }, { ls: PLOT, want }, 1200);
  const before = await pixel();
  const dark = await comparePixel(page);
  const cmpSum = dark ? dark[0] + dark[1] + dark[2] : 0;
  await setPalette("light");
  await redrawn({ light: true, before, cmp: cmpSum });
  await frames(page);
  const light = await pixel();
  const shot = `${spec.out_dir}/light_palette.png`;
  await page.screenshot({ path: shot });
  result.screenshots.push(shot);
  const compareLight = await comparePixel(page);
  await setPalette("dark");
  await redrawn({ light: false, before, cmp: cmpSum });
  await frames(page);
  return { before, light, after: await pixel(), compare_light: compareLight,
           compare_dark: await comparePixel(page) };
}

// the background of the Compare Schedules plot (drawn by our JS in the palette's colours)
async function comparePixel(page) {
  return page.evaluate(() => {
    const c = window.app.graph._nodes.find((n) => n.type === "LearnedSchedules_CompareSchedules")
      ?.__lsCanvas;
    return c ? [...c.getContext("2d").getImageData(1, 1, 1, 1).data.slice(0, 3)] : null;
  });
}

// a step-wise policy picked in Learned Schedule: the sentence on screen, the message on the
// node instead of its old plot, and the images downstream that this run did not make cleared
async function errorOnScreen(page, ex) {
  // first a good run with a new seed, so every image on screen is from this page's last run
  const fresh = standIns(ex.prompt, spec.stand_ins);
  for (const node of Object.values(fresh)) {
    if (node.class_type === "RandomNoise") node.inputs.noise_seed += 7;
  }
  await runPrompt(page, fresh);
  const prompt = JSON.parse(JSON.stringify(fresh));
  for (const node of Object.values(prompt)) {
    if (node.class_type === LS) node.inputs.policy = spec.stepwise;
  }
  const downstream = await page.evaluate((ls) => {
    const graph = window.app.graph;
    const start = graph._nodes.find((n) => n.type === ls);
    const seen = new Set();
    const todo = [start];
    while (todo.length) {
      for (const out of todo.pop().outputs || []) {
        for (const id of out.links || []) {
          const link = graph.links?.get?.(id) ?? graph.links?.[id];
          const next = link && graph.getNodeById(link.target_id);
          if (next && !seen.has(next.id)) { seen.add(next.id); todo.push(next); }
        }
      }
    }
    return graph._nodes.filter((n) => seen.has(n.id) && n.type === "PreviewImage")
      .map((n) => String(n.id));
  }, LS);
  const imagesBefore = await page.evaluate((ids) => ids.map((id) =>
    window.app.nodeOutputs?.[id]?.images?.length ?? 0), downstream);
  const run = await runPrompt(page, prompt);
  // the dialog, and our JS's check 800 ms later that it shows the sentence (else a toast)
  await page.waitForTimeout(1500);
  const out = { status: run.status, shown: await messagesOnScreen(page), images_before: imagesBefore,
    images_after: await page.evaluate((ids) => ids.map((id) =>
      window.app.nodeOutputs?.[id]?.images?.length ?? 0), downstream),
    plot: await drawnPlot(page, LS) };
  await focusNodes(page, [LS, "PreviewImage"]);
  const shot = `${spec.out_dir}/error_on_screen.png`;
  await page.screenshot({ path: shot });
  result.screenshots.push(shot);
  await page.keyboard.press("Escape");
  await frames(page);
  return out;
}

// open a new blank workflow tab, then come back (as clicking the tabs does)
async function tabSwitch(page) {
  const command = (id) => page.evaluate((id) => window.app.extensionManager.command.execute(id), id);
  await command("Comfy.NewBlankWorkflow");
  await until(page, () => window.app.graph._nodes.length === 0, null, 1200);
  await frames(page);
  const blank = await page.evaluate(() => window.app.graph._nodes.length);
  await command("Workspace.PreviousOpenedWorkflow");
  await page.waitForFunction((ls) => window.app.graph._nodes.some((n) => ls.includes(n.type)),
    PLOT,
    { timeout: 30000 }).catch(() => {});
  await until(page, plotDrawn, PLOT, 1200);
  await frames(page, 3);
  return { blank_nodes: blank, ...(await plotState(page)) };
}

const THUMB = { x: 240, y: 135, width: 760, height: 760 }; // below the tab bar and workflow name
const THUMB_NODES = ["SaveImage", "PreviewImage", "LearnedSchedules_DistanceToReference"];
async function thumbnail(page, stem, ran) {
  // a run example: its results; one that needs the user's model: its note and our node
  await focusNodes(page, ran ? THUMB_NODES : ["MarkdownNote", ...PLOT], THUMB);
  await page.screenshot({ path: `${spec.thumbnails_dir}/${stem}.jpg`, type: "jpeg", quality: 82,
                          clip: THUMB });
}

// the results of a run example (its images and scores) in a taller window, for the README
async function picture(page, path) {
  const size = page.viewportSize();
  await page.setViewportSize({ width: 1000, height: 1500 });
  await focusNodes(page, THUMB_NODES, { x: 60, y: 190, width: 880, height: 1290 });
  const box = await page.evaluate((types) => { // the nodes' rectangle on screen
    const c = window.app.canvas;
    const nodes = window.app.graph._nodes.filter((n) => types.includes(n.type));
    const title = window.LiteGraph.NODE_TITLE_HEIGHT || 30;
    const [x0, y0] = c.ds.convertOffsetToCanvas([Math.min(...nodes.map((n) => n.pos[0])),
      Math.min(...nodes.map((n) => n.pos[1] - title))]);
    const [x1, y1] = c.ds.convertOffsetToCanvas([
      Math.max(...nodes.map((n) => n.pos[0] + n.size[0])),
      Math.max(...nodes.map((n) => n.pos[1] + n.size[1]))]);
    const r = c.canvas.getBoundingClientRect();
    return { x: r.left + x0 - 6, y: r.top + y0 - 6, width: x1 - x0 + 12, height: y1 - y0 + 12 };
  }, THUMB_NODES);
  await page.screenshot({ path, clip: box });
  await page.setViewportSize(size);
  await frames(page, 3);
}

// one renderer: its own browser context (fresh local storage), settings stored on the server
// before the page loads
async function runCase(c) {
  const settings = [["Comfy.TutorialCompleted", true], ["Comfy.Minimap.Visible", false],
    ["Comfy.VueNodes.Enabled", !!c.vue]];
  for (const [key, value] of settings) {
    await fetch(`${url}/settings/${key}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(value),
    }).catch(() => {});
  }
  const out = { examples: {}, ours: [] };
  result.cases[c.name] = out;
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  // only 127.0.0.1: the newer frontends ask api.comfy.org for releases and node metadata
  const local = new URL(url).origin;
  await context.route((u) => !u.href.startsWith(local) && !u.href.startsWith("data:") &&
    !u.href.startsWith("blob:"), (route) => route.abort());
  // warnings and errors our JS causes, also when the frontend prints them (a deprecation)
  await context.exposeBinding("__lsReport", (_, m) => out.ours.push(m));
  await context.addInitScript((ours) => {
    for (const level of ["warn", "error"]) {
      const original = console[level];
      console[level] = function (...args) {
        const stack = new Error().stack || "";
        if (stack.includes(ours)) {
          window.__lsReport?.({ level, text: args.map(String).join(" ").slice(0, 400) });
        }
        return original.apply(this, args);
      };
    }
  }, OURS);
  const page = await context.newPage();
  page.on("console", (m) => {
    if (["warning", "error"].includes(m.type()) && (m.location()?.url || "").includes(OURS)) {
      out.ours.push({ level: m.type(), text: m.text().slice(0, 400) });
    }
  });
  page.on("pageerror", (e) => {
    console.error("pageerror:", e.message);
    if (String(e.stack).includes(OURS)) out.ours.push({ level: "pageerror", text: e.message });
  });
  page.on("dialog", async (d) => {
    if (d.type() === "beforeunload") return d.accept(); // "unsaved changes" on reload
    alerts.push(d.message());
    return d.dismiss();
  });
  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 90000 });
  await openApp(page);

  if (spec.no_policy) {
    // a fresh server with an empty policy folder: open each example, run it (tiny models
    // swapped in, the policy as the example names it), read what the screen says
    result.dialog_text = {};
    for (const stem of spec.no_policy) {
      await openTemplate(page, stem);
      result.new_node_policy ??= await page.evaluate((ls) => {
        const node = window.LiteGraph.createNode(ls);
        return node.widgets.find((w) => w.name === "policy").value;
      }, LS);
      const original = await page.evaluate(async () => (await window.app.graphToPrompt()).output);
      const prompt = standIns(original, spec.stand_ins);
      for (const [id, node] of Object.entries(prompt)) {
        if (PLOT.includes(node.class_type)) node.inputs.policy = original[id].inputs.policy;
      }
      await runPrompt(page, prompt);
      await page.waitForFunction(() => document.querySelector(
        '[role="dialog"], .p-toast-message'), null, { timeout: 30000 }).catch(() => {});
      await page.waitForTimeout(1200);
      result.dialog_text[stem] = await messagesOnScreen(page);
      const shot = `${spec.out_dir}/no_policy_${stem.replace(/[^A-Za-z0-9]+/g, "_")}.png`;
      await page.screenshot({ path: shot });
      result.screenshots.push(shot);
      await page.keyboard.press("Escape");
      await page.waitForTimeout(400);
    }
  }

  for (const stem of spec.no_policy ? [] : spec.examples) {
    const before = alerts.length;
    const t0 = Date.now();
    const ex = { thumbnail_width: await openTemplate(page, stem) };
    const ms = (key) => { ex.ms = { ...ex.ms, [key]: Date.now() - t0 }; };
    ms("open");
    ex.opened = await readable(page);
    ex.description = lastDescription;
    ex.loaded_nodes = await page.evaluate(() => window.app.graph._nodes.length);
    ex.prompt = (await page.evaluate(async () => (await window.app.graphToPrompt()).output));
    ex.alerts = await page.evaluate(() => [...document.querySelectorAll(
      ".p-toast-message-error")].map((e) => e.innerText));
    ex.alerts.push(...alerts.slice(before));
    if (spec.run.includes(stem)) {
      Object.assign(ex, await runPrompt(page, standIns(ex.prompt, spec.stand_ins)));
      ms("run");
      await page.waitForFunction((ls) => window.app.graph._nodes
        .find((n) => ls.includes(n.type))?.properties?.learned_schedule_plot, PLOT, { timeout: 30000 }).catch(() => {});
      await until(page, plotDrawn, PLOT, 400);
      await frames(page);
      Object.assign(ex, await plotState(page));
      ex.compare = await drawnPlot(page, "LearnedSchedules_CompareSchedules");
      ex.distance = await page.evaluate(() => window.app.graph._nodes.find(
        (n) => n.type === "LearnedSchedules_DistanceToReference")?.__lsText?.value ?? "");
      ex.sampler_plot = await drawnPlot(page, PLOT[1]);
      ex.text = await page.evaluate((t) => window.app.graph._nodes.find(
        (n) => n.type === t)?.__lsText?.value ?? "", TEXT);
      if (spec.thumbnails_dir) {
        await thumbnail(page, stem, true);
      }
      if (spec.pictures?.[stem]) await picture(page, spec.pictures[stem]);
      ex.screen = await screenState(page, c.vue);
      ms("screen");
      const name = `${c.name}_${stem}`.replace(/[^A-Za-z0-9]+/g, "_");
      if (c.full && stem === spec.run[0]) {
        await reloadAndRerun(page, ex);
        ex.screen_after_reload = await screenState(page, c.vue);
        if (spec.stepwise) ex.error_on_screen = await errorOnScreen(page, ex);
      } else { // the workflow comes back from the browser's storage
        await stored(page, 1000);
        await page.reload({ waitUntil: "domcontentloaded" });
        await openApp(page, false);
        // the workflow restored, then its plot attached (a frontend that attaches only what is
        // in view may restore a view away from it: screenState zooms onto it)
        await page.waitForFunction((ls) => window.app.graph._nodes.some((n) => ls.includes(n.type)),
          PLOT, { timeout: 30000 }).catch(() => {});
        await until(page, (ls) => window.app.graph._nodes.find((n) => ls.includes(n.type))
          ?.__lsCanvas?.isConnected, PLOT, 3000);
        ex.screen_after_reload = await screenState(page, c.vue);
      }
      ms("reload");
      const shot = `${spec.out_dir}/${name}.png`;
      await focusNodes(page, [...PLOT, "LearnedSchedules_CompareSchedules", TEXT]);
      await page.screenshot({ path: shot });
      result.screenshots.push(shot);
    } else if (spec.thumbnails_dir) {
      await thumbnail(page, stem, false);
    }
    out.examples[stem] = ex;
  }
  await context.close();
}

try {
  const cases = spec.cases || [{ name: "classic", vue: false, full: true }];
  for (const c of cases) {
    await runCase(c);
    caseIndex++;
  }
  result.examples = result.cases[cases[0].name].examples;
  result.ok = true;
} catch (e) {
  result.error = String((e && e.stack) || e);
} finally {
  await browser.close();
}
writeFileSync(`${spec.out_dir}/result.json`, JSON.stringify(result, null, 1));
// the whole result is in the file (a pipe takes only 64 KiB in one write): one short line here
writeFileSync(1, JSON.stringify({ ok: result.ok, error: result.error,
  result_file: `${spec.out_dir}/result.json` }) + "\n");
