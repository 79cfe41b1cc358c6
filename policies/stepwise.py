"""AdaGen's step policy: it chooses every next sigma while sampling, from the current sample.

A one-shot policy (:mod:`policies.dirichlet`) decides the whole schedule before sampling; this
one is *step-wise* (:class:`policies.contract.StepwisePolicy`, so it has no schedule before
sampling; trained through :class:`policies.contract.TrainableSteps`): :meth:`StepPolicy.actor`
binds it to the prompt features of a batch and returns an :class:`~policies.actors.Actor` that
any step loop (the testbed, the ComfyUI back-end, the ``SAMPLER`` of the nodes) asks for the
next sigma.

At step ``l`` of ``L`` the actor reads the current sample ``x`` and the model's clean estimate
``denoised`` (an MLP for the testbed's vectors, a small conv net for latents ``[C, H, W]``,
run on every frame of a video ``[C, T, H, W]`` and averaged over frames),
the current flow time, the step index and the prompt features (the back-end's encoder, run
once per rollout), and draws a Gaussian action ``u ~ N(mu, std)`` (``std`` learned, starting at
0.6). The action is a residual on a *base* schedule ``b`` (the model's default schedule, or the
incoming SIGMAS in the node), smoothed by an EMA and bounded:

    r_l = ema * r_{l-1} + (1 - ema) * u_l
    p_l = sigmoid(logit(1 - b_{l+1} / b_l) + scale * r_l)      (clamped to [1e-3, 1 - 1e-3])
    t_{l+1} = t_l * (1 - p_l),   and t_L = 0

(with a base that ends above 0, e.g. the high part of split sigmas, the same holds for the
distances to that end ``e``: ``t_{l+1} - e = (t_l - e)(1 - p_l)``; the sampler ends at ``e``)

so the schedule is strictly decreasing, ends at 0 on the last step, and with ``r = 0`` (the
initial mean, or ``scale = 0``) it is exactly the base schedule. ``scale`` is the
fidelity-diversity knob at inference. A value head (same trunk) estimates the return from each
state, for PPO (:mod:`training.rl.algorithms.adagen`). Pure torch; no ComfyUI.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .actors import ActorStep, StepState
from .checks import check_sizes
from .contract import Features, kind_options, register_policy
from .encoders import build_encoder
from .latent_encoder import fold_frames
from .schedule import increments_to_schedule

MIN_FRACTION = 1e-3
"""Each step consumes at least this fraction of the remaining flow time, at most 1 minus it."""
SCALARS = 4
"""Scalar inputs per step: flow time, step / L, the base step's logit, the EMA carry."""


def _logit(p: Tensor) -> Tensor:
    p = p.clamp(MIN_FRACTION, 1 - MIN_FRACTION)
    return torch.log(p) - torch.log1p(-p)


