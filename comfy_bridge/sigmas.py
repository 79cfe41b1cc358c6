"""Flow time <-> a ComfyUI model's own sigmas, and ComfyUI's default schedules.

This module is the one home of that mapping: the node, the named schedulers, the step-wise
sampler and the trainer's ComfyUI back-end all call it.

Policies and actors speak **flow time** ``t in [0, 1]`` (1 = pure noise, 0 = data). What
``t`` means on a model is read from its own ``model_sampling`` (``sampling_space.py``):

* **rectified flow** (Flux, SD3 and every flow family): ``sigma = t * sigma_max``
  (``sigma_max`` is 1), so ``flow -> sigma -> flow`` is exact;
* **discrete time** (``ModelSamplingDiscrete`` and its subclasses: SD 1.x / 2.x / SDXL, eps,
  v-prediction, zero-terminal SNR): ``t`` is the fraction of the model's own timestep range,
  ``sigma(t)`` = the model's sigma table (``model_sampling.sigmas``, ``N`` entries from
  ``sigma_min`` up to ``sigma_max``) interpolated linearly in ``log sigma`` at index
  ``t (N - 1)`` (what ``model_sampling.sigma(timestep)`` computes, in float64). ``t = 1`` is
  the model's ``sigma_max``, ``t = k / (N - 1)`` is table entry ``k`` exactly (so ComfyUI's
  ``simple`` / ``sgm_uniform`` / ``ddim_uniform`` schedules are schedules on this axis), and
  the inverse interpolates the same table (not ``model_sampling.timestep``, which rounds to
  the nearest entry); a sigma at or below ``sigma_min`` (where karras / exponential end)
  maps to ``t = 1e-12``, just above the final 0;
* **other continuous samplings** (EDM, ...): ``t`` maps log-linearly onto ``[sigma_min,
  sigma_max]``: ``sigma = exp(log sigma_min + t (log sigma_max - log sigma_min))`` (the layout
  of ComfyUI's karras / exponential schedules).

Everywhere the final 0 stays 0. Both directions are computed in float64 and returned in the
input's dtype.

Everything model-specific here takes a ``model_sampling`` object
(``model.get_model_object("model_sampling")`` for a MODEL,
``model.inner_model.inner_model.model_sampling`` inside a sampler function, or what a
scheduler handler receives) or a MODEL (:func:`default_sigmas`). :func:`flow_to_sigmas` /
:func:`sigmas_to_flow` are the flow and log-linear maps by family name, with no model (pure
torch).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..policies.schedule import resample_schedule
from .sampling_space import is_discrete_sampling


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


def _loglinear(t: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """``exp(log sigma_min + t (log sigma_max - log sigma_min))``, elementwise."""
    a, b = math.log(sigma_min), math.log(sigma_max)
    return torch.exp(a + t * (b - a))


def _loglinear_inverse(sigma: torch.Tensor, sigma_min: float, sigma_max: float
                       ) -> torch.Tensor:
    """Inverse of :func:`_loglinear` (``sigma > 0``)."""
    a, b = math.log(sigma_min), math.log(sigma_max)
    return (torch.log(sigma) - a) / (b - a)


def _check_family(family: str, sigma_min: float | None, sigma_max: float | None) -> None:
    if family not in ("flow", "loglinear"):
        raise ValueError(f"Unknown sigma family {family!r}; expected 'flow' or 'loglinear'.")
    if family == "loglinear" and (sigma_min is None or sigma_max is None
                                  or not 0 < sigma_min < sigma_max):
        raise ValueError("The loglinear family needs 0 < sigma_min < sigma_max.")


def flow_to_sigmas(schedule: torch.Tensor, family: str = "flow",
                   sigma_min: float | None = None, sigma_max: float | None = None) -> torch.Tensor:
    """Map a flow-time schedule ``[..., L+1]`` (``[1, ..., 0]``) into a model family's own
    sigma space, with no model: ``flow`` is the identity (SD3, Flux); ``loglinear`` maps every
    value but the final 0 log-linearly onto ``[sigma_min, sigma_max]`` (needs
    ``0 < sigma_min < sigma_max``)."""
    _check_family(family, sigma_min, sigma_max)
    if family == "flow":
        return schedule.clone()
    assert sigma_min is not None and sigma_max is not None
    body = _loglinear(schedule[..., :-1], sigma_min, sigma_max)
    return torch.cat([body, torch.zeros_like(schedule[..., -1:])], dim=-1)


def sigmas_to_flow(sigmas: torch.Tensor, family: str = "flow",
                   sigma_min: float | None = None, sigma_max: float | None = None) -> torch.Tensor:
    """Inverse of :func:`flow_to_sigmas`."""
    _check_family(family, sigma_min, sigma_max)
    if family == "flow":
        return sigmas.clone()
    assert sigma_min is not None and sigma_max is not None
    body = _loglinear_inverse(sigmas[..., :-1], sigma_min, sigma_max)
    return torch.cat([body, torch.zeros_like(sigmas[..., -1:])], dim=-1)


def _log_table(sampling: Any, device: torch.device) -> torch.Tensor:
    """``log`` of a discrete model's sigma table ``[N]`` (increasing), float64."""
    return sampling.sigmas.detach().to(device=device, dtype=torch.float64).log()


