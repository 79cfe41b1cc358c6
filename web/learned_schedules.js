// ComfyUI extension: the schedule plot on the Learned Schedule, Schedule Plot, Learned Sampler,
// Calibrate Schedule, Compare Schedules and Preview Sigmas nodes, and the text on Schedule to
// Text and Distance to Reference. DOM widgets (they also render under the Vue node renderer,
// where onDrawForeground does not run), fed by the nodes' `ui` output through onExecuted.
//
// Errors on screen: when one of our nodes fails, its sentence is shown where the user looks: a
// toast, and on the node itself in place of the last run's plot; the plots, texts and images
// downstream of it, which this run did not make, are cleared so an earlier run's pictures never
// sit silently beside fresh ones. The templates panel shows each example's one-sentence
// description (the frontend gives custom-node templates their file name as description), and
// the help pages wrap long paths.
//
// What keeps the plot: the last payload is stored in node.properties, which the workflow
// serialises, so it comes back after a reload or a tab switch and stays after a cached run
// (when onExecuted does not fire). It is redrawn when the colour palette changes and when the
// canvas zoom or the device pixel ratio changes (one backing pixel per screen pixel).
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import { backingSize, drawComparison, drawSchedule, paletteColors } from "./schedule_plot.js";

// node type -> [the `ui` key its payload arrives under, the drawing function]
const PLOT_NODES = {
  LearnedSchedules_LearnedSchedule: ["learned_schedule", drawSchedule],
  LearnedSchedules_SchedulePlot: ["schedule_plot", drawSchedule],
  LearnedSchedules_LearnedSampler: ["learned_schedule", drawSchedule],
  LearnedSchedules_CalibrateSchedule: ["learned_schedule", drawSchedule],
  LearnedSchedules_CompareSchedules: ["compare_schedules", drawComparison],
  LearnedSchedules_PreviewSigmas: ["compare_schedules", drawComparison],
};
const OUR_PREFIX = "LearnedSchedules_";
// the Learned Sampler's sigmas are known only after sampling: its sampler function sends them
// (each image's) with this websocket event, addressed to the node by id
const SAMPLER_EVENT = "learned_schedules.sampler_sigmas";
const TEXT_NODES = new Set(["LearnedSchedules_ScheduleToText",
  "LearnedSchedules_DistanceToReference"]);
const PAYLOAD_PROP = "learned_schedule_plot";
const TEXT_PROP = "schedule_text";
const TEXT_WIDGET = "learned_schedules_text";
const PLOT_HEIGHT = 200;
const CSS_VARS = ["--comfy-input-bg", "--comfy-menu-bg", "--input-text", "--descrip-text",
  "--border-color"];

// In the Vue node renderer ("Nodes 2.0") a node's height follows its content: frontends before
// ~1.33 give a DOM widget no height of its own (the plot would be 0 px high). The classic
// renderer sizes the widget from getMinHeight in screen pixels, so this applies to Vue nodes only.
const VUE_NODE_CSS = `.lg-node .learned-schedules-plot { min-height: ${PLOT_HEIGHT}px; }
.lg-node .learned-schedules-text { min-height: 60px; }
.node-help-content, .node-help-content * { overflow-wrap: anywhere; }
.node-help-content pre { white-space: pre-wrap; }`;

const plotted = new Set(); // nodes with a plot widget (for palette / zoom redraws)

function cssVars() {
  const style = getComputedStyle(document.documentElement);
  return Object.fromEntries(CSS_VARS.map((k) => [k, style.getPropertyValue(k)]));
}

function zoom() {
  return app.canvas?.ds?.scale || 1;
}