@register_policy
class StepPolicy(nn.Module):
    """Step-wise schedule policy (kind ``adagen-step``); see the module docstring.

    Args:
        encoder: a :mod:`policies.encoders` module for the prompt features (``vector`` for the
            testbed, ``latent_text`` for image latents); its kind also decides how the current
            sample is read (MLP for vectors, conv net for latents).
        steps: the sampler budget ``L`` it was trained for (other lengths work through
            ``base``).
        hidden: width of the state net and the head.
        default_schedule: flow-time base schedule ``[L+1]`` from 1 to 0 (default uniform).
        ema: EMA weight on the previous residual (0: no smoothing).
        init_std: the Gaussian's initial standard deviation.
    """

    kind = "adagen-step"
    stepwise: ClassVar[bool] = True

    def __init__(self, encoder: nn.Module, steps: int, hidden: int = 128,
                 default_schedule: list[float] | None = None, ema: float = 0.3,
                 init_std: float = 0.6, conv_width: int = 32):
        super().__init__()
        check_sizes("StepPolicy", steps=steps, hidden=hidden, conv_width=conv_width)
        if not hasattr(encoder, "out_dim"):
            raise ValueError("StepPolicy needs an encoder from policies.encoders.")
        for name, value, low, high in (("ema", ema, 0.0, 0.99), ("init_std", init_std, 1e-3, 10)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not low <= value <= high:
                raise ValueError(f"StepPolicy: {name} must be a number in [{low}, {high}], got "
                                 f"{value!r}.")
        base = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64, device="cpu") \
            if default_schedule is None \
            else torch.tensor(default_schedule, dtype=torch.float64, device="cpu")
        if base.shape != (steps + 1,) or not torch.isfinite(base).all() or base[-1] != 0 \
                or not bool((base[:-1] > base[1:]).all()) or base[0] > 1:
            raise ValueError(f"StepPolicy: default_schedule must be {steps + 1} strictly "
                             "decreasing flow times in (0, 1], ending at 0.")
        self.encoder, self.steps, self.hidden = encoder, steps, hidden
        self.ema, self.init_std, self.conv_width = float(ema), float(init_std), conv_width
        self.register_buffer("default", base.float(), persistent=False)
        self.latent = getattr(encoder, "kind", None) != "vector"
        if self.latent:
            c, w = encoder.latent_channels, conv_width
            self.state_net: nn.Module = nn.Sequential(
                nn.Conv2d(2 * c, w, 3, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(w, w, 3, stride=2, padding=1), nn.SiLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w, hidden))
        else:
            self.state_net = nn.Sequential(nn.Linear(2 * encoder.noise_dim, hidden), nn.SiLU(),
                                           nn.Linear(hidden, hidden))
        self.trunk = nn.Sequential(nn.Linear(encoder.out_dim + hidden + SCALARS, hidden),
                                   nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.mu = nn.Linear(hidden, 1)
        nn.init.zeros_(self.mu.weight)  # starts on the base schedule
        nn.init.zeros_(self.mu.bias)
        self.value = nn.Linear(hidden, 1)
        self.log_std = nn.Parameter(torch.full((), math.log(init_std)))

    # -- the network ------------------------------------------------------------------------
    def context(self, features: Features) -> Tensor:
        """Prompt (and initial-noise) features ``[N, out_dim]``, computed once per rollout."""
        return self.encoder(**features)

    def heads(self, context: Tensor, x: Tensor, denoised: Tensor, scalars: Tensor
              ) -> tuple[Tensor, Tensor]:
        """Action mean and value ``([M], [M])`` of ``M`` states (``context [M, out_dim]``,
        samples ``[M, ...]``, ``scalars [M, 4]``)."""
        dtype = self.mu.weight.dtype
        sample = torch.cat([x, denoised], dim=1).to(dtype)
        state = self.state_net(fold_frames(sample))
        if sample.ndim == 5:  # a video: each frame read alone, the mean over frames
            state = state.reshape(sample.shape[0], sample.shape[2], -1).mean(1)
        h = self.trunk(torch.cat([context.to(dtype), state, scalars.to(dtype)], dim=-1))
        return self.mu(h)[:, 0], self.value(h)[:, 0]

    @property
    def std(self) -> Tensor:
        return self.log_std.exp()

    def evaluate_steps(self, features: Features, info: dict[str, Tensor]
                       ) -> tuple[Tensor, Tensor, Tensor]:
        """Log-probability, entropy and value ``[N, L]`` of the states and actions a rollout
        recorded (``info``: :attr:`Trajectory.info` of :meth:`actor`'s rollouts; ``features``
        of the same ``N`` rollouts). Differentiable (what PPO needs)."""
        x, den, scalars = info["x"], info["denoised"], info["scalars"]
        n, steps = scalars.shape[:2]
        ctx = self.context(features)
        ctx = ctx[:, None].expand(n, steps, ctx.shape[-1]).reshape(n * steps, -1)
        mu, value = self.heads(ctx, x.flatten(0, 1), den.flatten(0, 1),
                               scalars.flatten(0, 1))
        mu, value = mu.reshape(n, steps), value.reshape(n, steps)
        dist = torch.distributions.Normal(mu, self.std)
        logp = dist.log_prob(info["action"].to(mu))
        return logp, dist.entropy().expand_as(mu), value

    # -- the step-wise role -------------------------------------------------------------------
    def actor(self, features: Features, mode: str = "mean", base: Tensor | None = None,
              scale: float = 1.0, generator: torch.Generator | None = None) -> StepActor:
        """An :class:`~policies.actors.Actor` for the ``N`` contexts of ``features``.

        ``mode``: ``mean`` (deterministic) or ``sample`` (Gaussian actions, for training);
        ``base``: flow-time base schedules ``[L'+1]`` or ``[N, L'+1]`` (default: the policy's
        default schedule), whose length must be the rollout's; ``scale``: residual scale (the
        fidelity-diversity knob; 0 follows ``base``)."""
        if mode not in ("mean", "sample"):
            raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}.")
        if not math.isfinite(scale) or scale < 0:
            raise ValueError(f"The residual scale must be a finite number >= 0, got {scale}.")
        return StepActor(self, features, mode, base, scale, generator)

    def feature_dims(self) -> dict[str, list[int]]:
        return self.encoder.feature_dims()

    @torch.no_grad()
    def diagnostics(self, features: Features) -> dict[str, float]:
        return {"action_std": float(self.std)}

    # -- (de)serialisation ----------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"policy": self.kind, "steps": self.steps, "hidden": self.hidden,
                "default_schedule": [float(v) for v in self.default.double()],
                "ema": self.ema, "init_std": self.init_std, "conv_width": self.conv_width,
                "encoder": self.encoder.config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StepPolicy:
        cfg = kind_options(cls, config)
        return cls(build_encoder(cfg.pop("encoder")), **cfg)

    @classmethod
    def for_training(cls, encoder: nn.Module, steps: int, *, hidden: int,
                     init_segments: Tensor | None = None, **options: Any) -> StepPolicy:
        """A fresh policy whose base schedule is ``default_schedule`` (flow times) when given,
        else ``init_segments`` (the model's default schedule as segments) when given, else
        uniform; other options are ignored unless they are this class's (``ema``,
        ``init_std``)."""
        default = options.get("default_schedule")
        if default is None and init_segments is not None:
            seg = torch.as_tensor(init_segments, dtype=torch.float64).flatten()
            default = [float(v) for v in increments_to_schedule(seg / seg.sum())]
        own = {k: v for k, v in options.items() if k in ("ema", "init_std") and v is not None}
        return cls(encoder, steps, hidden=hidden, default_schedule=default, **own)


