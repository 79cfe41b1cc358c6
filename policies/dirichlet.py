"""The single-shot Dirichlet schedule policy.

Two parameterisations of the concentrations ``alpha`` over ``L + 1`` simplex segments:

* ``concentration="softplus"`` (the paper's; the loading default, so older policy files
  rebuild unchanged): ``alpha = softplus(f_theta(x_T, c)) + 1e-3``;
* ``concentration="scheduled"`` (the trainer's default for new runs): separate mean and
  concentration, ``alpha = kappa * softmax(f_theta(x_T, c)) + 1e-3``, where ``kappa`` is a
  buffer, not a parameter: the trainer moves it geometrically from ``kappa_start`` to
  ``kappa_end`` over the run (:meth:`DirichletPolicy.set_progress`). Under REINFORCE the
  softplus form's total concentration runs away (thousands after a few hundred iterations),
  which shrinks the mean's sensitivity to the head by ``1 / kappa`` and can freeze the policy
  into one context-independent schedule (bench/results/learning_quality.md).

The schedule is the Dirichlet mean (``mode="mean"``, deterministic) or a sample
(``mode="sample"``), mapped to timesteps by :mod:`policies.schedule`. One policy call
happens before sampling. Plays the roles :class:`policies.contract.OneShotPolicy` and
:class:`policies.contract.TrainableDistribution` (actions are the segments ``tau [B, K, L+1]``)
and is registered as kind ``dirichlet``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.distributions import Dirichlet

from .checks import check_sizes
from .contract import Features, features_argument, kind_options, register_policy
from .encoders import build_encoder
from .schedule import DEFAULT_MIN_STEP, clamp_increments, increments_to_schedule, resample_schedule

ALPHA_FLOOR = 1e-3
_TAU_FLOOR = 1e-12  # log-densities are taken at segments clamped to this (a sample can be 0)


CONCENTRATIONS = ("softplus", "scheduled")
"""Parameterisations of the Dirichlet concentrations (see the module docstring)."""
DEFAULT_KAPPA_START = 40.0
"""Initial total concentration of the ``scheduled`` form (measured at L = 3, 5, 8)."""
KAPPA_END_FACTOR = 10.0
"""``kappa_end = KAPPA_END_FACTOR * kappa_start`` when not given (40 -> 400 measured best)."""


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


def _check_positive(name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"DirichletPolicy: {name} must be a finite number > 0, got {value!r}.")


@register_policy
class DirichletPolicy(nn.Module):
    """Encoder + 2-layer MLP head producing Dirichlet concentrations for ``L + 1`` segments.

    Args:
        encoder: a module from :mod:`policies.encoders` (``encoder(**features)``).
        steps: the sampler budget ``L``.
        head_hidden: width of the head's hidden layer.
        init_concentration: total concentration ``sum(alpha)`` at initialisation (default
            ``8 (L + 1)``); higher means less exploration. The head starts at the uniform split
            of the simplex.
        min_segment: floor applied to sampled segments before they become timesteps.
        concentration: ``softplus`` (alpha = softplus(head) + floor, the default when loading)
            or ``scheduled`` (alpha = kappa * softmax(head) + floor, kappa scheduled by the
            trainer from ``kappa_start`` to ``kappa_end``).
        kappa_start, kappa_end: the ``scheduled`` form's total concentration at the start and
            the end of training (defaults 40 and 10 x kappa_start); ignored by ``softplus``.
    """

    kind = "dirichlet"

    def __init__(self, encoder: nn.Module, steps: int, head_hidden: int = 128,
                 init_concentration: float | None = None,
                 min_segment: float = DEFAULT_MIN_STEP, concentration: str = "softplus",
                 kappa_start: float | None = None, kappa_end: float | None = None):
        super().__init__()
        if concentration not in CONCENTRATIONS:
            raise ValueError(f"DirichletPolicy: concentration must be one of {CONCENTRATIONS}, "
                             f"got {concentration!r}.")
        _check_positive("kappa_start", kappa_start)
        _check_positive("kappa_end", kappa_end)
        check_sizes("DirichletPolicy", steps=steps, head_hidden=head_hidden)
        if not hasattr(encoder, "out_dim"):
            raise ValueError("DirichletPolicy needs an encoder from policies.encoders.")
        for name, value in (("init_concentration", init_concentration),
                            ("min_segment", min_segment)):
            if value is not None and (isinstance(value, bool) or not isinstance(
                    value, (int, float)) or not math.isfinite(value) or value < 0):
                raise ValueError(f"DirichletPolicy: {name} must be a finite number >= 0, got "
                                 f"{value!r}.")
        if min_segment * (steps + 1) >= 1:
            raise ValueError(f"DirichletPolicy: min_segment {min_segment} leaves no room for "
                             f"{steps + 1} segments.")
        self.encoder = encoder
        self.steps = steps
        self.head_hidden = head_hidden
        self.min_segment = min_segment
        n = steps + 1
        self.concentration = concentration
        self.head = nn.Sequential(nn.Linear(encoder.out_dim, head_hidden), nn.SiLU(),
                                  nn.Linear(head_hidden, n))
        nn.init.normal_(self.head[2].weight, std=1e-3)
        if concentration == "scheduled":
            self.kappa_start = float(kappa_start or init_concentration or DEFAULT_KAPPA_START)
            self.kappa_end = float(kappa_end or KAPPA_END_FACTOR * self.kappa_start)
            self.init_concentration = self.kappa_start
            # the current total concentration: saved with the weights (a policy file keeps the
            # last one, used by mode="sample"), set by the trainer through set_progress
            self.register_buffer("kappa", torch.tensor(self.kappa_start))
            with torch.no_grad():
                self.head[2].bias.fill_(-math.log(n))  # the uniform mean
            return
        self.init_concentration = float(init_concentration or 8.0 * n)
        with torch.no_grad():
            target = torch.full((n,), self.init_concentration / n)
            self.head[2].bias.copy_(_inverse_softplus(target - ALPHA_FLOOR))

    @torch.no_grad()
    def init_mean(self, segments: torch.Tensor) -> None:
        """Start at given mean segments ``[L+1]`` (e.g. the model's default schedule, via
        ``schedule_to_increments``) with the initial total concentration."""
        n = self.steps + 1
        seg = torch.as_tensor(segments, dtype=self.head[2].bias.dtype).flatten()
        if seg.numel() != n or not torch.isfinite(seg).all() or (seg <= 0).any():
            raise ValueError(f"init_mean needs {n} positive segments, got {seg.tolist()}.")
        if self.concentration == "scheduled":
            self.head[2].bias.copy_(torch.log(seg / seg.sum()))
            return
        target = (seg / seg.sum() * self.init_concentration).clamp_min(2 * ALPHA_FLOOR)
        self.head[2].bias.copy_(_inverse_softplus(target - ALPHA_FLOOR))

    @torch.no_grad()
    def set_progress(self, fraction: float) -> None:
        """Tell the policy how far training is (0 at the first iteration, 1 at the last): the
        ``scheduled`` form sets ``kappa = kappa_start (kappa_end / kappa_start) ** fraction``,
        a pure function of the iteration (so a resumed run stays bit-exact). The
        ``softplus`` form has nothing to schedule."""
        if self.concentration != "scheduled":
            return
        frac = min(max(float(fraction), 0.0), 1.0)
        self.kappa.fill_(self.kappa_start * (self.kappa_end / self.kappa_start) ** frac)

    # -- distribution -------------------------------------------------------------------
    def mean_segments(self, features: Features) -> torch.Tensor:
        """The segments of the ``mode="mean"`` schedule ``[B, L+1]``: the Dirichlet mean
        (``scheduled``: ``softmax(head)``, the mean without the floor, so that it does not
        depend on the current concentration)."""
        if self.concentration == "scheduled":
            return torch.softmax(self.head(self.encoder(**features)), -1)
        alpha = self.alpha(features)
        return alpha / alpha.sum(-1, keepdim=True)

    def alpha(self, features: Features) -> torch.Tensor:
        """Dirichlet concentrations ``[B, L+1]``."""
        h = self.head(self.encoder(**features))
        if self.concentration == "scheduled":
            return self.kappa * torch.softmax(h, -1) + ALPHA_FLOOR
        return nn.functional.softplus(h) + ALPHA_FLOOR

    def distribution(self, features: Features) -> Dirichlet:
        return Dirichlet(self.alpha(features))

    def _density(self, alpha: torch.Tensor) -> Dirichlet:
        """The Dirichlet whose log-density and entropy the losses use: float64 for the
        ``scheduled`` form, whose concentrations reach hundreds (its log-density is a
        difference of lgamma values near 2000, where float32 keeps ~1e-4 absolute: PPO's
        ratio would carry that noise); the ``softplus`` form as it always was."""
        return Dirichlet(alpha.double() if self.concentration == "scheduled" else alpha)

    # -- the roles: OneShotPolicy and TrainableDistribution ---------------------------------
    def feature_dims(self) -> dict[str, list[int]]:
        return self.encoder.feature_dims()

    def sample(self, features: Features, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` segment vectors per context ``[B, K, L+1]`` and their log-densities ``[B, K]``.

        Drawn as ``Dirichlet(alpha).sample((K,))`` (``[K, B, L+1]``) and transposed: the order
        in which the trainer has always consumed the random stream.
        """
        alpha = self.alpha(features)
        tau = Dirichlet(alpha).sample((k,))  # [K, B, L+1]
        dens = self._density(alpha)
        logp = dens.log_prob(tau.clamp_min(_TAU_FLOOR).to(dens.concentration)).to(alpha.dtype)
        return tau.transpose(0, 1), logp.transpose(0, 1)

    def log_prob(self, features: Features, actions: torch.Tensor) -> torch.Tensor:
        """Log-density ``[B, K]`` of segments ``actions [B, K, L+1]``."""
        return self.evaluate_actions(features, actions)[0]

    def entropy(self, features: Features) -> torch.Tensor:
        """Dirichlet entropy of every context ``[B]``."""
        alpha = self.alpha(features)
        return self._density(alpha).entropy().to(alpha.dtype)

    def evaluate_actions(self, features: Features, actions: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_prob [B, K], entropy [B])`` from one forward pass (what a loss needs)."""
        alpha = self.alpha(features)
        dens = self._density(alpha)
        # [K, B, L+1] layout, as the samples were drawn
        tau = actions.transpose(0, 1).clamp_min(_TAU_FLOOR).to(dens.concentration)
        logp = dens.log_prob(tau).transpose(0, 1).to(alpha.dtype)
        return logp, dens.entropy().to(alpha.dtype)

    def actions_to_schedules(self, actions: torch.Tensor) -> torch.Tensor:
        """Segments ``[..., L+1]`` -> flow schedules ``[..., L+1]`` (segments floored)."""
        return to_schedule(actions, self.min_segment)

    def schedule(self, features: Features | str | None = None, steps: int | None = None,
                 mode: str = "mean", **legacy: torch.Tensor) -> torch.Tensor:
        """Flow-time sampler schedules ``[B, steps+1]`` (``[1, ..., 0]``), one per context.

        ``mode="mean"``: the Dirichlet mean (deterministic); ``"sample"``: one draw.
        ``steps`` other than ``L`` resamples the ``L``-step schedule
        (:func:`policies.schedule.resample_schedule`). The old keyword style
        ``schedule(mode=..., **features)`` still works.
        """
        features, mode = features_argument(features, mode, legacy)
        if mode == "mean":
            tau = self.mean_segments(features)
        elif mode == "sample":
            tau = Dirichlet(self.alpha(features)).sample()
        else:
            raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}.")
        sched = to_schedule(tau, self.min_segment)
        if steps is not None and steps != self.steps:
            sched = resample_schedule(sched, steps)
        return sched

    @torch.no_grad()
    def diagnostics(self, features: Features) -> dict[str, float]:
        """What the trainer logs about the distribution: the mean total concentration and
        ``schedule_spread``, the std across the contexts of the mean schedule averaged over
        the interior timesteps (near 0: one context-independent schedule, a collapse)."""
        alpha = self.alpha(features)
        sched = to_schedule(self.mean_segments(features), self.min_segment)
        return {"concentration": float(alpha.sum(-1).mean()),
                "schedule_spread": schedule_spread(sched)}

    # -- (de)serialisation ----------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        cfg = {"policy": self.kind, "steps": self.steps, "head_hidden": self.head_hidden,
               "init_concentration": self.init_concentration,
               "min_segment": self.min_segment, "encoder": self.encoder.config()}
        if self.concentration != "softplus":  # softplus configs stay as older files wrote them
            cfg.update(concentration=self.concentration, kappa_start=self.kappa_start,
                       kappa_end=self.kappa_end)
        return cfg

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DirichletPolicy:
        cfg = kind_options(cls, config)
        return cls(build_encoder(cfg.pop("encoder")), **cfg)

    @classmethod
    def for_training(cls, encoder: nn.Module, steps: int, *, hidden: int,
                     init_segments: torch.Tensor | None = None,
                     init_concentration: float | None = None, concentration: str = "softplus",
                     kappa_end: float | None = None) -> DirichletPolicy:
        """A fresh policy for the trainer (mean at ``init_segments`` when given); with
        ``concentration="scheduled"`` the concentration goes from ``init_concentration``
        (default 40) to ``kappa_end`` (default 10x) over the run."""
        policy = cls(encoder, steps, head_hidden=hidden, init_concentration=init_concentration,
                     concentration=concentration, kappa_end=kappa_end)
        if init_segments is not None:
            policy.init_mean(init_segments)
        return policy


def to_schedule(tau: torch.Tensor, min_segment: float = DEFAULT_MIN_STEP) -> torch.Tensor:
    """Segments -> flow schedule, after flooring each segment at ``min_segment``."""
    return increments_to_schedule(clamp_increments(tau, min_segment))


def schedule_spread(schedules: torch.Tensor) -> float:
    """Std across contexts of schedules ``[N, L+1]``, averaged over the interior timesteps
    (0 for a single context or L = 1)."""
    if schedules.shape[0] < 2 or schedules.shape[-1] <= 2:
        return 0.0
    return float(schedules[:, 1:-1].float().std(0).mean())


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["DirichletPolicy", "to_schedule", "parameter_count", "ALPHA_FLOOR",
           "CONCENTRATIONS", "schedule_spread"]
