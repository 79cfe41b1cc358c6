"""AdaGen: PPO over whole step-wise trajectories, with an adversarial reward.

The policy is a step-wise :class:`policies.stepwise.StepPolicy`. :meth:`AdaGen.collect` rolls
out ``K`` trajectories per context through ``backend.rollout`` (Gaussian actions); the reward of
a trajectory is

    R = adversarial * D(final) + task * trainer_reward

where ``D`` is a discriminator's logit (an estimate of ``log p_ref / p_policy`` of the final
sample given the prompt) trained in alternation with the policy to tell the policy's final
samples from *reference samples* (``Backend.reference_samples``: the testbed's true mixture
samples; a ComfyUI model's own many-step samples of the same prompts). A reward model alone is
easily hacked (e.g. the testbed's likelihood reward collapses samples onto the modes); the
adversarial reward keeps the samples' distribution close to the reference.

:meth:`AdaGen.update`: advantages ``R - V(s_l)`` at every decision (terminal reward, no
discount), normalised over the batch; ``epochs`` of the clipped-ratio loss plus ``value_coef``
times the value error minus ``entropy_coef`` times the entropy; then ``disc_steps`` updates of
the discriminator (binary cross-entropy). The discriminator and its optimiser are saved in
every checkpoint (:meth:`extra_state`). One process only (no data-parallel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ....policies.contract import Features
from ....policies.device import module_device
from ....policies.fields import check_values, option
from ....policies.latent_encoder import fold_frames
from ..backend import Backend, policy_features
from ..checkpoint import load_optimizer, optimizer_tensors
from ..config import TrainConfig
from ..distributed import Dist
from ..losses import clipped_surrogate
from .base import Algorithm, Batch, RolloutBatch
from .registry import register_algorithm

LOGIT_CLIP = 10.0
"""Discriminator rewards are clipped to ``[-LOGIT_CLIP, LOGIT_CLIP]``."""


@dataclass
class AdaGenConfig:
    """AdaGen: PPO over whole step-wise trajectories with an adversarial reward."""

    epochs: int = option(4, ge=1, le=100_000)
    """PPO epochs over each batch of trajectories."""
    clip: float = option(0.2, gt=0, lt=1)
    """Ratio clip range."""
    value_coef: float = option(0.5, ge=0)
    """Weight of the value head's squared error."""
    entropy_coef: float = option(0.01, ge=0)
    """Weight of the Gaussian's entropy bonus."""
    init_std: float = option(0.6, ge=1e-3, le=10)
    """Initial standard deviation of the Gaussian actions."""
    ema: float = option(0.3, ge=0, le=0.99)
    """EMA weight on the previous step's residual (schedule smoothing)."""
    adversarial: float = option(1.0, ge=0)
    """Weight of the discriminator's reward (its logit: log p_ref / p_policy); 0: none."""
    task: float = option(0.0, ge=0)
    """Weight of the trainer's reward (``reward``) in the mix; 0: adversarial only."""
    reference: str = option("default", choices=("default", "digits"))
    """What the discriminator compares with: ``default`` (testbed: true mixture samples;
    ComfyUI: the model's own reference_steps-step samples of the same prompts) or ``digits``
    (the digits model: real digits of the prompted class)."""
    disc_lr: float = option(1e-3, gt=0, le=10)
    """Discriminator learning rate (Adam)."""
    disc_steps: int = option(2, ge=1, le=100_000)
    """Discriminator updates per policy update (the two alternate)."""
    disc_hidden: int = option(128, ge=1, le=100_000)
    """Discriminator width."""
    base: str = option("")
    """The policy's base schedule (its residual starts there): empty for
    ``policy.init_schedule``'s (the model's default, or uniform), else ``L+1`` comma-separated
    flow times from 1 down to 0 (for SD3 / Flux these are the model's sigmas), e.g. a fitted
    best global schedule. In ComfyUI the Learned Sampler's base is its incoming SIGMAS: give
    it the same schedule."""
    critic_warmup: int = option(0, ge=0, le=100_000)
    """Iterations at the start in which only the value head (and the discriminator) learns;
    the actor's mean and spread stay where they start."""

    def check(self, prefix: str) -> None:
        """Types, ranges and choices of the section's own fields."""
        check_values(self, prefix)

    def validate(self, config: TrainConfig) -> None:
        """Raise ``ValueError`` for options the run cannot use."""
        if self.adversarial == 0 and self.task == 0:
            raise ValueError("adagen needs a reward: adagen.adversarial or adagen.task must be "
                             "> 0.")
        self.base_schedule(config.steps)

    def base_schedule(self, steps: int) -> list[float] | None:
        """:attr:`base` as ``steps + 1`` flow times (None when empty); ``ValueError`` unless
        they fall strictly from at most 1 to 0."""
        if not self.base.strip():
            return None
        try:
            values = [float(v) for v in self.base.split(",")]
        except ValueError:
            raise ValueError(f"adagen.base must be comma-separated numbers, got "
                             f"{self.base!r}.") from None
        if len(values) != steps + 1 or values[-1] != 0 or not 0 < values[0] <= 1 \
                or any(a <= b for a, b in zip(values[:-1], values[1:], strict=True)):
            raise ValueError(f"adagen.base must be {steps + 1} flow times falling strictly "
                             f"from at most 1 to 0 (steps = {steps}), got {self.base!r}.")
        return values


