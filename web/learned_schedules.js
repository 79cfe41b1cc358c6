// ComfyUI extension: the schedule plot on the Learned Schedule, Learned Sampler, Calibrate
// Schedule and Schedule Plot nodes, and the text on Schedule to Text. DOM widgets (they also
// render under the Vue node renderer, where onDrawForeground does not run), fed by the nodes'
// `ui` output through onExecuted.
//
// What keeps the plot: the last payload is stored in node.properties, which the workflow
// serialises, so it comes back after a reload or a tab switch and stays after a cached run
// (when onExecuted does not fire). It is redrawn when the colour palette changes and when the
// canvas zoom or the device pixel ratio changes (one backing pixel per screen pixel).
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import { backingSize, drawSchedule, paletteColors } from "./schedule_plot.js";

const PLOT_NODES = {
  LearnedSchedules_LearnedSchedule: "learned_schedule",
  LearnedSchedules_SchedulePlot: "schedule_plot",
  LearnedSchedules_LearnedSampler: "learned_schedule",
  LearnedSchedules_CalibrateSchedule: "learned_schedule",
};
// the Learned Sampler's sigmas are known only after sampling: its sampler function sends them
// (each image's) with this websocket event, addressed to the node by id
const SAMPLER_EVENT = "learned_schedules.sampler_sigmas";
const TEXT_NODE = "LearnedSchedules_ScheduleToText";
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
.lg-node .learned-schedules-text { min-height: 60px; }`;

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
  drawSchedule(ctx, w, h, node.properties?.[PAYLOAD_PROP] || null, paletteColors(cssVars()));
  node.__lsDrawn = { w, h, scale: size.scale };
}

function redrawAll() {
  for (const node of plotted) {
    if (!node.graph) plotted.delete(node);
    else redraw(node);
  }
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
    api.addEventListener(SAMPLER_EVENT, ({ detail }) => {
      const node = detail?.node != null ? app.graph?.getNodeById?.(Number(detail.node)) : null;
      const payload = detail?.learned_schedule?.[0];
      if (!node || !payload) return;
      node.properties = node.properties || {};
      node.properties[PAYLOAD_PROP] = payload;
      redraw(node);
      remember(node);
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
    const key = PLOT_NODES[nodeData?.name];
    if (key) {
      chain(nodeType.prototype, "onNodeCreated", function () {
        this.properties = this.properties || {};
        addPlotWidget(this);
      });
      chain(nodeType.prototype, "onExecuted", function (message) {
        const payload = message?.[key]?.[0];
        if (!payload) return;
        this.properties[PAYLOAD_PROP] = payload; // serialised with the workflow
        redraw(this);
        remember(this);
      });
      chain(nodeType.prototype, "onConfigure", function () {
        requestAnimationFrame(() => redraw(this)); // properties restored from the workflow
      });
      chain(nodeType.prototype, "onRemoved", function () {
        plotted.delete(this);
      });
    } else if (nodeData?.name === TEXT_NODE) {
      chain(nodeType.prototype, "onNodeCreated", function () {
        this.properties = this.properties || {};
        addTextWidget(this);
      });
      chain(nodeType.prototype, "onExecuted", function (message) {
        const text = message?.text?.[0];
        if (typeof text !== "string") return;
        this.properties[TEXT_PROP] = text;
        if (this.__lsText) this.__lsText.value = text;
        remember(this);
      });
      chain(nodeType.prototype, "onConfigure", function () {
        if (this.__lsText) this.__lsText.value = this.properties?.[TEXT_PROP] || "";
      });
    }
  },
});
