"""Every ComfyUI schedule that applies to a model, in flow time: the schedulers of
``BasicScheduler`` (``comfy.samplers.SCHEDULER_NAMES``) and the fixed-table schedulers of
ComfyUI's own nodes where they have a table for the model's family (Align Your Steps: SD 1.x
and SDXL; OptimalSteps: Flux and Chroma; GITS: discrete-time models). What ``calibrate``'s
evaluation table and its benchmark compare a calibrated schedule with."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..policies.schedule import validate_schedule
from .features import model_family
from .sampling_space import sampling_space
from .sigmas import default_sigmas, model_to_flow, sampling_of

log = logging.getLogger("learned_schedules")

AYS_TABLES = {"sd1": "SD1", "sdxl": "SDXL"}
"""Our family -> the Align Your Steps node's ``model_type``."""
OPTIMAL_STEPS_TABLES = {"flux-dev": "FLUX", "flux-schnell": "FLUX", "chroma": "Chroma"}
"""Our family -> the OptimalSteps node's ``model_type``."""
GITS_COEFF = 1.20
"""The GITS node's default coefficient."""
START_TOLERANCE = 0.01
"""How far below ``sigma_max`` (in flow time) a schedule may start and still be compared."""


def _node_sigmas(module: str, node: str, *args: Any) -> torch.Tensor:
    import importlib

    cls = getattr(importlib.import_module(module), node)
    out = cls.execute(*args)
    return torch.as_tensor(out.result[0] if hasattr(out, "result") else out[0]).double()


def table_sigmas(model: Any, steps: int) -> dict[str, torch.Tensor]:
    """The fixed-table schedulers that apply to this model: name -> model sigmas."""
    family = model_family(model)
    out: dict[str, torch.Tensor] = {}
    if family in AYS_TABLES:
        out["ays"] = _node_sigmas("comfy_extras.nodes_align_your_steps",
                                  "AlignYourStepsScheduler", AYS_TABLES[family], steps, 1.0)
    if family in OPTIMAL_STEPS_TABLES:
        out["optimal_steps"] = _node_sigmas("comfy_extras.nodes_optimalsteps",
                                            "OptimalStepsScheduler",
                                            OPTIMAL_STEPS_TABLES[family], steps, 1.0)
    if sampling_space(model).is_discrete and steps >= 2:
        out["gits"] = _node_sigmas("comfy_extras.nodes_gits", "GITSScheduler", GITS_COEFF,
                                   steps, 1.0)
    return out


def applicable_schedules(model: Any, steps: int) -> dict[str, torch.Tensor]:
    """name -> flow schedule ``[L+1]`` (float64) of every ComfyUI schedule for this model
    at ``steps`` steps that is a usable schedule (starts within :data:`START_TOLERANCE` of
    the model's ``sigma_max``, set to it exactly, e.g. OptimalSteps' Flux table starts at
    0.9968; ends at 0; strictly decreasing); the others (e.g. ``ddim_uniform`` on a flow
    model, which starts at 0.90 for 4 steps) are skipped with a log line."""
    import comfy.samplers

    sampling = sampling_of(model)
    sigmas = {name: default_sigmas(model, steps, name).double()
              for name in comfy.samplers.SCHEDULER_NAMES}
    sigmas.update(table_sigmas(model, steps))
    out = {}
    for name, sig in sigmas.items():
        flow = model_to_flow(sampling, sig)
        try:
            validate_schedule(flow, sigma_max=1.0, atol=START_TOLERANCE)
        except ValueError as exc:
            log.info("scheduler %s skipped at %d steps: %s", name, steps, exc)
            continue
        flow[0] = 1.0
        out[name] = flow
    return out


__all__ = ["AYS_TABLES", "OPTIMAL_STEPS_TABLES", "START_TOLERANCE", "table_sigmas",
           "applicable_schedules"]
