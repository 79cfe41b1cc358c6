"""Schedule maths in flow time: simplex increments <-> timesteps <-> schedules, validation,
resampling, and the shift formulas of SD3 / Flux (the analytic testbed uses them).

Conventions (see ``../shared/REFERENCE.md`` section 1):

* A budget of ``L`` sampler steps is described by ``L + 1`` simplex segments ``tau``
  (``tau >= 0``, ``sum(tau) == 1``). Timesteps are ``t_0 = 1`` and
  ``t_l = 1 - sum_{j <= l} tau_j`` for ``l = 1..L``, so ``1 = t_0 > t_1 > ... > t_L > 0``.
* The sampler evaluates the model at ``t_0 .. t_{L-1}`` (``L`` evaluations) and its last step
  lands at 0: the schedule handed to a sampler is ``[t_0, ..., t_{L-1}, 0]`` (``L + 1``
  values, ComfyUI's SIGMAS layout). The last segment ``tau_{L+1} = t_L`` is the *stopping
  margin*: it is the part of the final step that the policy may lengthen or shorten
  independently of the interior grid. For first-order samplers only the length of the final
  step ``t_{L-1} - 0 = tau_L + tau_{L+1}`` reaches the sampler; we keep the margin as the
  paper does (choice documented here because the paper leaves it open) so policies keep the
  L + 1 outputs the reference describes.
* Flow models (SD3, Flux): ``sigma = t``; the learned schedule *replaces* the model's shift.
  Mapping flow time onto a model's own sigmas (other families: log-linearly) is the ComfyUI
  bridge's job: :mod:`comfy_bridge.sigmas`.

Everything here is pure torch and works on batched inputs (leading dimensions are kept).
"""

from __future__ import annotations

import math

import torch

#: Default minimum length of one step, as a fraction of the unit time interval.
DEFAULT_MIN_STEP = 1e-4


def clamp_increments(tau: torch.Tensor, min_segment: float = DEFAULT_MIN_STEP) -> torch.Tensor:
    """Clamp every simplex segment to at least ``min_segment`` and renormalise to sum 1.

    Guards against zero-length steps from a Dirichlet sample. After the clamp and the
    renormalisation, every segment is at least ``min_segment / (1 + n * min_segment)``.
    """
    n = tau.shape[-1]
    if min_segment * n >= 1:
        raise ValueError(f"min_segment {min_segment} is too large for {n} segments.")
    tau = tau.clamp_min(min_segment)
    return tau / tau.sum(dim=-1, keepdim=True)


def increments_to_timesteps(tau: torch.Tensor) -> torch.Tensor:
    """Map ``[..., L+1]`` simplex segments to the ``[..., L+1]`` timesteps ``t_0 = 1 .. t_L``."""
    cum = torch.cumsum(tau[..., :-1], dim=-1)
    one = torch.ones_like(tau[..., :1])
    return torch.cat([one, (1.0 - cum).clamp_min(0.0)], dim=-1)


