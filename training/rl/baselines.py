"""Reward baselines for REINFORCE over B contexts x K rollouts: none, RLOO, XCTX, James-Stein.

Rewards come as ``r [B, K]``: row ``c`` holds the K rollouts of context ``c`` (one prompt and
initial noise, K sampled schedules). For rollout ``i`` of context ``c``:

* ``none``: ``b = 0``.
* ``rloo``: ``b[c, i] = mean_{j != i} r[c, j]`` (leave-one-out within the context; K >= 2).
* ``xctx``: ``b[c, i]`` = mean of all ``B * K`` rewards except ``r[c, i]`` (B * K >= 2).
* ``js``: ``b = (1 - a) * b_rloo + a * b_xctx`` with the James-Stein shrinkage weight
  ``a = (s2 / (K - 1)) / (s2 / (K - 1) + d2)``, where ``s2`` is the pooled within-context
  variance (mean over contexts of the unbiased sample variance of ``r[c, :]``) and
  ``d2 = max(0, sum_c (rbar_c - rbar)^2 / (B - 1) - s2 / K)`` is the method-of-moments estimate
  of the spread of the context means (random-effects model ``r = mu_c + eps``). ``a -> 1``
  shrinks toward the cross-context mean. ``a`` is recomputed from every batch.

Conventions (choices where the paper is silent):

* ``js_weight`` is always a finite 0-d tensor: the JS weight ``a`` for ``js``; ``0`` for ``rloo``
  and ``none`` (no shrinkage toward the batch) and ``1`` for ``xctx`` (full shrinkage), so a
  logged ``js_weight`` reads as "how far the baseline sits toward the cross-context mean".
* All rewards equal (``s2 = d2 = 0``): ``a = 1``. Then ``d2 = 0`` says the contexts look alike,
  and every candidate baseline equals the common reward anyway, so the choice is harmless.
  ``s2 = 0 < d2`` gives ``a = 0``; ``s2 > 0 = d2`` gives ``a = 1``.
* ``B = 1``: ``d2`` is undefined (no between-context spread to estimate) and ``b_xctx`` equals
  ``b_rloo`` exactly, so ``a = 0`` and ``d2`` is reported as ``None``.
* ``B = 2``: the formula is used as is (``d2`` has one degree of freedom and is noisy); the
  paper's dominance result ``MSE(b_js) < MSE(b_rloo)`` is proved for ``B >= 3`` only.
* The weight ``a`` is computed from the same batch, so ``b_js[c, i]`` depends (weakly, through
  ``a``) on ``r[c, i]``: the JS gradient estimate carries a small bias, unlike RLOO and XCTX.

Every function also accepts extra leading dimensions, ``r [..., B, K]`` (e.g. Monte Carlo
repetitions); statistics are then taken per ``[B, K]`` slice and ``js_weight``, ``s2`` and
``d2`` have shape ``[...]``. Everything is vectorised (no Python loops over B or K).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

log = logging.getLogger(__name__)

BASELINE_KINDS: tuple[str, ...] = ("none", "rloo", "xctx", "js")
"""The baseline names accepted by :func:`compute_baseline`."""


@dataclass
class BaselineResult:
    """A baseline for every reward plus the shrinkage weight and its diagnostics.

    ``baseline`` has the rewards' shape; ``js_weight`` is a finite tensor of shape ``[...]``
    (0-d for ``[B, K]`` rewards). ``s2`` (pooled within-context variance) is ``None`` when
    K < 2; ``d2`` (between-context spread of the means) is ``None`` when K < 2 or B < 2.
    """

    kind: str
    baseline: Tensor
    js_weight: Tensor
    s2: Tensor | None = None
    d2: Tensor | None = None


def _check_rewards(r: Tensor) -> Tensor:
    """Validate a ``[..., B, K]`` reward tensor and return it as a floating tensor."""
    if not isinstance(r, Tensor):
        r = torch.as_tensor(r)
    if r.dim() < 2:
        raise ValueError(f"rewards must have shape [B, K] (or [..., B, K]), got {tuple(r.shape)}.")
    if r.shape[-1] < 1 or r.shape[-2] < 1:
        raise ValueError(f"rewards must have B >= 1 contexts and K >= 1 rollouts, "
                         f"got shape {tuple(r.shape)}.")
    if not r.is_floating_point():
        r = r.to(torch.get_default_dtype())
    if not bool(torch.isfinite(r).all()):
        raise ValueError("rewards contain NaN or infinite values.")
    return r


def rloo_baseline(r: Tensor) -> Tensor:
    """Leave-one-out mean within each context: ``b[c, i] = mean_{j != i} r[c, j]`` (K >= 2)."""
    k = r.shape[-1]
    if k < 2:
        raise ValueError(f"The rloo baseline needs K >= 2 rollouts per context, got K = {k}.")
    return (r.sum(-1, keepdim=True) - r) / (k - 1)


def xctx_baseline(r: Tensor) -> Tensor:
    """Leave-one-out mean of the whole batch: mean of all B*K rewards except ``r[c, i]``."""
    n = r.shape[-1] * r.shape[-2]
    if n < 2:
        raise ValueError(f"The xctx baseline needs at least 2 rewards in the batch, got {n}.")
    return (r.sum((-2, -1), keepdim=True) - r) / (n - 1)


def variance_components(r: Tensor) -> tuple[Tensor, Tensor | None]:
    """Random-effects moments ``(s2, d2)`` of ``r [..., B, K]`` (K >= 2; ``d2`` None if B < 2).

    ``s2``: mean over contexts of the unbiased within-context variance.
    ``d2``: ``max(0, sum_c (rbar_c - rbar)^2 / (B - 1) - s2 / K)``.
    """
    b, k = r.shape[-2], r.shape[-1]
    if k < 2:
        raise ValueError(f"s2 needs K >= 2 rollouts per context, got K = {k}.")
    s2 = r.var(-1, correction=1).mean(-1)
    if b < 2:
        return s2, None
    means = r.mean(-1)
    between = means.var(-1, correction=1)  # (1/(B-1)) sum_c (rbar_c - rbar)^2
    d2 = (between - s2 / k).clamp_min(0.0)
    return s2, d2


def js_shrinkage(s2: Tensor, d2: Tensor | None, k: int) -> Tensor:
    """James-Stein weight ``a = (s2/(K-1)) / (s2/(K-1) + d2)``; 1 when ``s2 = d2 = 0``.

    ``d2 = None`` (a single context) gives ``a = 0``.
    """
    if d2 is None:
        return torch.zeros_like(s2)
    v = s2 / (k - 1)
    denom = v + d2
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, v / safe, torch.ones_like(denom))


def compute_baseline(r: Tensor, kind: str) -> BaselineResult:
    """Baseline of the given ``kind`` (one of :data:`BASELINE_KINDS`) for rewards ``r [B, K]``.

    Raises ``ValueError`` for an unknown kind, a bad shape, non-finite rewards, K < 2 with
    ``rloo``/``js``, or a single reward in the batch with ``xctx``.
    """
    if kind not in BASELINE_KINDS:
        raise ValueError(f"baseline kind must be one of {BASELINE_KINDS}, got {kind!r}.")
    r = _check_rewards(r)
    b, k = r.shape[-2], r.shape[-1]
    batch_shape = r.shape[:-2]
    zero = r.new_zeros(batch_shape)
    s2 = d2 = None
    if k >= 2:
        s2, d2 = variance_components(r)

    if kind == "none":
        return BaselineResult(kind, torch.zeros_like(r), zero, s2, d2)
    if kind == "rloo":
        return BaselineResult(kind, rloo_baseline(r), zero, s2, d2)
    if kind == "xctx":
        return BaselineResult(kind, xctx_baseline(r), torch.ones_like(zero), s2, d2)

    # James-Stein.
    if k < 2:
        raise ValueError(f"The js baseline needs K >= 2 rollouts per context, got K = {k}.")
    if b < 3:
        log.debug("js baseline with B = %d contexts: the dominance over RLOO holds for B >= 3.", b)
    assert s2 is not None
    a = js_shrinkage(s2, d2, k)
    a_ = a[..., None, None]
    base = (1.0 - a_) * rloo_baseline(r) + a_ * xctx_baseline(r)
    return BaselineResult(kind, base, a, s2, d2)


def advantages(r: Tensor, kind: str, normalize: bool = False, eps: float = 1e-8) -> Tensor:
    """Advantages ``r - b`` with the ``kind`` baseline.

    With ``normalize``, divide by the batch's reward standard deviation (unbiased, over all
    B*K rewards of each ``[B, K]`` slice) plus ``eps``; a single-reward batch is left unscaled.
    """
    r = _check_rewards(r)
    adv = r - compute_baseline(r, kind).baseline
    if normalize and r.shape[-1] * r.shape[-2] > 1:
        std = r.flatten(-2).std(-1, correction=1)[..., None, None]
        adv = adv / (std + eps)
    return adv