def _table_sigma(log_table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Discrete models: the sigma at fraction ``t`` of the timestep range, the table
    interpolated in log sigma at index ``t (N - 1)`` (``ModelSamplingDiscrete.sigma``)."""
    last = log_table.shape[0] - 1
    idx = t.clamp(0.0, 1.0) * last
    low = idx.floor().long().clamp(0, last)
    high = idx.ceil().long().clamp(0, last)
    w = idx - low
    return ((1 - w) * log_table[low] + w * log_table[high]).exp()


MIN_TABLE_TIME = 1e-12
"""Discrete models: the flow time of a sigma at or below the table's ``sigma_min`` (karras /
exponential schedules end there), just above the final 0 so a schedule stays strictly
decreasing; it maps back to ``sigma_min`` (exactly in float32)."""


def _table_time(log_table: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_table_sigma` for ``sigma > 0`` (clamped to the table's range, and
    to :data:`MIN_TABLE_TIME` at the bottom)."""
    last = log_table.shape[0] - 1
    ls = sigma.log().clamp(log_table[0], log_table[-1])
    high = torch.searchsorted(log_table, ls.contiguous()).clamp(1, last)
    low = high - 1
    w = (ls - log_table[low]) / (log_table[high] - log_table[low])
    return ((low + w) / last).clamp_min(MIN_TABLE_TIME)


def flow_to_model(sampling: Any, flow: torch.Tensor) -> torch.Tensor:
    """Flow times -> model sigmas, elementwise (any shape, same dtype; 0 stays 0), see the
    module docstring."""
    f = flow.double()
    if is_flow_sampling(sampling):
        _, hi = sigma_range(sampling)
        out = f * hi
    elif is_discrete_sampling(sampling):  # the model's own sigma table
        body = _table_sigma(_log_table(sampling, f.device), f)
        out = torch.where(f > 0, body, torch.zeros_like(f))
    else:  # log-linear onto [sigma_min, sigma_max]
        lo, hi = sigma_range(sampling)
        out = torch.where(f > 0, _loglinear(f, lo, hi), torch.zeros_like(f))
    return out.to(flow.dtype)


def model_to_flow(sampling: Any, sigmas: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`flow_to_model` (elementwise, same dtype)."""
    s = sigmas.double()
    if is_flow_sampling(sampling):
        _, hi = sigma_range(sampling)
        out = s / hi
    elif is_discrete_sampling(sampling):
        body = _table_time(_log_table(sampling, s.device), s.clamp_min(1e-30))
        out = torch.where(s > 0, body, torch.zeros_like(s))
    else:
        lo, hi = sigma_range(sampling)
        out = torch.where(s > 0, _loglinear_inverse(s.clamp_min(1e-30), lo, hi),
                          torch.zeros_like(s))
    return out.to(sigmas.dtype)


def schedule_to_model(sampling: Any, flow: torch.Tensor, steps: int = 0,
                      denoise: float = 1.0) -> torch.Tensor:
    """Flow schedules ``[..., L+1]`` -> the model's sigmas ``[..., steps+1]`` (float32):
    resampled to ``int(steps / denoise)`` steps when that differs from ``L`` (``steps`` 0:
    ``L``), then the last ``steps`` steps kept, as ``BasicScheduler`` does. What the Learned
    Schedule node and the named schedulers ``learned:<policy>`` output."""
    steps = steps or flow.shape[-1] - 1
    total = step_counts(steps, denoise)
    if total != flow.shape[-1] - 1:
        flow = resample_schedule(flow.double(), total)
    full = flow_to_model(sampling, flow.double())
    return full[..., -(steps + 1):].float()


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


__all__ = ["is_flow_sampling", "sampling_of", "sigma_range", "flow_to_sigmas", "sigmas_to_flow",
           "flow_to_model", "model_to_flow", "MIN_TABLE_TIME", "schedule_to_model",
           "step_counts", "default_sigmas", "default_flow"]
