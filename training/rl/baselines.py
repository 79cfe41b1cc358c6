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
"""The paper's baseline names (all accepted by :func:`compute_baseline`)."""

EXTRA_BASELINE_KINDS: tuple[str, ...] = ("js_winsor", "js_rank", "js_group", "js_group_pooled")
"""Robust and grouped James-Stein variants, also accepted by :func:`compute_baseline`:

* ``js_winsor``: JS computed on winsorised rewards (median +- 3 scaled MADs of the batch);
* ``js_rank``: the JS weight estimated on normal scores of the batch ranks (scale-free and
  insensitive to heavy tails), applied to the raw leave-one-out means;
* ``js_group``: each context shrunk toward its own prompt group's leave-one-out mean, with a
  JS weight per group (``groups`` gives each context's group);
* ``js_group_pooled``: the same with one weight whose between-context spread is pooled over
  the groups.
"""


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


def compute_baseline(r: Tensor, kind: str, groups: Tensor | None = None) -> BaselineResult:
    """Baseline of the given ``kind`` for rewards ``r [B, K]``.

    ``kind``: one of :data:`BASELINE_KINDS` or :data:`EXTRA_BASELINE_KINDS` (robust and
    grouped James-Stein, see :func:`robust_js_baseline` and :func:`grouped_js_baseline`).
    ``groups``: optional prompt-group id per context (``[B]``), used by the grouped kinds only;
    ``None`` puts every context in one group (the grouped kinds then equal ``js``).

    Raises ``ValueError`` for an unknown kind, a bad shape, non-finite rewards, K < 2 with
    ``rloo``/``js``, or a single reward in the batch with ``xctx``.
    """
    if kind in EXTRA_BASELINE_KINDS:
        if kind in ("js_group", "js_group_pooled"):
            return grouped_js_baseline(r, groups, pooled=kind == "js_group_pooled")
        return robust_js_baseline(r, "winsor" if kind == "js_winsor" else "rank")
    if kind not in BASELINE_KINDS:
        raise ValueError(f"baseline kind must be one of {BASELINE_KINDS + EXTRA_BASELINE_KINDS}, "
                         f"got {kind!r}.")
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


WINSOR_MADS = 3.0
"""Winsorisation half-width in scaled median absolute deviations (``js_winsor``)."""


def winsorize(r: Tensor, mads: float = WINSOR_MADS) -> Tensor:
    """Clip each ``[B, K]`` slice at its median +- ``mads`` x 1.4826 x MAD (all B*K rewards).

    With a MAD of 0 (more than half the rewards equal) nothing is clipped.
    """
    r = _check_rewards(r)
    flat = r.flatten(-2)
    med = flat.quantile(0.5, dim=-1, keepdim=True)  # the midpoint for an even count
    mad = (flat - med).abs().quantile(0.5, dim=-1, keepdim=True) * 1.4826
    half = torch.where(mad > 0, mads * mad, torch.full_like(mad, float("inf")))
    lo, hi = (med - half)[..., None], (med + half)[..., None]
    return torch.minimum(torch.maximum(r, lo), hi)


def normal_scores(r: Tensor) -> Tensor:
    """Rank-based normal scores of each ``[B, K]`` slice: ``Phi^-1((rank + 0.5) / (B K))``.

    Ties get the mean of their scores' ranks (average ranks), so equal rewards stay equal.
    """
    r = _check_rewards(r)
    flat = r.flatten(-2)
    n = flat.shape[-1]
    # average ranks: (number below) + (number equal - 1) / 2, vectorised by pairwise compare
    below = (flat[..., None, :] < flat[..., :, None]).sum(-1).to(r.dtype)
    equal = (flat[..., None, :] == flat[..., :, None]).sum(-1).to(r.dtype)
    rank = below + (equal - 1) / 2
    p = (rank + 0.5) / n
    scores = torch.special.ndtri(p)
    return scores.reshape(r.shape)


def robust_js_baseline(r: Tensor, method: str = "winsor") -> BaselineResult:
    """James-Stein baseline made robust to heavy-tailed rewards (K >= 2).

    ``method="winsor"`` (kind ``js_winsor``): the shrinkage weight and both leave-one-out
    means come from :func:`winsorize`-d rewards; an outlier then moves neither its partners'
    baselines nor the variance estimates by more than the clip. ``method="rank"`` (kind
    ``js_rank``): the weight ``a`` is estimated on :func:`normal_scores` of the batch (``a`` is
    a ratio of variances, so any monotone rescaling that tames the tails keeps its meaning
    under the random-effects model) and applied to the raw leave-one-out means. Either way the
    clip thresholds or ranks use the whole batch, so, like ``a`` in ``js``, the baseline of
    ``r[c, i]`` depends weakly on ``r[c, i]`` (a small bias).
    """
    if method not in ("winsor", "rank"):
        raise ValueError(f"method must be 'winsor' or 'rank', got {method!r}.")
    r = _check_rewards(r)
    k = r.shape[-1]
    if k < 2:
        raise ValueError(f"The js_{method} baseline needs K >= 2 rollouts per context, "
                         f"got K = {k}.")
    kind = f"js_{method}"
    if method == "winsor":
        rw = winsorize(r)
        s2, d2 = variance_components(rw)
        a = js_shrinkage(s2, d2, k)
        a_ = a[..., None, None]
        return BaselineResult(kind, (1 - a_) * rloo_baseline(rw) + a_ * xctx_baseline(rw),
                              a, s2, d2)
    s2, d2 = variance_components(normal_scores(r))
    a = js_shrinkage(s2, d2, k)
    a_ = a[..., None, None]
    return BaselineResult(kind, (1 - a_) * rloo_baseline(r) + a_ * xctx_baseline(r), a, s2, d2)


