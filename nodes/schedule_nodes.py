"""The pack's ComfyUI nodes (V3 API). Thin: the maths lives in ``policies/``.

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

from ..comfy_bridge import features as cf
from ..policies.policy_file import read_metadata
from ..policies.schedule import resample_schedule, validate_schedule
from .policy_cache import get_policy
from .policy_choice import missing_policy_message, policy_options, policy_tooltip

log = logging.getLogger("learned_schedules")

FOLDER = "learned_schedules"
CATEGORY = "sampling/custom_sampling/schedulers"
MAX_STEPS = 1000


def policy_files() -> list[str]:
    return folder_paths.get_filename_list(FOLDER)


def _policy_path(name: str) -> str:
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        raise ValueError(f"Policy file not found: {name} (put policies in "
                         f"models/{FOLDER}/).")
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


def _check_features(meta: dict, feats: dict[str, torch.Tensor | None], name: str) -> None:
    dims = meta.get("feature_dims", {})
    noise = feats["noise"]
    if "noise" in dims and dims["noise"][0] != noise.shape[1]:
        raise ValueError(f"{name} expects a {dims['noise'][0]}-channel latent; this model's "
                         f"latent has {noise.shape[1]} channels.")
    if "tokens" in dims and dims["tokens"][-1] != feats["tokens"].shape[-1]:
        raise ValueError(f"{name} expects text tokens of width {dims['tokens'][-1]}; the "
                         f"conditioning has width {feats['tokens'].shape[-1]} (another text "
                         "encoder?).")
    if "pooled" in dims:
        pooled = feats.get("pooled")
        if pooled is None:
            raise ValueError(f"{name} needs a pooled text embedding; the conditioning has "
                             "none.")
        if dims["pooled"][-1] != pooled.shape[-1]:
            raise ValueError(f"{name} expects a pooled embedding of width {dims['pooled'][-1]}"
                             f"; the conditioning has width {pooled.shape[-1]}.")


def learned_sigmas(model, positive, noise, latent_image, policy_name: str, steps: int,
                   mode: str, denoise: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Learned sigmas (model's sigma space), the default sigmas, and the policy metadata."""
    if not 0 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS} (0 uses the policy's own "
                         f"step count), got {steps}.")
    if mode not in ("mean", "sample"):
        raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}.")
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise}.")
    loaded = get_policy(_policy_path(policy_name))
    meta = loaded.metadata
    family = cf.model_family(model)
    if meta["model_family"] != family:
        raise ValueError(f"{policy_name} was trained for {meta['model_family']}, but the model "
                         f"is {family}; choose a policy trained for this model family.")
    x_t = cf.initial_noise(model, noise, latent_image)
    if x_t.shape[0] > 1:
        log.info("Learned Schedule: batch of %d; using the schedule of the first item",
                 x_t.shape[0])
    feats = {"noise": x_t[:1].float(), **cf.text_features(positive)}
    _check_features(meta, feats, policy_name)
    if feats.get("pooled") is None or "pooled" not in meta.get("feature_dims", {}):
        feats.pop("pooled", None)
    with torch.inference_mode():
        if mode == "sample":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(getattr(noise, "seed", 0)) % (2**63))
                flow = loaded.policy.schedule(mode="sample", **feats)[0]
            flow = flow.double()
        else:
            flow = loaded.policy.schedule(mode="mean", **feats)[0].double()
    policy_steps = int(meta["steps"])
    steps = steps or policy_steps
    total = steps if denoise >= 1.0 else max(steps, int(round(steps / denoise)))
    if total != policy_steps:
        log.info("Learned Schedule: %s was trained for %d steps; resampling its schedule to %d",
                 policy_name, policy_steps, total)
        flow = resample_schedule(flow, total)
    full = cf.flow_to_model_sigmas(model, flow)
    sigmas = full[-(steps + 1):].float()
    validate_schedule(sigmas, sigma_max=float(sigmas[0]))
    default = cf.default_sigmas(model, total)[-(steps + 1):].float()
    return sigmas, default, meta


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
                               "(Flux dev, Flux schnell or SD3)."),
                io.Conditioning.Input("positive", tooltip="The positive prompt's conditioning; "
                                      "its text tokens and pooled embedding feed the policy."),
                io.Noise.Input("noise", tooltip="The same NOISE that goes to "
                               "SamplerCustomAdvanced (e.g. RandomNoise): the node rebuilds "
                               "the exact initial noise from it."),
                io.Latent.Input("latent_image", tooltip="The same latent that goes to the "
                                "sampler (its size and batch define the noise)."),
                io.Combo.Input("policy", options=policy_options(files := policy_files()),
                               tooltip=policy_tooltip(files)),
                io.Int.Input("steps", default=0, min=0, max=MAX_STEPS,
                             tooltip="Sampler steps; 0 uses the policy's own step count, "
                                     "another count resamples the learned schedule."),
                io.Combo.Input("mode", options=["mean", "sample"], default="mean",
                               tooltip="mean: the deterministic Dirichlet mean; sample: a "
                                       "draw, seeded by the noise seed."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Like BasicScheduler: below 1 keeps the last steps of "
                                       "a longer schedule (img2img)."),
            ],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def validate_inputs(cls, policy: str) -> bool | str:
        # only `policy`: ComfyUI's own min/max/combo checks stay on for the other inputs
        return missing_policy_message(policy, policy_files()) or _check_policy_file(policy)

    @classmethod
    def fingerprint_inputs(cls, policy: str, **kwargs):
        path = folder_paths.get_full_path(FOLDER, policy)
        return os.path.getmtime(path) if path else None

    @classmethod
    def execute(cls, model, positive, noise, latent_image, policy: str, steps: int = 0,
                mode: str = "mean", denoise: float = 1.0) -> io.NodeOutput:
        sigmas, default, meta = learned_sigmas(model, positive, noise, latent_image, policy,
                                               steps, mode, denoise)
        used = int(sigmas.numel() - 1)
        trained = int(meta["steps"])
        wanted = steps or trained  # the schedule length before denoise keeps its tail
        total = wanted if denoise >= 1.0 else max(wanted, int(round(wanted / denoise)))
        payload = {"sigmas": sigmas.tolist(), "default_sigmas": default.tolist(),
                   "label": os.path.splitext(policy)[0],
                   "default_label": "simple (the model's default)",
                   "steps": used, "family": meta["model_family"],
                   "policy": policy, "method": meta.get("method", ""),
                   "trained_steps": trained,
                   "resampling": (f"resampled from {trained} to {total} steps"
                                  if total != trained else "")}
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
