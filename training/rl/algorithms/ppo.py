"""TPDM-style PPO: several epochs of the clipped-ratio objective on each batch of rollouts.

Same rollouts and advantages as :mod:`.reinforce`; the loss is
``-mean(min(rho A, clip(rho, 1 - eps, 1 + eps) A))`` with ``rho = pi(a) / pi_old(a)``, where
``pi_old`` is the policy that sampled the batch (:func:`training.rl.losses.clipped_surrogate`,
shared with AdaGen). Logs the last epoch's approximate KL divergence to ``pi_old``
(``mean((rho - 1) - log rho)``) and the fraction of clipped ratios.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ....policies.fields import option
from ..losses import clipped_surrogate
from .registry import register_algorithm
from .reinforce import Reinforce, ReinforceConfig


@dataclass
class PPOConfig(ReinforceConfig):
    """TPDM-style PPO: several epochs of the clipped-ratio objective on each batch."""

    epochs: int = option(4, ge=1, le=1000)
    """Optimisation epochs over each batch of rollouts."""
    clip: float = option(0.2, gt=0, lt=1)
    """Ratio clip range."""


@register_algorithm
class PPO(Reinforce):
    """Clipped-ratio PPO on the Dirichlet schedule policy."""

    name = "ppo"
    aliases = ("dirichlet-ppo",)
    method = "dirichlet-ppo"
    options_class = PPOConfig
    loss_metrics = ("entropy", "approx_kl", "clip_frac")

    @property
    def epochs(self) -> int:  # type: ignore[override]
        return self.options.epochs

    @torch.no_grad()
    def reference_logp(self, policy: Any, features: dict[str, Tensor], actions: Tensor
                       ) -> Tensor:
        return policy.log_prob(features, actions)

    def loss(self, policy: Any, features: dict[str, Tensor], actions: Tensor, adv: Tensor,
             reference: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        assert reference is not None
        logp, entropy = policy.evaluate_actions(features, actions)
        entropy = entropy.mean()
        surrogate = clipped_surrogate(logp - reference, adv, self.options.clip)
        loss = surrogate.loss
        if self.options.entropy_coef:
            loss = loss - self.options.entropy_coef * entropy
        return loss, {"entropy": entropy.detach(), "approx_kl": surrogate.approx_kl,
                      "clip_frac": surrogate.clip_frac}


__all__ = ["PPO", "PPOConfig"]