function redraw(node) {
  const canvas = node.__lsCanvas;
  if (!canvas || !canvas.isConnected) return;
  const root = canvas.parentElement;
  const w = Math.max(60, Math.floor(root?.clientWidth || 240));
  const h = Math.max(60, Math.floor(root?.clientHeight || PLOT_HEIGHT));
  const size = backingSize(w, h, zoom(), window.devicePixelRatio || 1);
  if (canvas.width !== size.width) canvas.width = size.width;
  if (canvas.height !== size.height) canvas.height = size.height;
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(size.scale, 0, 0, size.scale, 0, 0);
  const draw = PLOT_NODES[node.type]?.[1] || drawSchedule;
  draw(ctx, w, h, node.properties?.[PAYLOAD_PROP] || null, paletteColors(cssVars()));
  node.__lsDrawn = { w, h, scale: size.scale };
}

function redrawAll() {
  for (const node of plotted) {
    if (!node.graph) plotted.delete(node);
    else redraw(node);
  }
}

function setPayload(node, payload) {
  node.properties = node.properties || {};
  node.properties[PAYLOAD_PROP] = payload; // serialised with the workflow
  redraw(node);
  remember(node);
}

function setText(node, text) {
  node.properties = node.properties || {};
  node.properties[TEXT_PROP] = text;
  if (node.__lsText) node.__lsText.value = text;
  remember(node);
}

// ---- errors on screen --------------------------------------------------------------------
const run = { done: new Set() }; // the nodes the current prompt executed or took from cache

function toast(severity, summary, detail, life = 20000) {
  try {
    const t = app.extensionManager?.toast;
    if (typeof t?.add === "function") {
      t.add({ severity, summary, detail, life });
      return true;
    }
  } catch (e) {
    console.warn("learned_schedules: could not show a toast", e);
  }
  return false;
}

// the nodes fed (directly or not) by `start`'s outputs
function downstream(start) {
  const graph = app.graph;
  const seen = new Set();
  const todo = [start];
  while (todo.length) {
    const node = todo.pop();
    for (const out of node?.outputs || []) {
      for (const id of out.links || []) {
        const link = graph.links?.get?.(id) ?? graph.links?.[id];
        const next = link && graph.getNodeById(link.target_id);
        if (next && !seen.has(next.id)) {
          seen.add(next.id);
          todo.push(next);
        }
      }
    }
  }
  return [...seen].map((id) => graph.getNodeById(id)).filter(Boolean);
}

// an earlier run's images on a node this run did not reach: removed, in both renderers
function clearImages(node) {
  const key = String(node.id);
  try {
    if (app.nodeOutputs?.[key]) {
      const outputs = { ...app.nodeOutputs };
      delete outputs[key];
      app.nodeOutputs = outputs;
    }
  } catch (e) {
    console.warn("learned_schedules: could not clear an earlier run's images", e);
  }
  node.imgs = undefined;
  node.setDirtyCanvas?.(true, true);
}

function onExecutionError({ detail }) {
  if (!String(detail?.node_type || "").startsWith(OUR_PREFIX)) return;
  const node = app.graph?.getNodeById?.(Number(detail.node_id));
  const message = String(detail.exception_message || "").trim();
  const title = node?.title || detail.node_type.slice(OUR_PREFIX.length);
  // the sentence on screen: the frontend's error dialog where it shows one (1.32), else a toast
  setTimeout(() => {
    const shown = [...document.querySelectorAll('[role="dialog"], [role="alertdialog"]')]
      .some((d) => d.innerText?.includes(message.slice(0, 80)));
    if (!shown) toast("error", `${title}: not run`, message);
  }, 800);
  if (!node) return;
  if (PLOT_NODES[node.type]) setPayload(node, { error: message });
  else if (TEXT_NODES.has(node.type)) setText(node, `Not run this time: ${message}`);
  const why = `the run stopped at ${title} (${message.slice(0, 160)})`;
  for (const next of downstream(node)) {
    if (run.done.has(String(next.id))) continue;
    if (PLOT_NODES[next.type]) setPayload(next, { error: why });
    else if (TEXT_NODES.has(next.type)) setText(next, `Not run this time: ${why}`);
    else clearImages(next);
  }
  app.canvas?.setDirty?.(true, true);
}

