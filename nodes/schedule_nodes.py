"""The pack's ComfyUI nodes (V3 API). Thin: the maths lives in ``policies/``, the ComfyUI
glue in ``comfy_bridge/``.

Batches: a sampler takes ONE SIGMAS tensor for the whole batch, so for a batch of several
latents the Learned Schedule node computes the schedule of the *first* batch item (its noise
and its prompt) and logs that it did so.
"""

from __future__ import annotations

import logging
import os

import folder_paths
import torch
from comfy_api.latest import io

from ..comfy_bridge.service import node_sigmas
from ..comfy_bridge.sigmas import step_counts
from ..policies.policy_file import read_metadata
from ..policies.schedule import validate_schedule
from .input_checks import number_in_range
from .policy_cache import get_policy
from .policy_choice import (
    STARTER,
    filter_files,
    missing_file_message,
    missing_policy_message,
    policy_options,
    policy_tooltip,
)

log = logging.getLogger("learned_schedules")

FOLDER = "learned_schedules"
CATEGORY = "sampling/custom_sampling/schedulers"
MAX_STEPS = 1000


def policy_files(role: str | None = None) -> list[str]:
    """The policy files in ``models/learned_schedules``; with a ``role`` (``schedule`` or
    ``sampler``), only those a node of that role can use (:mod:`.policy_choice`)."""
    names = folder_paths.get_filename_list(FOLDER)
    if role is None:
        return names
    return filter_files([(n, folder_paths.get_full_path(FOLDER, n)) for n in names], role)


def _policy_path(name: str) -> str:
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        raise ValueError(missing_file_message(name, policy_files()))
    return path


def _check_policy_file(name: str) -> str | bool:
    try:
        meta = read_metadata(_policy_path(name))
    except ValueError as exc:
        return str(exc)
    if meta.get("model_family") == "testbed":
        return (f"{name} was trained on the analytic testbed; it cannot schedule an image "
                "model.")
    return True


def _is_stepwise_file(name: str) -> bool:
    """Whether a (readable) policy file holds a step-wise (AdaGen) policy."""
    from ..policies.contract import POLICY_KINDS, is_stepwise  # filled via policy_file

    kind = (read_metadata(_policy_path(name)).get("architecture") or {}).get("policy")
    return is_stepwise(POLICY_KINDS.get(kind))


def check_policy(policy, role: str) -> None:
    """``ValueError`` with the sentence a user should see when ``policy`` cannot be used by a
    node of ``role`` (not a name, not installed, unreadable, trained on the testbed, or a
    step-wise policy in the one-shot node). Called from ``execute``, so the message reaches
    the frontend's error dialog even when another branch of the graph runs."""
    if not isinstance(policy, str):
        raise ValueError(f"policy must be the name of a policy file, got {policy!r}.")
    message = missing_policy_message(policy, policy_files(), role)
    if message is None:
        found = _check_policy_file(policy)
        message = None if found is True else found
    if message is None and role == "schedule" and _is_stepwise_file(policy):
        message = (f"{policy} is an AdaGen step-wise policy: it chooses each step while "
                   "sampling, so it has no schedule before sampling; use it in the Learned "
                   "Sampler node (SamplerCustomAdvanced's sampler input), or choose a one-shot "
                   f"policy here (the pack's starter: {STARTER['schedule']}).")
    if message is not None:
        raise ValueError(message)


