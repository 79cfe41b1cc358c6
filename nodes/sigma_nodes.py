"""Sigma utilities next to core's (``sampling/custom_sampling/sigmas``): a comparison plot of
several schedules, a pass-through preview that sits between a scheduler and a sampler, and
the split of a schedule for a two-expert model (Wan 2.2 A14B's high-noise / low-noise experts).

The two plots are output nodes. The plot on the node is drawn by the frontend
(web/schedule_plot.js) from the curves sent as the node's ``ui`` output, in the colours of the
active palette, and is saved with the workflow (it comes back after a reload); the IMAGE output
is the same plot rendered here, to save or to pass on.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..plots import X_AXES, render_sigma_comparison
from ..policies.experts import split_at_boundary
from ..policies.families import I2V_EXPERT_BOUNDARY, get_family
from .input_checks import no_unknown_inputs, number_in_range

CATEGORY = "sampling/custom_sampling/sigmas"
COMPARE_SLOTS = 6
DEFAULT_LABELS = "learned, simple, beta, karras, AYS, other"


def _image(rgb) -> torch.Tensor:
    """``[H, W, 3]`` uint8 -> a ComfyUI IMAGE ``[1, H, W, 3]`` in [0, 1]."""
    return torch.from_numpy(rgb).float().div(255.0)[None]


def _check_sigmas(sigmas, name: str) -> torch.Tensor:
    if not torch.is_tensor(sigmas) or sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(f"{name} is not a schedule: SIGMAS must be a list of at least two "
                         "numbers.")
    if not torch.isfinite(sigmas).all():
        raise ValueError(f"{name} holds NaN or infinite values.")
    return sigmas


def plot_payload(curves: dict[str, torch.Tensor], x_axis: str = "fraction",
                 normalize: bool = False, title: str = "") -> dict:
    """What the node's plot in the frontend draws (``ui["compare_schedules"]``)."""
    return {"curves": [{"label": f"{name} ({c.numel() - 1} steps)", "sigmas": c.tolist()}
                       for name, c in curves.items()],
            "x_axis": x_axis, "normalize": bool(normalize), "title": title}


def comparison_curves(schedules: list[torch.Tensor | None], labels: str
                      ) -> dict[str, torch.Tensor]:
    """Legend name -> SIGMAS for the connected slots, named in order by the comma-separated
    ``labels`` (a missing or repeated name falls back to ``sigmas_<slot>``)."""
    names = [n.strip() for n in labels.split(",")]
    curves: dict[str, torch.Tensor] = {}
    for slot, sigmas in enumerate(schedules, start=1):
        if sigmas is None:
            continue
        name = names[slot - 1] if slot <= len(names) and names[slot - 1] else f"sigmas_{slot}"
        if name in curves:
            name = f"{name} ({slot})"
        curves[name] = _check_sigmas(sigmas, name).detach().cpu().float()
    return curves