// ---- template descriptions ---------------------------------------------------------------
// the frontend shows a custom-node template's file name as its description; each example's
// one sentence is stored in the workflow (extra.learned_schedules.description) and written on
// its card when the templates panel shows it
const MODULE = new URL(import.meta.url).pathname.split("/").slice(-2, -1)[0];
let descriptions = null;

async function loadDescriptions() {
  const names = (await api.getWorkflowTemplates?.())?.[decodeURIComponent(MODULE)] || [];
  const out = {};
  await Promise.all(names.map(async (name) => {
    const r = await api.fetchApi(`/workflow_templates/${MODULE}/${encodeURIComponent(name)}.json`);
    const text = r.ok ? (await r.json())?.extra?.learned_schedules?.description : null;
    if (typeof text === "string" && text) out[name] = text;
  }));
  return out;
}

function describeCards() {
  const cards = document.querySelectorAll('[data-testid^="template-workflow-"]');
  if (!cards.length) return;
  if (!descriptions) {
    descriptions = loadDescriptions().catch((e) => {
      console.warn("learned_schedules: no template descriptions", e);
      return {};
    });
  }
  descriptions.then((byName) => {
    for (const card of document.querySelectorAll('[data-testid^="template-workflow-"]')) {
      const name = card.dataset.testid.slice("template-workflow-".length);
      const text = byName[name];
      if (!text) continue;
      if (card.querySelector("[data-ls-description]")) continue;
      // 1.32 shows the name again as the description: replace it; newer frontends show no
      // description for a custom-node template: add one under the title
      const shown = name.replace(/[-_]/g, " ").trim();
      let el = [...card.querySelectorAll("p, span, div")].find((e) => e.children.length === 0 &&
        e.textContent.trim() === shown);
      const title = card.querySelector("h3");
      if (!el && title?.parentElement) {
        el = document.createElement("p");
        el.className = "m-0 line-clamp-3 text-xs opacity-80";
        title.after(el);
      }
      if (!el) continue;
      el.textContent = text;
      el.title = text;
      el.dataset.lsDescription = "1";
    }
  });
}

function addPlotWidget(node) {
  const root = document.createElement("div");
  root.className = "learned-schedules-plot";
  root.style.cssText = "width:100%;height:100%;overflow:hidden;box-sizing:border-box;" +
    "display:block;position:relative;";
  const canvas = document.createElement("canvas");
  canvas.style.cssText = "display:block;position:absolute;left:0;top:0;";
  canvas.dataset.testid = "learned-schedule-canvas";
  root.appendChild(canvas);
  node.__lsCanvas = canvas;
  const widget = node.addDOMWidget("schedule_plot", "div", root, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => PLOT_HEIGHT,
  });
  widget.serialize = false; // no value in widgets_values (the frontend checks the widget)
  if (typeof ResizeObserver !== "undefined") new ResizeObserver(() => redraw(node)).observe(root);
  plotted.add(node);
  const [w, h] = node.size;
  node.setSize([Math.max(w, 320), Math.max(h, node.computeSize?.()[1] ?? h)]);
  requestAnimationFrame(() => redraw(node));
}

function addTextWidget(node) {
  const area = document.createElement("textarea");
  area.className = "learned-schedules-text";
  area.readOnly = true;
  area.placeholder = "run the graph to see the numbers";
  area.dataset.testid = "schedule-text";
  area.style.cssText = "width:100%;height:100%;box-sizing:border-box;resize:none;" +
    "font:11px monospace;background:var(--comfy-input-bg);color:var(--input-text);" +
    "border:1px solid var(--border-color);border-radius:4px;padding:4px;";
  area.value = node.properties?.[TEXT_PROP] || "";
  node.__lsText = area;
  // a widget type no renderer knows: the Vue node renderer replaces the registered ones
  // ("textarea", "multiline", "customtext") by its own textarea, which would hide this one
  const widget = node.addDOMWidget("schedule_text", TEXT_WIDGET, area, {
    serialize: false,
    getMinHeight: () => 60,
    getValue: () => area.value,
    setValue: (v) => { area.value = typeof v === "string" ? v : ""; },
  });
  widget.serialize = false;
}