def timesteps_to_increments(t: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`increments_to_timesteps`: ``[..., L+1]`` timesteps to segments."""
    steps = t[..., :-1] - t[..., 1:]
    return torch.cat([steps, t[..., -1:]], dim=-1)


def timesteps_to_schedule(t: torch.Tensor) -> torch.Tensor:
    """Sampler schedule ``[t_0, ..., t_{L-1}, 0]`` (``[..., L+1]``) from timesteps ``t_0..t_L``."""
    return torch.cat([t[..., :-1], torch.zeros_like(t[..., :1])], dim=-1)


def increments_to_schedule(tau: torch.Tensor) -> torch.Tensor:
    """Sampler schedule (flow time, ``[..., L+1]`` ending at 0) from ``L+1`` segments."""
    return timesteps_to_schedule(increments_to_timesteps(tau))


def schedule_to_increments(schedule: torch.Tensor, margin_fraction: float = 0.5) -> torch.Tensor:
    """One set of ``L+1`` segments that reproduces a sampler schedule ``[1, ..., 0]``.

    The final step ``t_{L-1} -> 0`` is split between ``tau_L`` and the stopping margin
    ``tau_{L+1}`` by ``margin_fraction`` (any split gives the same sampler schedule).
    """
    steps = schedule[..., :-1] - schedule[..., 1:]
    last = steps[..., -1:]
    return torch.cat([steps[..., :-1], last * (1 - margin_fraction), last * margin_fraction], -1)


def flow_shift(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Time shift used by SD3/Flux: ``sigma = s t / (1 + (s - 1) t)``."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def uniform_schedule(steps: int, dtype=torch.float32) -> torch.Tensor:
    """Uniform flow schedule ``[1, (L-1)/L, ..., 1/L, 0]``."""
    _check_steps(steps)
    return torch.linspace(1.0, 0.0, steps + 1, dtype=dtype)


def shifted_schedule(steps: int, shift: float, dtype=torch.float32) -> torch.Tensor:
    """ComfyUI's ``simple`` flow schedule with a shift (SD3 default: shift 3)."""
    return flow_shift(uniform_schedule(steps, dtype=torch.float64), shift).to(dtype)


def flux_shift_schedule(steps: int, width: int = 1024, height: int = 1024,
                        dtype=torch.float32) -> torch.Tensor:
    """Flux-dev's resolution-dependent schedule ``sigma = e^mu / (e^mu + 1/t - 1)``.

    ``mu`` interpolates linearly in the number of 2x2 latent patches between 0.5 (256 tokens)
    and 1.15 (4096 tokens), as ComfyUI's ``ModelSamplingFlux`` does.
    """
    tokens = (width // 16) * (height // 16)
    mu = 0.5 + (1.15 - 0.5) * (tokens - 256) / (4096 - 256)
    return flow_shift(uniform_schedule(steps, dtype=torch.float64), math.exp(mu)).to(dtype)


def validate_schedule(sigmas: torch.Tensor, sigma_max: float = 1.0,
                      min_step: float = 0.0, atol: float = 1e-5) -> None:
    """Raise ``ValueError`` unless ``sigmas`` (1-D) is a usable sampler schedule.

    Checks: at least two values, finite, starts at ``sigma_max``, ends at exactly 0, strictly
    decreasing, and no step shorter than ``min_step`` (in sigma units).
    """
    if sigmas.ndim != 1:
        raise ValueError(f"A schedule must be one-dimensional, got shape {tuple(sigmas.shape)}.")
    if sigmas.numel() < 2:
        raise ValueError("A schedule needs at least two values (one step).")
    if not torch.isfinite(sigmas).all():
        raise ValueError("The schedule contains NaN or infinite values.")
    if abs(float(sigmas[0]) - sigma_max) > atol * max(1.0, abs(sigma_max)):
        raise ValueError(f"The schedule starts at {float(sigmas[0]):.6g}, not at sigma_max "
                         f"{sigma_max:.6g}.")
    if float(sigmas[-1]) != 0.0:
        raise ValueError(f"The schedule ends at {float(sigmas[-1]):.6g}, not at 0.")
    steps = sigmas[:-1] - sigmas[1:]
    if not (steps > 0).all():
        i = int(torch.nonzero(steps <= 0)[0])
        raise ValueError(f"The schedule is not strictly decreasing at step {i} "
                         f"({float(sigmas[i]):.6g} -> {float(sigmas[i + 1]):.6g}).")
    if min_step > 0 and float(steps.min()) < min_step * (1 - 1e-6):
        i = int(torch.argmin(steps))
        raise ValueError(f"Step {i} is {float(steps[i]):.3g} long, shorter than the floor "
                         f"{min_step:.3g}.")


def resample_schedule(schedule: torch.Tensor, steps: int,
                      interpolation: str = "linear") -> torch.Tensor:
    """Resample a flow schedule ``[1, ..., 0]`` to another number of steps.

    The schedule is read as a monotone map from normalised step position ``u in [0, 1]`` to
    time, interpolated between its points and re-read at ``steps + 1`` uniform positions, so
    the density of timesteps is preserved. ``interpolation``: ``linear`` (piecewise-linear in
    ``t``) or ``loglinear`` (linear in ``log t``, ART's rule; the final cell, which ends at
    ``t = 0``, stays linear since ``log 0`` is undefined). The result starts at the original
    first value, ends at 0 and is strictly decreasing for a strictly decreasing input. Works on
    ``[..., n]``.
    """
    _check_steps(steps)
    if interpolation not in ("linear", "loglinear"):
        raise ValueError(f"interpolation must be 'linear' or 'loglinear', got "
                         f"{interpolation!r}.")
    n = schedule.shape[-1] - 1
    if n == steps:
        return schedule.clone()
    src_u = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)
    dst_u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    flat = schedule.reshape(-1, n + 1).to(torch.float64)
    # index of the source interval for each destination point
    idx = torch.clamp(torch.searchsorted(src_u, dst_u, right=True) - 1, 0, n - 1)
    w = (dst_u - src_u[idx]) / (src_u[idx + 1] - src_u[idx])
    a, b = flat[:, idx], flat[:, idx + 1]
    out = a * (1 - w) + b * w
    if interpolation == "loglinear":
        loglin = torch.exp(torch.log(a.clamp_min(1e-300)) * (1 - w)
                           + torch.log(b.clamp_min(1e-300)) * w)
        out = torch.where((a > 0) & (b > 0), loglin, out)
    out[:, -1] = 0.0
    out[:, 0] = flat[:, 0]
    return out.reshape(*schedule.shape[:-1], steps + 1).to(schedule.dtype)


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"The number of steps must be a positive integer, got {steps!r}.")