def condition_vector(features: Features) -> Tensor:
    """One prompt vector per context ``[N, e]``: the testbed's ``cond``, else the pooled text
    embedding, else the mean text token."""
    for key in ("cond", "pooled"):
        if key in features:
            return features[key].float()
    return features["tokens"].float().mean(1)


class Discriminator(nn.Module):
    """Tells final samples ``[N, ...]`` (vectors, latents ``[C, H, W]`` or videos
    ``[C, T, H, W]``, whose frames the conv body reads one by one, its features averaged over
    frames) from reference samples, given the prompt vector; returns logits ``[N]`` (high:
    looks like a reference sample)."""

    def __init__(self, sample_shape: tuple[int, ...], cond_dim: int, hidden: int = 128):
        super().__init__()
        self.sample_shape, self.cond_dim, self.hidden = tuple(sample_shape), cond_dim, hidden
        if len(self.sample_shape) == 1:
            self.body: nn.Module = nn.Sequential(nn.Linear(self.sample_shape[0], hidden),
                                                 nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        else:
            c, w = self.sample_shape[0], min(hidden, 64)
            self.body = nn.Sequential(nn.Conv2d(c, w, 3, padding=1), nn.SiLU(),
                                      nn.Conv2d(w, w, 3, stride=2, padding=1), nn.SiLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                      nn.Linear(4 * w, hidden), nn.SiLU())
        self.cond = nn.Linear(cond_dim, hidden)
        self.out = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, samples: Tensor, cond: Tensor) -> Tensor:
        h = self.body(fold_frames(samples.float()))
        if samples.ndim == 5:  # a video: the mean over frames of each frame's features
            h = h.reshape(samples.shape[0], samples.shape[2], -1).mean(1)
        h = h * (1 + self.cond(cond.float()))
        return self.out(h)[:, 0]


@dataclass(kw_only=True)
class TrajectoryBatch(RolloutBatch):
    """One iteration's trajectories (``N = B * K`` rollouts, context-major): a
    :class:`.base.RolloutBatch` whose actions and log-probabilities are per step
    ``[N, L]``, plus what the step-wise update and the discriminator need."""

    info: dict[str, Tensor] = field(default_factory=dict)
    """The actor's per-step records ``[N, L, ...]``."""
    final: Tensor | None = None
    """Final samples ``[N, ...]``."""
    reference: Tensor | None = None
    """Reference samples for the same contexts ``[N, ...]``."""
    cond: Tensor | None = None
    """Prompt vectors ``[N, e]`` (the discriminator's condition)."""


def _repeat(features: Features, k: int) -> Features:
    return {name: v.repeat_interleave(k, dim=0) for name, v in features.items()}