class StepActor:
    """A :class:`StepPolicy` bound to one batch (see :meth:`StepPolicy.actor`).

    Its :attr:`~policies.actors.ActorStep.info` per step: ``x``, ``denoised`` (the state),
    ``scalars [N, 4]``, ``action``, ``logp``, ``value`` and ``active`` (0 on the last step,
    which is forced to 0 and is no decision)."""

    def __init__(self, policy: StepPolicy, features: Features, mode: str,
                 base: Tensor | None, scale: float, generator: torch.Generator | None):
        self.policy, self.mode, self.scale, self.generator = policy, mode, scale, generator
        with torch.no_grad():
            self.ctx = policy.context(features)
        n = self.ctx.shape[0]
        base = policy.default if base is None else torch.as_tensor(base)
        base = base.detach().double().cpu()
        if base.ndim == 1:
            base = base.expand(n, -1)
        if base.ndim != 2 or base.shape[0] != n or base.shape[1] < 2:
            raise ValueError(f"The base schedules must be [L+1] or [{n}, L+1], got "
                             f"{tuple(base.shape)}.")
        self.base = base
        self.carry = torch.zeros(n, dtype=torch.float64)

    @property
    def steps(self) -> int:
        return self.base.shape[1] - 1

    def start(self, n: int) -> Tensor:
        """The first flow time of every item ``[n]``."""
        return self.base[:n, 0]

    def select(self, index: Tensor) -> StepActor:
        """The actor of rows ``index`` only (a step loop that samples a batch in chunks)."""
        sub = object.__new__(StepActor)
        sub.policy, sub.mode, sub.scale = self.policy, self.mode, self.scale
        sub.generator = self.generator
        sub.ctx, sub.base, sub.carry = self.ctx[index], self.base[index], self.carry[index]
        return sub

    @torch.no_grad()
    def next_sigma(self, state: StepState) -> ActorStep:
        if state.steps != self.steps:
            raise ValueError(f"This actor's base schedule has {self.steps} steps; the rollout "
                             f"has {state.steps}.")
        n, step = state.sigma.shape[0], state.step
        if n != self.ctx.shape[0]:
            raise ValueError(f"This actor was built for {self.ctx.shape[0]} items; the step "
                             f"loop has {n} (use select() for a part of the batch).")
        t = state.sigma.detach().double().cpu()
        # steps are fractions of the distance left to the base's end e (0 unless a sampler
        # stops early, e.g. the high part of split sigmas); the last step still returns 0
        end = self.base[:, -1]
        b_now, b_next = self.base[:, step] - end, self.base[:, step + 1] - end
        base_logit = _logit(1 - b_next / b_now.clamp_min(1e-12))
        frac = torch.full((n,), step / self.steps, dtype=torch.float64)
        scalars = torch.stack([t, frac, base_logit, self.carry], dim=-1)
        device = self.policy.mu.weight.device
        x = state.x.detach().to(device).float()
        den = state.denoised.detach().to(device).float()
        mu, value = self.policy.heads(self.ctx, x, den, scalars.to(device))
        std = self.policy.std
        if self.mode == "sample":
            noise = torch.randn(mu.shape, generator=self.generator, device=mu.device)
            action = mu + std * noise
        else:
            action = mu
        logp = torch.distributions.Normal(mu, std).log_prob(action)
        last = step == state.steps - 1
        if last:
            t_next = torch.zeros(n, dtype=torch.float64)
        else:
            r = self.policy.ema * self.carry + (1 - self.policy.ema) * action.double().cpu()
            self.carry = r
            p = torch.sigmoid(base_logit + self.scale * r).clamp(MIN_FRACTION, 1 - MIN_FRACTION)
            t_next = end + (t - end) * (1 - p)
        active = torch.full((n,), 0.0 if last else 1.0)
        info = {"x": x.cpu(), "denoised": den.cpu(), "scalars": scalars.float(),
                "action": action.float().cpu(), "logp": logp.float().cpu() * active,
                "value": value.float().cpu(), "active": active}
        return ActorStep(t_next.to(state.sigma), info)


__all__ = ["StepPolicy", "StepActor", "MIN_FRACTION"]
