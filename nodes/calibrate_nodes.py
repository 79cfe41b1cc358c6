"""The Calibrate Schedule node: a schedule for *this* model from the model alone (the few-step
Euler result matched to the model's own many-step result, :mod:`calibration`), saved as a
policy file the Learned Schedule node and ``learned:<name>`` load. Thin: the calibration is
:func:`comfy_bridge.calibration.calibrate`, the rest :mod:`comfy_bridge.calibration_node`.

Cached twice: ComfyUI's own node cache (same inputs: the node does not run) and the adapter's
memory of calibrations by model identity and options (another name or overwrite: no model
call). Interrupt (ComfyUI's Cancel) stops it between model calls and writes no file.
"""

from __future__ import annotations

import logging
import os

import folder_paths
from comfy_api.latest import io

from ..calibration.problem import Stopped
from ..calibration.run import SEARCHES, CalibrationOptions
from ..calibration.saving import save_calibrated
from ..comfy_bridge import calibration as cc
from ..comfy_bridge import calibration_node as cn
from ..comfy_bridge.features import model_family
from ..comfy_bridge.service import schedule_sigmas
from ..comfy_bridge.sigmas import default_sigmas
from .schedule_nodes import CATEGORY, FOLDER

log = logging.getLogger("learned_schedules")

MAX_STEPS = 200
TEACHER_CACHE = "teacher_cache"
"""Sub-folder of ``<ComfyUI user dir>/learned_schedules`` that holds the cached many-step
runs."""


def teacher_cache_dir() -> str:
    """Where the many-step runs are cached (ComfyUI's user directory)."""
    return os.path.join(folder_paths.get_user_directory(), "learned_schedules", TEACHER_CACHE)


class CalibrateSchedule(io.ComfyNode):
    """Calibrates a global schedule for this model and saves it as a policy file."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LearnedSchedules_CalibrateSchedule",
            display_name="Calibrate Schedule",
            category=CATEGORY,
            description="Finds the schedule whose few-step result best matches this model's "
                        "own many-step result and saves it to models/learned_schedules.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to calibrate for (LoRAs "
                               "and other patches included)."),
                io.Latent.Input("latent_image", tooltip="An empty latent of the size you will "
                                "sample at (only its size is used)."),
                io.Conditioning.Input("positive", optional=True,
                                      tooltip="The prompt(s) to calibrate on (batch 1, or one "
                                              "row per context). Leave empty and connect clip "
                                              "to use the bundled calibration prompts."),
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="The negative prompt, needed when cfg is not 1 "
                                              "(with clip: the empty prompt)."),
                io.Clip.Input("clip", optional=True,
                              tooltip="Without positive: encodes one bundled calibration "
                                      "prompt per context."),
                io.Int.Input("steps", default=8, min=1, max=MAX_STEPS,
                             tooltip="Sampler steps the schedule is calibrated for."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1,
                               tooltip="The CFG scale you sample with (1: no negative pass)."),
                io.Int.Input("budget", default=600, min=10, max=100_000,
                             tooltip="Model calls per context in all, the many-step run "
                                     "included (one batched forward is one call, a backward "
                                     "two); the cost grows with contexts x budget."),
                io.Int.Input("contexts", default=8, min=1, max=256,
                             tooltip="Noise seeds (and with clip, prompts) to calibrate on, "
                                     "run as one batch."),
                io.Int.Input("first_seed", default=0, min=0, max=2**48,
                             tooltip="First noise seed of the contexts (first_seed, "
                                     "first_seed + 1, ...)."),
                io.Combo.Input("search", options=list(SEARCHES), default=SEARCHES[0],
                               tooltip="dp+gradient: a search over the many-step run's sigmas "
                                       "then gradient refinement (best); dp: the search only; "
                                       "gradient: refine the default schedule."),
                io.Int.Input("teacher_steps", default=30, min=3, max=1000,
                             tooltip="Steps of the many-step run the schedule is matched to "
                                     "(the model's simple scheduler; cached on disk)."),
                io.String.Input("name", default="calibrated",
                                tooltip="File name in models/learned_schedules (without "
                                        ".safetensors); the Learned Schedule node lists it "
                                        "and, after a restart, learned:<name>."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Replace a file of that name not written by this "
                                         "node (its own files are always replaced)."),
            ],
            outputs=[io.Sigmas.Output(tooltip="The calibrated schedule in the model's sigmas "
                                              "for steps (to SamplerCustomAdvanced).")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, name: str) -> bool | str:
        try:
            cn.policy_file_path(".", name)
        except ValueError as exc:
            return str(exc)
        return True

    @classmethod
    def execute(cls, model, latent_image, steps: int = 8, cfg: float = 1.0, budget: int = 600,
                contexts: int = 8, first_seed: int = 0, search: str = SEARCHES[0],
                teacher_steps: int = 30, name: str = "calibrated", overwrite: bool = False,
                positive=None, negative=None, clip=None) -> io.NodeOutput:
        import comfy.model_management as mm
        import comfy.utils

        if teacher_steps <= steps:
            raise ValueError(f"teacher_steps ({teacher_steps}) must exceed steps ({steps}).")
        family = model_family(model)
        path = cn.policy_file_path(folder_paths.get_folder_paths(FOLDER)[0], name)
        cn.check_overwrite(path, overwrite)
        if positive is None:
            if clip is None:
                raise ValueError("Connect a positive conditioning, or a clip to calibrate on "
                                 "the bundled prompts.")
            positive, prompt_negative = cn.prompt_conditioning(clip, contexts)
            negative = negative if negative is not None else prompt_negative
        if cfg != 1.0 and negative is None:
            raise ValueError(f"cfg {cfg} needs a negative conditioning (or set cfg to 1).")
        rows = int(positive[0][0].shape[0])
        n = rows if rows > 1 else contexts
        noise = cn.context_noise(model, latent_image, first_seed, n)
        options = CalibrationOptions(steps=(int(steps),), search=search, budget=float(budget))
        bar = comfy.utils.ProgressBar(int(budget))
        try:
            result = cc.calibrate(model, positive, negative, cfg, noise, options,
                                  teacher_steps=teacher_steps, cache_dir=teacher_cache_dir(),
                                  progress=lambda done, total: bar.update_absolute(done, total),
                                  should_stop=mm.processing_interrupted)
        except Stopped:
            mm.throw_exception_if_processing_interrupted()
            raise
        flow = result.schedules[int(steps)].flow.float().double()  # as stored in the file
        info = cn.summary(model, positive, negative, cfg, noise, result, int(steps),
                          teacher_steps)
        training = {"calibrate": {"steps": [int(steps)], "cfg": float(cfg), "budget": budget,
                                  "contexts": n, "first_seed": first_seed, "search": search,
                                  "teacher_steps": teacher_steps,
                                  "prompts": "given" if clip is None else "bundled"}}
        save_calibrated(path, {int(steps): flow}, method="calibrate-teacher", family=family,
                        training=training, summary={**info, "origin": cn.NODE_ORIGIN})
        log.info("Calibrate Schedule: %s (%s) -> %s", info["line"], family, path)
        sigmas = schedule_sigmas(model, flow, int(steps))
        default = default_sigmas(model, int(steps), "simple").float()
        payload = {"sigmas": sigmas.tolist(), "default_sigmas": default.tolist(),
                   "label": path.stem, "default_label": "simple (the model's default)",
                   "steps": int(steps), "family": family, "policy": path.name,
                   "method": "calibrate-teacher", "summary": info["line"]}
        return io.NodeOutput(sigmas, ui={"learned_schedule": [payload]})


NODES = [CalibrateSchedule]
