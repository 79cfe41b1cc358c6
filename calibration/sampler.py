"""The few-step sampler, differentiable in the schedule: Euler in the model's sigmas.

``x_{i+1} = x_i + (s_{i+1} - s_i) (x_i - D(x_i, s_i)) / s_i`` with ``D`` the model's ``x0``
prediction: ComfyUI's ``euler`` (k-diffusion's ``sample_euler`` with no churn) exactly, on
every model family (on a rectified flow it is the flow's Euler step; the last step, to
``s = 0``, returns ``D``). Only ``euler`` is supported for calibration (the sampler the
schedule is calibrated for; other samplers take the same schedules, uncalibrated).

:func:`euler` is differentiable in the sigmas (per context or shared) and in the start;
with ``checkpoint=True`` each step is recomputed in the backward pass (activation
checkpointing, LD3-style: memory of one step, one extra forward per step).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .problem import Denoiser, Problem

SAMPLERS = ("euler",)
"""Samplers a calibration can target."""


def euler_step(denoise: Denoiser, x: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
    """One Euler step from ``sigma [N]`` to ``sigma_next [N]`` (``sigma > 0``)."""
    d = denoise(x, sigma)
    ratio = ((sigma_next - sigma) / sigma).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return x + ratio * (x - d)


def _rows(sigmas: Tensor, n: int) -> Tensor:
    return sigmas.expand(n, -1) if sigmas.ndim == 1 else sigmas


def euler(problem: Problem, sigmas: Tensor, checkpoint_steps: bool = False,
          start: Tensor | None = None) -> Tensor:
    """The few-step result ``[N, ...]`` under model sigmas ``[L+1]`` (shared) or ``[N, L+1]``
    (one schedule per context), from ``start`` (default ``problem.start``). Differentiable;
    ``checkpoint_steps``: recompute each step in the backward pass."""
    x = problem.start if start is None else start
    rows = _rows(sigmas, x.shape[0])
    for i in range(rows.shape[1] - 1):
        s, s_next = rows[:, i], rows[:, i + 1]
        if checkpoint_steps and torch.is_grad_enabled():
            x = checkpoint(euler_step, problem.denoise, x, s, s_next, use_reentrant=False)
        else:
            x = euler_step(problem.denoise, x, s, s_next)
    return x


@torch.no_grad()
def trajectory(problem: Problem, sigmas: Tensor) -> list[Tensor]:
    """Every state of an Euler run under shared sigmas ``[T+1]``: ``T + 1`` tensors
    ``[N, ...]`` (the start, ..., the result)."""
    x = problem.start
    states = [x]
    n = x.shape[0]
    for i in range(sigmas.shape[0] - 1):
        x = euler_step(problem.denoise, x, sigmas[i].expand(n), sigmas[i + 1].expand(n))
        states.append(x)
    return states


__all__ = ["SAMPLERS", "euler_step", "euler", "trajectory"]