def grouped_js_baseline(r: Tensor, groups: Tensor | None = None,
                        pooled: bool = False) -> BaselineResult:
    """James-Stein shrinkage toward each context's own prompt group (K >= 2).

    ``groups [B]``: a group id per context (contexts sharing a prompt, differing in noise);
    ``None`` means one group, which gives exactly the ``js`` baseline. For rollout ``i`` of
    context ``c`` in group ``g`` (``n_g`` contexts):

    * ``b_grp[c, i]`` = mean of the group's ``n_g K`` rewards except ``r[c, i]``;
    * ``s2``: the pooled within-context variance of the whole batch (as in ``js``);
    * per group (``pooled=False``, kind ``js_group``): ``d2_g = max(0, sum_{c in g}
      (rbar_c - rbar_g)^2 / (n_g - 1) - s2 / K)`` and ``a_g = (s2/(K-1)) / (s2/(K-1) + d2_g)``;
      a group of one context has ``b_grp = b_rloo``, so its weight is irrelevant (set to 0);
    * pooled (kind ``js_group_pooled``): one ``d2 = max(0, sum_g sum_{c in g}
      (rbar_c - rbar_g)^2 / sum_g (n_g - 1) - s2 / K)`` and one weight for every group (when
      no group has two contexts, ``a = 0`` and the baseline is RLOO);
    * ``b = (1 - a_g) b_rloo + a_g b_grp``.

    ``js_weight`` is the context-weighted mean of ``a_g``; ``d2`` the pooled value or the
    context-weighted mean of ``d2_g``. Vectorised over groups (one-hot matrix), any leading
    dimensions of ``r`` share the same ``groups``.
    """
    r = _check_rewards(r)
    b, k = r.shape[-2], r.shape[-1]
    kind = "js_group_pooled" if pooled else "js_group"
    if k < 2:
        raise ValueError(f"The {kind} baseline needs K >= 2 rollouts per context, got K = {k}.")
    if groups is None:
        groups = torch.zeros(b, dtype=torch.long)
    groups = torch.as_tensor(groups).flatten()
    if groups.numel() != b:
        raise ValueError(f"groups must give one group id per context ({b}), got "
                         f"{groups.numel()}.")
    _, inverse = torch.unique(groups.to(r.device), return_inverse=True)
    onehot = torch.nn.functional.one_hot(inverse).to(r.dtype)  # [B, P]
    n_g = onehot.sum(0)  # [P]
    n_c = onehot @ n_g  # [B]: size of each context's group
    s2 = r.var(-1, correction=1).mean(-1)  # [...]
    means = r.mean(-1)  # [..., B]
    group_mean = (means @ onehot) / n_g  # [..., P]
    dev2 = (means - group_mean @ onehot.T).pow(2)  # [..., B]
    v = s2 / (k - 1)
    if pooled:
        dof = float((n_g - 1).sum())
        if dof > 0:
            d2 = (dev2.sum(-1) / dof - s2 / k).clamp_min(0.0)
            a = js_shrinkage(s2, d2, k)
        else:
            d2, a = torch.zeros_like(s2), torch.zeros_like(s2)
        a_c = a[..., None].expand(means.shape)  # [..., B]
        d2_report = d2
    else:
        dof_g = (n_g - 1).clamp_min(1.0)
        d2_g = ((dev2 @ onehot) / dof_g - s2[..., None] / k).clamp_min(0.0)  # [..., P]
        denom = v[..., None] + d2_g
        a_g = torch.where(denom > 0, v[..., None] / torch.where(denom > 0, denom,
                                                                 torch.ones_like(denom)),
                          torch.ones_like(denom))
        a_g = torch.where(n_g > 1, a_g, torch.zeros_like(a_g))
        a_c = a_g @ onehot.T  # [..., B]
        a = a_c.mean(-1)
        d2_report = (d2_g @ onehot.T).mean(-1)
    group_sum = (r.sum(-1) @ onehot) @ onehot.T  # [..., B]: each context's group total
    denom_n = (n_c * k - 1)[:, None]  # >= 1 since K >= 2
    b_grp = (group_sum[..., None] - r) / denom_n
    a_ = a_c[..., None]
    base = (1 - a_) * rloo_baseline(r) + a_ * b_grp
    return BaselineResult(kind, base, a, s2, d2_report)


def advantages(r: Tensor, kind: str, normalize: bool = False, eps: float = 1e-8,
               groups: Tensor | None = None) -> Tensor:
    """Advantages ``r - b`` with the ``kind`` baseline (``groups``: as for
    :func:`compute_baseline`).

    With ``normalize``, divide by the batch's reward standard deviation (unbiased, over all
    B*K rewards of each ``[B, K]`` slice) plus ``eps``; a single-reward batch is left unscaled.
    """
    r = _check_rewards(r)
    adv = r - compute_baseline(r, kind, groups=groups).baseline
    if normalize and r.shape[-1] * r.shape[-2] > 1:
        std = r.flatten(-2).std(-1, correction=1)[..., None, None]
        adv = adv / (std + eps)
    return adv
