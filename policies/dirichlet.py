"""The single-shot Dirichlet schedule policy.

``alpha = softplus(f_theta(x_T, c)) + 1e-3`` over ``L + 1`` simplex segments; the schedule is
the Dirichlet mean (``mode="mean"``, deterministic) or a sample (``mode="sample"``), mapped
to timesteps by :mod:`policies.schedule`. One policy call happens before sampling.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributions import Dirichlet

from .encoders import build_encoder
from .schedule import DEFAULT_MIN_STEP, clamp_increments, increments_to_schedule

ALPHA_FLOOR = 1e-3


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


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
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}.")
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
    def alpha(self, **features: torch.Tensor) -> torch.Tensor:
        """Dirichlet concentrations ``[B, L+1]``."""
        return nn.functional.softplus(self.head(self.encoder(**features))) + ALPHA_FLOOR

    def distribution(self, **features: torch.Tensor) -> Dirichlet:
        return Dirichlet(self.alpha(**features))

    def act(self, mode: str = "mean", num_samples: int | None = None,
            **features: torch.Tensor) -> torch.Tensor:
        """Segments ``tau``: ``[B, L+1]``, or ``[S, B, L+1]`` when ``num_samples`` is given."""
        alpha = self.alpha(**features)
        if mode == "mean":
            tau = alpha / alpha.sum(-1, keepdim=True)
            if num_samples is not None:
                tau = tau.expand(num_samples, *tau.shape)
        elif mode == "sample":
            shape = () if num_samples is None else (num_samples,)
            tau = Dirichlet(alpha).sample(shape)
        else:
            raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}.")
        return tau

    def log_prob(self, tau: torch.Tensor, **features: torch.Tensor) -> torch.Tensor:
        """Log-density of segments ``tau`` (``[..., B, L+1]``) under the policy."""
        return self.distribution(**features).log_prob(tau.clamp_min(1e-12))

    def schedule(self, mode: str = "mean", **features: torch.Tensor) -> torch.Tensor:
        """Flow-time sampler schedules ``[B, L+1]`` (``[1, ..., 0]``) for a batch of contexts."""
        return to_schedule(self.act(mode=mode, **features), self.min_segment)

    # -- (de)serialisation ----------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"policy": self.kind, "steps": self.steps, "head_hidden": self.head_hidden,
                "init_concentration": self.init_concentration,
                "min_segment": self.min_segment, "encoder": self.encoder.config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DirichletPolicy:
        cfg = dict(config)
        if cfg.pop("policy", cls.kind) != cls.kind:
            raise ValueError(f"Not a {cls.kind} policy config.")
        return cls(build_encoder(cfg.pop("encoder")), **cfg)


def to_schedule(tau: torch.Tensor, min_segment: float = DEFAULT_MIN_STEP) -> torch.Tensor:
    """Segments -> flow schedule, after flooring each segment at ``min_segment``."""
    return increments_to_schedule(clamp_increments(tau, min_segment))


def build_policy(config: dict[str, Any]) -> nn.Module:
    """Rebuild any policy from its ``config()``; ``ValueError`` for an unknown kind."""
    kind = config.get("policy")
    if kind == DirichletPolicy.kind:
        return DirichletPolicy.from_config(config)
    raise ValueError(f"Unknown policy kind {kind!r}.")


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["DirichletPolicy", "build_policy", "to_schedule", "parameter_count", "ALPHA_FLOOR"]