def learned_sigmas(model, positive, noise, latent_image, policy_name: str, steps: int,
                   mode: str, denoise: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Learned sigmas (model's sigma space), the default sigmas, and the policy metadata
    (the bridge's :func:`comfy_bridge.service.node_sigmas` on the named policy file)."""
    if not 0 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS} (0 uses the policy's own "
                         f"step count), got {steps}.")
    loaded = get_policy(_policy_path(policy_name))
    sigmas, default = node_sigmas(model, positive, noise, latent_image, loaded, policy_name,
                                  steps, mode, denoise)
    return sigmas, default, loaded.metadata


def batch_notice(latent_image) -> str:
    """The line the node shows for a batch: one SIGMAS serves every image (empty for one)."""
    samples = latent_image.get("samples") if isinstance(latent_image, dict) else None
    n = int(samples.shape[0]) if torch.is_tensor(samples) and samples.ndim > 0 else 1
    if n <= 1:
        return ""
    return (f"Batch of {n}: every image uses the schedule of the first (a sampler takes one "
            "SIGMAS); the Learned Sampler gives each image its own.")


class LearnedSchedule(io.ComfyNode):
    """Schedules the sampler for this prompt and this noise with a learned policy."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LearnedSchedules_LearnedSchedule",
            display_name="Learned Schedule",
            category=CATEGORY,
            description="Chooses the sampler's sigmas for this prompt and this initial noise "
                        "with a learned policy (one policy call before sampling).",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model the sigmas are for "
                               "(any supported family: Flux, SD3, SDXL, SD1.x, Qwen-Image, Wan, "
                               "HunyuanVideo 1.5, LTX-Video...; the policy must be trained "
                               "for it)."),
                io.Conditioning.Input("positive", tooltip="The positive prompt's conditioning; "
                                      "its text tokens and pooled embedding feed the policy."),
                io.Noise.Input("noise", tooltip="The same NOISE that goes to "
                               "SamplerCustomAdvanced (e.g. RandomNoise): the node rebuilds "
                               "the exact initial noise from it."),
                io.Latent.Input("latent_image", tooltip="The same latent that goes to the "
                                "sampler (its size and batch define the noise)."),
                io.Combo.Input("policy",
                               options=policy_options(files := policy_files("schedule")),
                               tooltip=policy_tooltip(files, "schedule")),
                io.Int.Input("steps", default=0, min=0, max=MAX_STEPS,
                             tooltip="Sampler steps; 0 uses the policy's own step count, "
                                     "another count resamples the learned schedule."),
                io.Combo.Input("mode", options=["mean", "sample"], default="mean",
                               tooltip="mean: the policy's deterministic schedule (a "
                                       "Dirichlet policy's mean); sample: a draw, seeded by "
                                       "the noise seed (ART's clocks are deterministic: "
                                       "both agree)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Like BasicScheduler: below 1 keeps the last steps of "
                                       "a longer schedule (img2img)."),
            ],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def validate_inputs(cls, policy: str) -> bool | str:
        # only `policy` (ComfyUI's own min/max/combo checks stay on for the other inputs), and
        # only its type: a missing or unusable policy is reported by execute, whose error
        # the frontend shows in a dialog (a validation error only outlines the node when
        # another branch of the graph can run)
        if not isinstance(policy, str):
            return f"policy must be the name of a policy file, got {policy!r}."
        return True

    @classmethod
    def fingerprint_inputs(cls, policy: str, **kwargs):
        path = folder_paths.get_full_path(FOLDER, policy)
        return os.path.getmtime(path) if path else None

    @classmethod
    def execute(cls, model, positive, noise, latent_image, policy: str, steps: int = 0,
                mode: str = "mean", denoise: float = 1.0) -> io.NodeOutput:
        denoise = number_in_range("denoise", denoise, 0.0, 1.0)
        check_policy(policy, "schedule")
        sigmas, default, meta = learned_sigmas(model, positive, noise, latent_image, policy,
                                               steps, mode, denoise)
        used = int(sigmas.numel() - 1)
        trained = int(meta["steps"])
        total = step_counts(steps or trained, denoise)  # the length before denoise's cut
        payload = {"sigmas": sigmas.tolist(), "default_sigmas": default.tolist(),
                   "label": os.path.splitext(policy)[0],
                   "default_label": "simple (the model's default)",
                   "steps": used, "family": meta["model_family"],
                   "policy": policy, "method": meta.get("method", ""),
                   "trained_steps": trained,
                   "resampling": (f"resampled from {trained} to {total} steps"
                                  if total != trained else ""),
                   "notice": batch_notice(latent_image)}
        return io.NodeOutput(sigmas, ui={"learned_schedule": [payload]})


def parse_schedule_text(text: str) -> torch.Tensor:
    """Parse comma/space separated numbers into a SIGMAS tensor (ManualSigmas-compatible)."""
    import re

    parts = [p for p in re.split(r"[\s,;\[\]]+", text.strip()) if p]
    if len(parts) < 2:
        raise ValueError("A schedule needs at least two numbers, e.g. '1.0, 0.5, 0.0'.")
    try:
        values = [float(p) for p in parts]
    except ValueError as exc:
        raise ValueError(f"Not a list of numbers: {exc}.") from exc
    sigmas = torch.tensor(values, dtype=torch.float32)
    validate_schedule(sigmas, sigma_max=float(sigmas[0]))
    return sigmas


def format_schedule_text(sigmas: torch.Tensor, decimals: int = 6) -> str:
    return ", ".join(f"{float(v):.{decimals}g}" for v in sigmas.flatten())


class ScheduleToText(io.ComfyNode):
    """SIGMAS to plain text that a person (or Text to Schedule) can read; shown on the node."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LearnedSchedules_ScheduleToText",
            display_name="Schedule to Text",
            category=CATEGORY,
            description="Shows sigmas as comma-separated numbers on the node, to copy a "
                        "learned schedule (Text to Schedule reads them back).",
            inputs=[io.Sigmas.Input("sigmas", tooltip="The schedule to write out."),
                    io.Int.Input("decimals", default=6, min=2, max=12,
                                 tooltip="Significant digits per value.")],
            outputs=[io.String.Output(tooltip="The numbers as text, e.g. for a note or a "
                                              "Text to Schedule node in another workflow.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, sigmas, decimals: int = 6) -> io.NodeOutput:
        text = format_schedule_text(sigmas, decimals)
        return io.NodeOutput(text, ui={"text": [text]})


class TextToSchedule(io.ComfyNode):
    """Plain numbers to SIGMAS (validated)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LearnedSchedules_TextToSchedule",
            display_name="Text to Schedule",
            category=CATEGORY,
            description="Reads comma-separated sigmas (as written by Schedule to Text or used "
                        "by ManualSigmas) and checks they form a valid schedule.",
            inputs=[io.String.Input("text", multiline=True, default="1.0, 0.75, 0.5, 0.25, 0.0",
                                    tooltip="Decreasing numbers ending at 0.")],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def validate_inputs(cls, text: str) -> bool | str:
        try:
            parse_schedule_text(text)
        except ValueError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, text: str) -> io.NodeOutput:
        return io.NodeOutput(parse_schedule_text(text))


class SchedulePlot(io.ComfyNode):
    """Plot one or two schedules as an IMAGE (and on the node)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LearnedSchedules_SchedulePlot",
            display_name="Schedule Plot",
            category=CATEGORY,
            description="Draws sigmas against steps (with a density strip of the sigmas), to "
                        "save or compare schedules in a workflow.",
            inputs=[io.Sigmas.Input("sigmas", tooltip="The schedule to plot (solid)."),
                    io.Sigmas.Input("compare", optional=True,
                                    tooltip="An optional second schedule (dashed)."),
                    io.String.Input("label", default="learned", tooltip="Legend of the first "
                                    "schedule."),
                    io.String.Input("compare_label", default="default",
                                    tooltip="Legend of the second schedule.")],
            outputs=[io.Image.Output()],
        )

    @classmethod
    def execute(cls, sigmas, compare=None, label: str = "learned",
                compare_label: str = "default") -> io.NodeOutput:
        from ..plots import render_schedules_rgb

        curves = {label: sigmas}
        if compare is not None:
            curves[compare_label] = compare
        rgb = render_schedules_rgb(curves)
        image = torch.from_numpy(rgb).float().div(255.0)[None]
        payload = {"sigmas": sigmas.tolist(),
                   "default_sigmas": None if compare is None else compare.tolist(),
                   "label": label, "default_label": compare_label,
                   "steps": int(sigmas.numel() - 1), "family": ""}
        return io.NodeOutput(image, ui={"schedule_plot": [payload]})


NODES = [LearnedSchedule, SchedulePlot, ScheduleToText, TextToSchedule]
