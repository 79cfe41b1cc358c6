"""The single-shot Dirichlet schedule policy.

``alpha = softplus(f_theta(x_T, c)) + 1e-3`` over ``L + 1`` simplex segments; the schedule is
the Dirichlet mean (``mode="mean"``, deterministic) or a sample (``mode="sample"``), mapped
to timesteps by :mod:`policies.schedule`. One policy call happens before sampling. Follows
:class:`policies.contract.SchedulePolicy` (actions are the segments ``tau [B, K, L+1]``) and
is registered as kind ``dirichlet``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.distributions import Dirichlet

from .checks import check_sizes
from .contract import Features, build_policy, features_argument, register_policy
from .encoders import build_encoder
from .schedule import DEFAULT_MIN_STEP, clamp_increments, increments_to_schedule, resample_schedule

ALPHA_FLOOR = 1e-3
_TAU_FLOOR = 1e-12  # log-densities are taken at segments clamped to this (a sample can be 0)


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


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
    """

    kind = "dirichlet"

    def __init__(self, encoder: nn.Module, steps: int, head_hidden: int = 128,
                 init_concentration: float | None = None,
                 min_segment: float = DEFAULT_MIN_STEP):
        super().__init__()
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
        self.init_concentration = float(init_concentration or 8.0 * n)
        self.head = nn.Sequential(nn.Linear(encoder.out_dim, head_hidden), nn.SiLU(),
                                  nn.Linear(head_hidden, n))
        nn.init.normal_(self.head[2].weight, std=1e-3)
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
        target = (seg / seg.sum() * self.init_concentration).clamp_min(2 * ALPHA_FLOOR)
        self.head[2].bias.copy_(_inverse_softplus(target - ALPHA_FLOOR))

    # -- distribution -------------------------------------------------------------------
    def alpha(self, features: Features) -> torch.Tensor:
        """Dirichlet concentrations ``[B, L+1]``."""
        return nn.functional.softplus(self.head(self.encoder(**features))) + ALPHA_FLOOR

    def distribution(self, features: Features) -> Dirichlet:
        return Dirichlet(self.alpha(features))

    # -- the SchedulePolicy contract ------------------------------------------------------
    def feature_dims(self) -> dict[str, list[int]]:
        return self.encoder.feature_dims()

    def sample(self, features: Features, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` segment vectors per context ``[B, K, L+1]`` and their log-densities ``[B, K]``.

        Drawn as ``Dirichlet(alpha).sample((K,))`` (``[K, B, L+1]``) and transposed: the order
        in which the trainer has always consumed the random stream.
        """
        dist = self.distribution(features)
        tau = dist.sample((k,))  # [K, B, L+1]
        logp = dist.log_prob(tau.clamp_min(_TAU_FLOOR))
        return tau.transpose(0, 1), logp.transpose(0, 1)

    def log_prob(self, features: Features, actions: torch.Tensor) -> torch.Tensor:
        """Log-density ``[B, K]`` of segments ``actions [B, K, L+1]``."""
        return self.evaluate_actions(features, actions)[0]

    def entropy(self, features: Features) -> torch.Tensor:
        """Dirichlet entropy of every context ``[B]``."""
        return self.distribution(features).entropy()

    def evaluate_actions(self, features: Features, actions: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_prob [B, K], entropy [B])`` from one forward pass (what a loss needs)."""
        dist = self.distribution(features)
        # [K, B, L+1] layout, as the samples were drawn
        logp = dist.log_prob(actions.transpose(0, 1).clamp_min(_TAU_FLOOR)).transpose(0, 1)
        return logp, dist.entropy()

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
        alpha = self.alpha(features)
        if mode == "mean":
            tau = alpha / alpha.sum(-1, keepdim=True)
        elif mode == "sample":
            tau = Dirichlet(alpha).sample()
        else:
            raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}.")
        sched = to_schedule(tau, self.min_segment)
        if steps is not None and steps != self.steps:
            sched = resample_schedule(sched, steps)
        return sched

    @torch.no_grad()
    def diagnostics(self, features: Features) -> dict[str, float]:
        """What the trainer logs about the distribution: mean total concentration."""
        return {"concentration": float(self.alpha(features).sum(-1).mean())}

    # -- (de)serialisation ----------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"policy": self.kind, "steps": self.steps, "head_hidden": self.head_hidden,
                "init_concentration": self.init_concentration,
                "min_segment": self.min_segment, "encoder": self.encoder.config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DirichletPolicy:
        if not isinstance(config, dict):
            raise ValueError(f"A {cls.kind} policy config must be an object.")
        cfg = dict(config)
        if cfg.pop("policy", cls.kind) != cls.kind:
            raise ValueError(f"Not a {cls.kind} policy config.")
        return cls(build_encoder(cfg.pop("encoder")), **cfg)

    @classmethod
    def for_training(cls, encoder: nn.Module, steps: int, *, hidden: int,
                     init_segments: torch.Tensor | None = None,
                     init_concentration: float | None = None) -> DirichletPolicy:
        """A fresh policy for the trainer (mean at ``init_segments`` when given)."""
        policy = cls(encoder, steps, head_hidden=hidden, init_concentration=init_concentration)
        if init_segments is not None:
            policy.init_mean(init_segments)
        return policy


def to_schedule(tau: torch.Tensor, min_segment: float = DEFAULT_MIN_STEP) -> torch.Tensor:
    """Segments -> flow schedule, after flooring each segment at ``min_segment``."""
    return increments_to_schedule(clamp_increments(tau, min_segment))


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["DirichletPolicy", "build_policy", "to_schedule", "parameter_count", "ALPHA_FLOOR"]