@register_algorithm
class AdaGen(Algorithm):
    """PPO on :class:`policies.stepwise.StepPolicy` with a discriminator reward."""

    name = "adagen"
    method = "adagen"
    policy_kind = "adagen-step"
    options_class = AdaGenConfig

    def __init__(self, config: TrainConfig):
        super().__init__(config)
        self.discriminator: Discriminator | None = None
        self.disc_opt: torch.optim.Optimizer | None = None

    def policy_options(self, config: TrainConfig) -> dict[str, Any]:
        """The step policy's residual smoothing, initial spread and base schedule."""
        return {"ema": self.options.ema, "init_std": self.options.init_std,
                "default_schedule": self.options.base_schedule(config.steps)}

    def setup(self, policy: nn.Module, backend: Backend) -> None:
        """Build the discriminator from a probe of the back-end's features (its own seeded
        initialisation, so the policy's stream is untouched)."""
        if self.options.adversarial > 0 and not backend.has_reference_samples():
            raise ValueError(f"The {type(backend).__name__} back-end has no reference samples, "
                             "so the adversarial reward is unavailable; set "
                             "adagen.adversarial to 0 and adagen.task > 0.")
        with torch.random.fork_rng(devices=[]):
            probe = backend.features(backend.held_out_contexts(1, self.config.eval_seed))
            shape = tuple(probe["noise"].shape[1:])
            cond_dim = int(condition_vector(probe).shape[-1])
            torch.manual_seed(self.config.seed + 1)
            self.discriminator = Discriminator(shape, cond_dim, self.options.disc_hidden)
        self.discriminator.to(module_device(policy))
        self.disc_opt = torch.optim.Adam(self.discriminator.parameters(), lr=self.options.disc_lr,
                                         betas=(0.5, 0.999))

    # -- experience -------------------------------------------------------------------------
    @torch.no_grad()
    def collect(self, policy: Any, backend: Backend, contexts: Any,
                dist: Dist) -> TrajectoryBatch:
        if dist.distributed:
            raise ValueError("adagen trains in one process (no data-parallel launch).")
        k = self.config.rollouts
        features = _repeat(policy_features(policy, backend, contexts), k)
        flat = contexts.repeat(k)
        actor = policy.actor(features, mode="sample")
        traj = backend.rollout(flat, actor, self.config.steps)
        task = traj.reward.float() if traj.reward is not None else torch.zeros(len(flat))
        cond = condition_vector(features)
        reference = adv = None
        if self.discriminator is not None and self.options.adversarial > 0:
            reference = backend.reference_samples(flat, self.options.reference)
            adv = self.discriminator(traj.final.to(cond.device), cond).clamp(
                -LOGIT_CLIP, LOGIT_CLIP).cpu()
        total = self.options.task * task
        if adv is not None:
            total = total + self.options.adversarial * adv
        b = len(contexts)
        stats = {"task_reward": float(task.mean()), **policy.diagnostics(features)}
        if adv is not None:
            stats["adv_reward"] = float(adv.mean())
        return TrajectoryBatch(
            features=features, actions=traj.info["action"], logp=traj.info["logp"],
            schedules=traj.sigmas.reshape(b, k, -1), rewards=total.reshape(b, k),
            mine=torch.arange(b), share=1.0, stats=stats, info=traj.info, final=traj.final,
            reference=reference, cond=cond)

    # -- updates ----------------------------------------------------------------------------
    def update(self, policy: Any, optimizer: torch.optim.Optimizer, batch: Batch,
               dist: Dist) -> dict[str, float]:
        assert isinstance(batch, TrajectoryBatch)
        opts = self.options
        device = module_device(policy)
        info = {key: v.to(device) for key, v in batch.info.items()}
        active = info["active"]
        count = active.sum().clamp_min(1)
        returns = batch.rewards.reshape(-1).to(device)
        adv = (returns[:, None] - info["value"]) * active
        mean = adv.sum() / count
        std = (((adv - mean) * active).pow(2).sum() / count).sqrt()
        adv = (adv - mean) / (std + 1e-8) * active
        old_logp = info["logp"]
        grad_norm, logged = 0.0, {}
        critic_only = self.iteration is not None and self.iteration <= opts.critic_warmup
        for _ in range(opts.epochs):
            optimizer.zero_grad(set_to_none=True)
            logp, entropy, value = policy.evaluate_steps(batch.features, info)
            surrogate = clipped_surrogate((logp - old_logp) * active, adv, opts.clip, active,
                                          count)
            pg = surrogate.loss
            value_loss = (value - returns[:, None]).pow(2).mean()
            ent = (entropy * active).sum() / count
            loss = opts.value_coef * value_loss if critic_only \
                else pg + opts.value_coef * value_loss - opts.entropy_coef * ent
            grad_norm = self.gradient_step(policy, optimizer, loss, 1.0, dist)
            with torch.no_grad():
                logged = {"policy_loss": float(pg), "value_loss": float(value_loss),
                          "entropy": float(ent), "approx_kl": float(surrogate.approx_kl),
                          "clip_frac": float(surrogate.clip_frac)}
        disc = self.update_discriminator(batch)
        rewards = batch.rewards
        return {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
                "grad_norm": grad_norm, **logged, **disc, **batch.stats}

    def update_discriminator(self, batch: TrajectoryBatch) -> dict[str, float]:
        """``disc_steps`` binary cross-entropy steps: reference samples 1, the policy's 0."""
        if self.discriminator is None or batch.reference is None or batch.final is None:
            return {}
        assert self.disc_opt is not None and batch.cond is not None
        device = batch.cond.device
        # clones: a back-end's samples may be inference-mode tensors (ComfyUI)
        real, fake = batch.reference.to(device).clone(), batch.final.to(device).clone()
        bce = nn.functional.binary_cross_entropy_with_logits
        loss = acc = torch.zeros(())
        for _ in range(self.options.disc_steps):
            self.disc_opt.zero_grad(set_to_none=True)
            lr, lf = self.discriminator(real, batch.cond), self.discriminator(fake, batch.cond)
            loss = bce(lr, torch.ones_like(lr)) + bce(lf, torch.zeros_like(lf))
            loss.backward()
            self.disc_opt.step()
            acc = ((lr > 0).float().mean() + (lf < 0).float().mean()) / 2
        return {"disc_loss": float(loss.detach()), "disc_acc": float(acc)}

    # -- checkpoints ------------------------------------------------------------------------
    def extra_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        if self.discriminator is None or self.disc_opt is None:
            return {}, {}
        tensors, groups = optimizer_tensors(self.disc_opt, "disc_opt")
        tensors.update({f"disc.{k}": v.detach().cpu().contiguous()
                        for k, v in self.discriminator.state_dict().items()})
        return tensors, {"disc_opt_groups": groups, "disc": self.discriminator_config()}

    def load_extra_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        if self.discriminator is None or self.disc_opt is None:
            return
        if "disc_opt_groups" not in meta:
            raise ValueError("This checkpoint holds no AdaGen discriminator; it was not written "
                             "by an adagen run with the adversarial reward.")
        self.discriminator.load_state_dict({k[len("disc."):]: v for k, v in tensors.items()
                                            if k.startswith("disc.")})
        load_optimizer(self.disc_opt, tensors, "disc_opt", meta["disc_opt_groups"])

    def discriminator_config(self) -> dict[str, Any]:
        assert self.discriminator is not None
        d = self.discriminator
        return {"sample_shape": list(d.sample_shape), "cond_dim": d.cond_dim,
                "hidden": d.hidden}