// a property change is not a graph edit: tell the workflow's change tracker, so the payload is
// in the state the frontend stores (page reload) and restores (tab switch). Newer frontends
// name the call captureCanvasState (checkState warns there); older ones have only checkState.
function remember(node) {
  try {
    const tracker = app.extensionManager?.workflow?.activeWorkflow?.changeTracker;
    if (typeof tracker?.captureCanvasState === "function") tracker.captureCanvasState();
    else tracker?.checkState?.();
  } catch (e) {
    console.warn("learned_schedules: could not store the plot with the workflow", e);
  }
  node.setDirtyCanvas?.(true, false);
}

function chain(proto, name, after) {
  const original = proto[name];
  proto[name] = function () {
    const r = original?.apply(this, arguments);
    after.apply(this, arguments);
    return r;
  };
}

app.registerExtension({
  name: "learned_schedules.plot",

  setup() {
    const style = document.createElement("style");
    style.textContent = VUE_NODE_CSS;
    document.head.appendChild(style);
    api.addEventListener("execution_start", () => run.done.clear());
    api.addEventListener("executed", ({ detail }) => run.done.add(String(detail?.node ?? "")));
    api.addEventListener("execution_cached", ({ detail }) => {
      for (const id of detail?.nodes || []) run.done.add(String(id));
    });
    api.addEventListener("execution_error", onExecutionError);
    let pending = false;
    new MutationObserver(() => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; describeCards(); });
    }).observe(document.body, { childList: true, subtree: true });
    api.addEventListener(SAMPLER_EVENT, ({ detail }) => {
      const node = detail?.node != null ? app.graph?.getNodeById?.(Number(detail.node)) : null;
      const payload = detail?.learned_schedule?.[0];
      if (!node || !payload) return;
      setPayload(node, payload);
    });
    // palette changes rewrite the frontend's CSS variables (a style element or attribute)
    const observer = new MutationObserver(() => requestAnimationFrame(redrawAll));
    observer.observe(document.documentElement, { attributes: true, attributeFilter: ["style", "class"] });
    observer.observe(document.head, { childList: true, subtree: true, characterData: true });
    // zoom and device pixel ratio: checked cheaply a few times a second
    let last = "";
    setInterval(() => {
      const key = `${zoom()}|${window.devicePixelRatio}`;
      if (key !== last) {
        last = key;
        redrawAll();
      }
    }, 250);
  },

  beforeRegisterNodeDef(nodeType, nodeData) {
    const key = PLOT_NODES[nodeData?.name]?.[0];
    if (key) {
      chain(nodeType.prototype, "onNodeCreated", function () {
        this.properties = this.properties || {};
        addPlotWidget(this);
      });
      chain(nodeType.prototype, "onExecuted", function (message) {
        const payload = message?.[key]?.[0];
        if (!payload) return;
        setPayload(this, payload);
      });
      chain(nodeType.prototype, "onConfigure", function () {
        requestAnimationFrame(() => redraw(this)); // properties restored from the workflow
      });
      chain(nodeType.prototype, "onRemoved", function () {
        plotted.delete(this);
      });
    } else if (TEXT_NODES.has(nodeData?.name)) {
      chain(nodeType.prototype, "onNodeCreated", function () {
        this.properties = this.properties || {};
        addTextWidget(this);
      });
      chain(nodeType.prototype, "onExecuted", function (message) {
        const text = message?.text?.[0];
        if (typeof text !== "string") return;
        setText(this, text);
      });
      chain(nodeType.prototype, "onConfigure", function () {
        if (this.__lsText) this.__lsText.value = this.properties?.[TEXT_PROP] || "";
      });
    }
  },
});
