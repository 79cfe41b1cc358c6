"""REINFORCE with a reward baseline (the paper): one gradient step per batch of rollouts.

Advantages ``r - b`` come from :func:`training.rl.baselines.advantages` with the configured
baseline (none / RLOO / XCTX / James-Stein); the loss is ``-mean(A * log pi(action))`` minus
an optional entropy bonus, minimised with the engine's optimiser and gradient clipping (no
gradient through the sampler).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ....policies.fields import check_values, option
from ..baselines import BASELINE_KINDS, EXTRA_BASELINE_KINDS, advantages, compute_baseline
from ..distributed import Dist
from .base import Algorithm, Batch, RolloutBatch
from .registry import register_algorithm

if TYPE_CHECKING:
    from ..config import TrainConfig

log = logging.getLogger("learned_schedules.training")

BASELINES = BASELINE_KINDS + EXTRA_BASELINE_KINDS
"""The paper's four baselines, then the robust and grouped James-Stein variants."""
GROUPED_BASELINES = ("js_group", "js_group_pooled")
"""Baselines that shrink toward each context's prompt group (batches drawn as prompts x seeds)."""


@dataclass
class ReinforceConfig:
    """REINFORCE with a reward baseline (the paper)."""

    baseline: str = option("js", choices=BASELINES)
    """Reward baseline: ``none``, ``rloo``, ``xctx`` (cross-context) or ``js`` (James-Stein,
    the paper's); robust JS: ``js_winsor`` (JS on winsorised rewards, for heavy tails) or
    ``js_rank`` (weight from rank scores); grouped JS: ``js_group`` (each context shrunk
    toward its own prompt's other seeds, one weight per prompt) or ``js_group_pooled`` (one
    weight pooled over the prompts). Grouped baselines draw batches as prompts x seeds
    (``seeds_per_prompt``); the back-end says which prompt each context has."""
    normalize_advantages: bool = False
    """Divide advantages by the batch's reward std (off in the paper)."""
    entropy_coef: float = option(0.0, ge=0)
    """Weight of an entropy bonus on the policy's distribution (0: none, as in the paper)."""

    @property
    def grouped(self) -> bool:
        """Whether the baseline draws batches grouped by prompt (``seeds_per_prompt``)."""
        return self.baseline in GROUPED_BASELINES

    def check(self, prefix: str) -> None:
        """Types, ranges and choices of the section's own fields (``prefix``: ``"ppo."``)."""
        check_values(self, prefix)

    def validate(self, config: TrainConfig) -> None:
        """Raise ``ValueError`` for options the run cannot use."""
        if self.baseline not in ("none", "xctx") and config.rollouts < 2:
            raise ValueError(f"The {self.baseline} baseline needs at least 2 rollouts per context.")
        if self.baseline in ("xctx", "js") and config.batch * config.rollouts < 2:
            raise ValueError(f"The {self.baseline} baseline needs at least 2 rollouts in a batch.")


@register_algorithm
class Reinforce(Algorithm):
    """REINFORCE on the Dirichlet schedule policy."""

    name = "reinforce"
    aliases = ("dirichlet-reinforce",)
    method = "dirichlet-reinforce"
    policy_kind = "dirichlet"
    options_class = ReinforceConfig
    epochs = 1
    """Gradient steps per batch of rollouts."""
    loss_metrics: tuple[str, ...] = ("entropy",)
    """Keys :meth:`loss` logs (every rank reduces the same keys, in this order)."""

    @property
    def run_tag(self) -> str:
        return f"{self.name}-{self.options.baseline}"

    def policy_options(self, config: TrainConfig) -> dict[str, Any]:
        """The Dirichlet policy in the configured parameterisation (``concentration``: the
        ``scheduled`` form's concentration follows :meth:`Algorithm.training_progress`)."""
        if config.policy.concentration == "scheduled" and self.options.baseline in ("none", "xctx"):
            log.warning("baseline %r has no per-context term: with the scheduled concentration "
                        "its common-mode reward noise moves the mean schedule (on the testbed "
                        "such runs ended far below the uniform schedule, bench/results/"
                        "quality_table); prefer rloo, js or js_group_pooled",
                        self.options.baseline)
        p = config.policy
        return {"init_concentration": p.init_concentration, "concentration": p.concentration,
                "kappa_end": p.final_concentration}

    def update(self, policy: Any, optimizer: torch.optim.Optimizer, batch: Batch,
               dist: Dist) -> dict[str, float]:
        assert isinstance(batch, RolloutBatch)
        rewards = batch.rewards
        groups = batch.groups if self.options.baseline in GROUPED_BASELINES else None
        base = compute_baseline(rewards, self.options.baseline, groups=groups)
        adv = advantages(rewards, self.options.baseline, self.options.normalize_advantages,
                         groups=groups)
        features, actions = batch.local()
        adv = adv[batch.mine]
        reference = self.reference_logp(policy, features, actions) if batch.share else None
        grad_norm = 0.0
        logged = {key: rewards.new_zeros(()) for key in self.loss_metrics}
        for _ in range(self.epochs):
            optimizer.zero_grad(set_to_none=True)
            loss = None
            if batch.share:  # a rank with no contexts (batch < world size) adds a zero gradient
                loss, values = self.loss(policy, features, actions, adv, reference)
                logged.update(values)
            grad_norm = self.gradient_step(policy, optimizer, loss, batch.share, dist)
        logged = {k: float(dist.all_reduce_sum(v * batch.share)) for k, v in logged.items()}
        return {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
                "baseline_mse": float((rewards - base.baseline).pow(2).mean()),
                "js_weight": float(base.js_weight), "grad_norm": grad_norm,
                **logged, **batch.stats}

    def reference_logp(self, policy: Any, features: dict[str, Tensor], actions: Tensor
                       ) -> Tensor | None:
        """Log-probabilities the loss compares against (None: plain policy gradient)."""
        return None

    def loss(self, policy: Any, features: dict[str, Tensor], actions: Tensor, adv: Tensor,
             reference: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss on this rank's contexts and what to log about it (detached local means,
        entropy first)."""
        logp, entropy = policy.evaluate_actions(features, actions)
        entropy = entropy.mean()
        loss = -(adv * logp).mean()
        if self.options.entropy_coef:
            loss = loss - self.options.entropy_coef * entropy
        return loss, {"entropy": entropy.detach()}


__all__ = ["BASELINES", "GROUPED_BASELINES", "Reinforce", "ReinforceConfig"]