def load_discriminator(checkpoint: str | Path) -> Discriminator:
    """The discriminator of an adagen checkpoint (``checkpoints/state_*.safetensors``), for
    best-of-N selection at inference (:func:`best_of_n`)."""
    from ..checkpoint import read_checkpoint

    tensors, meta = read_checkpoint(Path(checkpoint))
    extra = meta.get("algorithm") or {}
    cfg = extra.get("disc") if isinstance(extra, dict) else None
    if cfg is None:
        raise ValueError(f"{Path(checkpoint).name} holds no AdaGen discriminator.")
    disc = Discriminator(tuple(cfg["sample_shape"]), cfg["cond_dim"], cfg["hidden"])
    disc.load_state_dict({k[len("algo.disc."):]: v for k, v in tensors.items()
                          if k.startswith("algo.disc.")})
    return disc.eval()


@torch.no_grad()
def best_of_n(policy: Any, discriminator: Discriminator, backend: Backend, contexts: Any,
              n: int, scale: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Inference-time refinement: ``n`` sampled rollouts per context, keep the one the
    discriminator finds most reference-like. Returns ``(final [B, ...], sigmas [B, L+1],
    reward [B])`` of the chosen rollouts."""
    if n < 1:
        raise ValueError(f"best_of_n needs n >= 1, got {n}.")
    features = _repeat(policy_features(policy, backend, contexts), n)
    traj = backend.rollout(contexts.repeat(n), policy.actor(features, mode="sample", scale=scale),
                           policy.steps)
    score = discriminator(traj.final, condition_vector(features)).reshape(len(contexts), n)
    pick = torch.arange(len(contexts)) * n + score.argmax(1)
    reward = traj.reward[pick] if traj.reward is not None else score.max(1).values
    return traj.final[pick], traj.sigmas[pick], reward


__all__ = ["AdaGen", "AdaGenConfig", "Discriminator", "TrajectoryBatch", "best_of_n",
           "load_discriminator", "condition_vector"]
