"""Losses shared by more than one training algorithm."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ClippedSurrogate:
    """PPO's clipped objective on a batch and what it logs."""

    loss: Tensor
    """``-mean(min(rho A, clip(rho, 1 - eps, 1 + eps) A))`` (differentiable)."""
    approx_kl: Tensor
    """``mean((rho - 1) - log rho)``, an estimate of ``KL(pi_old || pi)`` (detached)."""
    clip_frac: Tensor
    """Share of ratios outside ``[1 - eps, 1 + eps]`` (detached)."""


def clipped_surrogate(log_ratio: Tensor, advantages: Tensor, clip: float,
                      mask: Tensor | None = None, count: Tensor | None = None
                      ) -> ClippedSurrogate:
    """PPO's clipped-ratio loss of ``log_ratio = log pi(a) - log pi_old(a)`` and
    ``advantages`` (same shape), with ``clip`` the ratio's half-width ``eps``.

    Means are plain means, or with ``mask`` (1 where an entry counts, 0 elsewhere) sums of the
    masked entries divided by ``count`` (the number of entries that count)."""
    ratio = torch.exp(log_ratio)
    clipped = ratio.clamp(1 - clip, 1 + clip)
    objective = torch.minimum(ratio * advantages, clipped * advantages)

    def mean(values: Tensor) -> Tensor:
        if mask is None:
            return values.mean()
        return (values * mask).sum() / count

    # (written out, not -mean(...): the float ops of both callers as they always were)
    loss = -objective.mean() if mask is None else -(objective * mask).sum() / count
    with torch.no_grad():
        approx_kl = mean((ratio - 1) - log_ratio)
        clip_frac = mean(((ratio - 1).abs() > clip).to(ratio.dtype))
    return ClippedSurrogate(loss, approx_kl, clip_frac)


__all__ = ["ClippedSurrogate", "clipped_surrogate"]
