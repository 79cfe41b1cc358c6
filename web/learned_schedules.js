// ComfyUI extension: a canvas plot of the schedule on the Learned Schedule and Schedule Plot
// nodes, fed by the nodes' `ui` output through onExecuted (a DOM widget, so it also renders
// under the Vue node renderer, where onDrawForeground does not run).
import { app } from "../../scripts/app.js";
import { drawSchedule } from "./schedule_plot.js";

const NODES = {
  LearnedSchedules_LearnedSchedule: "learned_schedule",
  LearnedSchedules_SchedulePlot: "schedule_plot",
};

function isDarkTheme() {
  try {
    const palette = app.ui?.settings?.getSettingValue?.("Comfy.ColorPalette");
    if (typeof palette === "string") return !palette.toLowerCase().includes("light");
  } catch (e) {
    /* fall back to the page colour */
  }
  try {
    const rgb = getComputedStyle(document.body).backgroundColor.match(/\d+/g) || [0, 0, 0];
    const [r, g, b] = rgb.map(Number);
    return 0.299 * r + 0.587 * g + 0.114 * b < 128;
  } catch (e) {
    return true;
  }
}

function redraw(node) {
  const canvas = node.__lsCanvas;
  if (!canvas) return;
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(120, canvas.clientWidth || canvas.parentElement?.clientWidth || 240);
  const h = Math.max(120, canvas.clientHeight || 180);
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  drawSchedule(ctx, w, h, node.__lsPayload || null, isDarkTheme());
}

app.registerExtension({
  name: "learned_schedules.plot",
  beforeRegisterNodeDef(nodeType, nodeData) {
    const key = NODES[nodeData?.name];
    if (!key) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      const root = document.createElement("div");
      root.className = "learned-schedules-plot";
      root.style.cssText = "width:100%;height:100%;min-height:180px;display:flex;";
      const canvas = document.createElement("canvas");
      canvas.style.cssText = "width:100%;height:100%;min-height:180px;display:block;";
      canvas.dataset.testid = "learned-schedule-canvas";
      root.appendChild(canvas);
      this.__lsCanvas = canvas;
      this.__lsPayload = null;
      this.addDOMWidget("schedule_plot", "div", root, {
        serialize: false,
        hideOnZoom: false,
        getMinHeight: () => 180,
      });
      if (typeof ResizeObserver !== "undefined") {
        new ResizeObserver(() => redraw(this)).observe(root);
      }
      requestAnimationFrame(() => redraw(this));
      return r;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = onExecuted?.apply(this, arguments);
      const payload = message?.[key]?.[0];
      if (payload) {
        this.__lsPayload = payload;
        redraw(this);
      }
      return r;
    };
  },
});