class CompareSchedules(io.ComfyNode):
    """Several schedules (learned, simple, beta, karras, AYS, ...) on one plot."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        slots = [io.Sigmas.Input("sigmas_1", tooltip="The first schedule (e.g. the learned "
                                                     "one); drawn solid, on top.")]
        slots += [io.Sigmas.Input(f"sigmas_{i}", optional=True,
                                  tooltip=f"Schedule {i} to compare (optional).")
                  for i in range(2, COMPARE_SLOTS + 1)]
        return io.Schema(
            node_id="LearnedSchedules_CompareSchedules",
            display_name="Compare Schedules",
            category=CATEGORY,
            description="Plots several SIGMAS on shared axes (their step counts aligned) and "
                        "outputs the plot as an image.",
            inputs=[
                *slots,
                io.String.Input("labels", default=DEFAULT_LABELS,
                                tooltip="Legend names of the connected inputs, in slot order, "
                                        "separated by commas."),
                io.Combo.Input("x_axis", options=list(X_AXES), default="fraction",
                               tooltip="fraction: step / steps, so schedules with different "
                                       "step counts line up from 0 to 1; step: the step index."),
                io.Boolean.Input("normalize", default=False,
                                 tooltip="Divide each schedule by its first sigma, to compare "
                                         "shapes across models with different sigma ranges."),
                io.String.Input("title", default="", tooltip="Optional title above the plot."),
            ],
            outputs=[io.Image.Output(tooltip="The plot (768x448).")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, sigmas_1, sigmas_2=None, sigmas_3=None, sigmas_4=None, sigmas_5=None,
                sigmas_6=None, labels: str = DEFAULT_LABELS, x_axis: str = "fraction",
                normalize: bool = False, title: str = "", **unknown) -> io.NodeOutput:
        no_unknown_inputs("Compare Schedules", unknown,
                          [f"sigmas_{i}" for i in range(1, 7)]
                          + ["labels", "x_axis", "normalize", "title"])
        curves = comparison_curves([sigmas_1, sigmas_2, sigmas_3, sigmas_4, sigmas_5,
                                    sigmas_6], labels)
        image = _image(render_sigma_comparison(curves, x_axis=x_axis, normalize=normalize,
                                               title=title))
        payload = plot_payload(curves, x_axis, normalize, title)
        return io.NodeOutput(image, ui={"compare_schedules": [payload]})


class PreviewSigmas(io.ComfyNode):
    """SIGMAS in, the same SIGMAS out, and a plot of them on the node."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LearnedSchedules_PreviewSigmas",
            display_name="Preview Sigmas",
            category=CATEGORY,
            description="Passes SIGMAS through unchanged and shows them as a plot; put it "
                        "between a scheduler and a sampler.",
            inputs=[io.Sigmas.Input("sigmas", tooltip="The schedule to look at."),
                    io.String.Input("label", default="sigmas",
                                    tooltip="The legend name of the schedule.")],
            outputs=[io.Sigmas.Output(tooltip="The same SIGMAS, unchanged."),
                     io.Image.Output(tooltip="The plot (768x448).")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, sigmas, label: str = "sigmas") -> io.NodeOutput:
        name = label.strip() or "sigmas"
        curve = _check_sigmas(sigmas, name).detach().cpu().float()
        image = _image(render_sigma_comparison({name: curve}, x_axis="step"))
        return io.NodeOutput(sigmas, image,
                             ui={"compare_schedules": [plot_payload({name: curve}, "step")]})


class SplitAtExpertBoundary(io.ComfyNode):
    """A schedule -> the high-noise and low-noise experts' SIGMAS, one step on the boundary."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        t2v = get_family("wan").expert_boundary
        return io.Schema(
            node_id="LearnedSchedules_SplitAtExpertBoundary",
            display_name="Split Sigmas at Expert Boundary",
            category=CATEGORY,
            description="Splits a schedule for a two-expert model (Wan 2.2 A14B): the step "
                        "nearest the boundary moves onto it; high SIGMAS go to the "
                        "high-noise expert's sampler, low SIGMAS to the low-noise one's.",
            inputs=[io.Sigmas.Input("sigmas", tooltip="The whole schedule (e.g. the Learned "
                                    "Schedule node's, for the high-noise expert's model)."),
                    io.Float.Input("boundary", default=t2v, min=0.001, max=0.999, step=0.005,
                                   tooltip=f"The model sigma where the high-noise expert "
                                           f"hands over: {t2v:g} for Wan 2.2 text-to-video, "
                                           f"{I2V_EXPERT_BOUNDARY:g} for image-to-video.")],
            outputs=[io.Sigmas.Output("high_sigmas", display_name="high SIGMAS",
                                      tooltip="From the start down to the boundary: the "
                                              "high-noise expert's SamplerCustomAdvanced "
                                              "(with the noise)."),
                     io.Sigmas.Output("low_sigmas", display_name="low SIGMAS",
                                      tooltip="From the boundary to the end: the low-noise "
                                              "expert's SamplerCustomAdvanced (DisableNoise, "
                                              "the first sampler's output as its latent).")],
        )

    @classmethod
    def execute(cls, sigmas, boundary: float) -> io.NodeOutput:
        boundary = number_in_range("boundary", boundary, 0.001, 0.999)
        high, low = split_at_boundary(_check_sigmas(sigmas, "sigmas").detach().cpu(), boundary)
        return io.NodeOutput(high, low)


NODES = [CompareSchedules, PreviewSigmas, SplitAtExpertBoundary]
