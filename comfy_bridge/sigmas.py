"""Flow time <-> a ComfyUI model's own sigmas, and ComfyUI's default schedules.

Policies and actors speak **flow time** ``t in [0, 1]`` (1 = pure noise, 0 = data). Rectified-
flow models (Flux, SD3) use ``sigma = t * sigma_max`` (``sigma_max`` is 1 for both); other
families map ``t`` log-linearly onto ``[sigma_min, sigma_max]`` (see
:func:`policies.schedule.flow_to_sigmas`). Both directions are computed in float64 and
returned in the input's dtype, so ``flow -> sigma -> flow`` is exact when ``sigma_max == 1``.

Everything here takes a ``model_sampling`` object (``model.get_model_object("model_sampling")``
for a MODEL, ``model.inner_model.inner_model.model_sampling`` inside a sampler function) or a
MODEL (:func:`default_sigmas`).
"""

from __future__ import annotations

import math
from typing import Any

import torch


def is_flow_sampling(sampling: Any) -> bool:
    """True for rectified-flow model sampling (sigma proportional to flow time)."""
    import comfy.model_sampling as ms

    return isinstance(sampling, (ms.ModelSamplingDiscreteFlow, ms.ModelSamplingFlux))


def sampling_of(model: Any) -> Any:
    """A MODEL's ``model_sampling`` object."""
    return model.get_model_object("model_sampling")


def sigma_range(sampling: Any) -> tuple[float, float]:
    """``(sigma_min, sigma_max)`` of a model sampling object."""
    return float(sampling.sigma_min), float(sampling.sigma_max)


def flow_to_model(sampling: Any, flow: torch.Tensor) -> torch.Tensor:
    """Flow times -> model sigmas, elementwise (any shape, same dtype; 0 stays 0)."""
    lo, hi = sigma_range(sampling)
    f = flow.double()
    if is_flow_sampling(sampling):
        out = f * hi
    else:  # log-linear onto [sigma_min, sigma_max], as policies.schedule.flow_to_sigmas
        a, b = math.log(lo), math.log(hi)
        out = torch.where(f > 0, torch.exp(a + f * (b - a)), torch.zeros_like(f))
    return out.to(flow.dtype)


def model_to_flow(sampling: Any, sigmas: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`flow_to_model` (elementwise, same dtype)."""
    lo, hi = sigma_range(sampling)
    s = sigmas.double()
    if is_flow_sampling(sampling):
        out = s / hi
    else:
        a, b = math.log(lo), math.log(hi)
        out = torch.where(s > 0, (torch.log(s.clamp_min(1e-30)) - a) / (b - a),
                          torch.zeros_like(s))
    return out.to(sigmas.dtype)


def step_counts(steps: int, denoise: float) -> int:
    """The full schedule length ``BasicScheduler`` computes for ``steps`` kept steps at
    ``denoise``: ``int(steps / denoise)`` (``steps`` at denoise 1)."""
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise}.")
    return steps if denoise >= 1.0 else int(steps / denoise)


def default_sigmas(model: Any, steps: int, scheduler: str = "simple",
                   denoise: float = 1.0) -> torch.Tensor:
    """Exactly ``BasicScheduler(model, scheduler, steps, denoise)``: the model's own sigmas
    ``[steps+1]`` (CPU, float32)."""
    import comfy.samplers

    if scheduler not in comfy.samplers.SCHEDULER_NAMES:
        raise ValueError(f"Unknown scheduler {scheduler!r}; ComfyUI's are: "
                         f"{', '.join(comfy.samplers.SCHEDULER_NAMES)}.")
    total = step_counts(steps, denoise)
    sigmas = comfy.samplers.calculate_sigmas(sampling_of(model), scheduler, total).cpu()
    return sigmas[-(steps + 1):]


def default_flow(model: Any, steps: int, scheduler: str = "simple") -> torch.Tensor:
    """A ComfyUI scheduler's schedule for ``steps`` steps in flow time ``[L+1]`` (float64)."""
    return model_to_flow(sampling_of(model), default_sigmas(model, steps, scheduler).double())


__all__ = ["is_flow_sampling", "sampling_of", "sigma_range", "flow_to_model", "model_to_flow",
           "step_counts", "default_sigmas",
           "default_flow"]
