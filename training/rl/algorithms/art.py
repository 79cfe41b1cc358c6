"""ART-RL: the clock speed learned by a continuous-time actor-critic (no reward model).

``../shared/REFERENCE.md`` section 2. On a uniform grid ``s_k = k dt`` (``dt = T / K``) each
trajectory starts at the context's noise (``psi = 0``, flow time 1); at every grid point the
back-end's flow field (:meth:`Backend.flow_rollout`) gives the velocity and the error signal
``|Q_k|`` (:mod:`training.rl.flow_error`: one JVP, or with ``error_signal=finite_difference``
one extra plain forward), the actor draws the speed
``theta_k ~ N(mu(s_k, psi_k, c), lam / max(|Q_k|, eps))`` and the Euler step moves
``psi += theta dt`` and ``x += theta F dt``. Then, with the temporal difference

    delta_k = V(s_{k+1}) - V(s_k) - gamma theta_k dt - |Q_k| theta_k^2 dt,
    V = NN(s, psi, c) + lam s   (V(T) = -rho/2 (psi(T) - T)^2, see below),

the paper's discretised updates, as Adam steps on their negated sums (batch mean):

    critic += a sum_k dNN(s_k)/dw delta_k        (semi-gradient: delta is held fixed)
    actor  += a sum_k dlog pi(theta_k)/dw delta_k
    gamma  += gamma_lr clip(psi(T) - T, -T, T).

Choices the paper leaves open (documented here): the actor and the critic read cheap context
features ``c`` (the encoded initial noise and prompt, :class:`policies.art.ARTClockPolicy`)
instead of the sample ``x``, so that the learned clock can be unrolled before sampling;
``|Q|`` is the root mean square of the error vector; the terminal value is the augmented
Lagrangian's ``-rho/2 (psi(T) - T)^2`` (``penalty``; 0 gives the paper's plain Lagrangian, whose
primal-dual iteration oscillated here between a racing and a stalled clock); gamma starts
at ``-2 E|Q|`` of the first batch (where the uniform clock is stationary on average, ignoring
the critic) and its step clips the violation at ``T`` (an exploring clock can overshoot far);
the actor's score is scaled by the policy variance (``natural_gradient``); ``batch``
contexts give one trajectory each per iteration (the paper: one); gradients are clipped at
``grad_clip`` like every method's. The critic, its optimiser, gamma and the running count of
model evaluations are the algorithm's own checkpoint state (``extra_state``), so a resumed
run equals an uninterrupted one.

Stabilisers (off by default; the README, section ART): as written, the updates above did not learn a
clock shape on the testbed (actor and multiplier oscillate; the critic's bootstrapped slope
dV/dpsi misleads the actor). ``trace`` replaces delta by the TD(trace) advantage (1: the Monte
Carlo return to go minus the critic), ``project`` replaces the dual step by its fast limit (the
actor's per-step signal minus its batch mean, normalised, pulled back by ``restore (psi(T) -
T)``), ``critic_warmup`` trains the critic alone first. With ``trace=1`` and ``project`` the
distilled clock beats uniform on held-out contexts (tested).

``solver=direct`` skips the RL: trajectories on the uniform clock measure the mean ``|Q|`` on
each cell of the clock, and the deployed clock is the exact minimiser of ART's objective for a
global clock (:func:`policies.art.equidistributed_schedule`), which ART-RL converges to in
theory. On the testbed it is ART's best clock within a CPU budget (bench/results/art.md: the
stabilised actor-critic reaches about a third of its gain at L = 8).

Deployment (:meth:`ART.deployable`): ``art.deploy=global`` distils the clock into one fixed
schedule (:func:`policies.art.distil_global_clock`, the paper); ``instance`` keeps the clock of
each context's features.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ....policies.art import (
    TIME_FEATURES,
    ARTClockPolicy,
    ARTGlobalClock,
    _mlp,
    distil_global_clock,
    equidistributed_schedule,
    time_features,
)
from ....policies.device import module_device
from ..backend import Backend, policy_features
from ..checkpoint import load_optimizer, optimizer_tensors
from ..distributed import Dist
from ..flow_error import FlowField, error_size, finite_difference_q, velocity_and_error
from .art_options import ARTConfig
from .base import Algorithm, Batch
from .registry import register_algorithm

DISTIL_SEED = 1_234_567
"""Seed of the training-pool contexts the global clock is distilled over (its own stream)."""


@dataclass(kw_only=True)
class ARTBatch(Batch):
    """One iteration's trajectories (what :meth:`ART.update` learns from)."""

    psi: Tensor
    """Clock values ``[B, K+1]`` (``psi_0 = 0``)."""
    q: Tensor
    """``|Q_k|`` ``[B, K]``."""
    theta: Tensor
    """Sampled speeds ``[B, K]``."""
    active: Tensor
    """1 where the flow had not arrived yet at step k (its error cost counts), else 0."""


class Critic(nn.Module):
    """``NN(s, psi, c)``: an MLP over the grid time, the clock and (optionally) its own
    encoding of the context features."""

    def __init__(self, encoder: nn.Module | None, width: int, layers: int, horizon: float):
        super().__init__()
        self.encoder = encoder
        self.horizon = horizon
        extra = encoder.out_dim if encoder is not None else 0
        self.net = _mlp(TIME_FEATURES + extra, width, layers)

    def forward(self, s: Tensor, psi: Tensor, features: dict[str, Tensor]) -> Tensor:
        inputs = [time_features(s.expand_as(psi), psi, self.horizon)]
        if self.encoder is not None:
            ctx = self.encoder(**features)[:, None, :]
            inputs.append(ctx.expand(*psi.shape, ctx.shape[-1]))
        return self.net(torch.cat(inputs, -1))[..., 0]


@register_algorithm
class ART(Algorithm):
    """Continuous-time actor-critic over the clock speed (see the module docstring)."""

    name = "art"
    method = "art"
    policy_kind = "art-clock"
    options_class = ARTConfig

    def __init__(self, config: Any):
        super().__init__(config)
        self.options: ARTConfig
        self.critic: Critic | None = None
        self.critic_opt: torch.optim.Optimizer | None = None
        self.gamma: float | None = None
        self.model_calls = 0
        self.model_jvps = 0
        self._distil_features: dict[str, Tensor] | None = None
        self.q_sum = torch.zeros(self.options.grid, dtype=torch.float64)
        self.q_count = 0
        self.updates = 0

    @property
    def critic_lr(self) -> float:
        o = self.options
        return o.lr if o.critic_lr is None else o.critic_lr

    # -- modules ------------------------------------------------------------------------
    policy_starts_at_default = False  # the clock starts uniform (ART's start)

    @property
    def policy_reads_features(self) -> bool:  # type: ignore[override]
        return self.options.features

    def policy_options(self, config: Any) -> dict[str, Any]:
        o = self.options
        return {"width": o.width, "layers": o.layers, "grid": o.grid, "horizon": o.horizon,
                "min_speed": o.min_speed}

    def build_optimizer(self, policy: nn.Module) -> torch.optim.Optimizer:
        """Adam at ``art.lr`` (the engine multiplies the scheduled rate by ``lr_scale``)."""
        return torch.optim.Adam([{"params": list(policy.parameters()),
                                  "lr_scale": self.options.lr / self.config.lr}],
                                lr=self.options.lr)

    def setup(self, policy: nn.Module, backend: Backend) -> None:
        o = self.options
        encoder = copy.deepcopy(policy.encoder) if policy.encoder is not None else None
        if encoder is not None:
            for p in encoder.parameters():  # its own encoder, freshly initialised
                if p.ndim > 1:
                    nn.init.normal_(p, std=1.0 / math.sqrt(p.shape[-1]))
        self.critic = Critic(encoder, o.width, o.layers, o.horizon).to(module_device(policy))
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=self.critic_lr)
        self.gamma = None

    def extra_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        assert self.critic is not None and self.critic_opt is not None
        tensors, groups = optimizer_tensors(self.critic_opt, "critic_opt")
        tensors.update({f"critic.{k}": v.detach().cpu() for k, v in
                        self.critic.state_dict().items()})
        tensors["q_sum"] = self.q_sum.clone()
        tensors["q_count"] = torch.tensor(self.q_count)
        tensors["gamma"] = torch.tensor(math.nan if self.gamma is None else self.gamma,
                                        dtype=torch.float64)
        return tensors, {"critic_opt_groups": groups, "model_calls": self.model_calls,
                         "model_jvps": self.model_jvps, "updates": self.updates}

    def load_extra_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        assert self.critic is not None and self.critic_opt is not None
        self.critic.load_state_dict({k[len("critic."):]: v for k, v in tensors.items()
                                     if k.startswith("critic.")})
        load_optimizer(self.critic_opt, tensors, "critic_opt", meta["critic_opt_groups"])
        self.q_sum = tensors["q_sum"].double().clone()
        self.q_count = int(tensors["q_count"])
        gamma = float(tensors["gamma"])
        self.gamma = None if math.isnan(gamma) else gamma
        self.model_calls = int(meta.get("model_calls", 0))
        self.model_jvps = int(meta.get("model_jvps", 0))
        self.updates = int(meta.get("updates", 0))

    def deployable(self, policy: nn.Module, backend: Backend) -> nn.Module:
        """``deploy=global``: the distilled clock over ``distill_contexts`` training-pool
        contexts (its own seeded stream); ``instance``: the trained clock itself."""
        if self.options.deploy == "instance":
            return policy
        if self.options.solver == "direct":
            q = self.q_sum / max(self.q_count, 1)
            flow = equidistributed_schedule(q, policy.steps) if self.q_count else None
            return ARTGlobalClock(policy.steps, None if flow is None else flow.float()).to(
                module_device(policy))
        if self._distil_features is None:
            gen = torch.Generator().manual_seed(DISTIL_SEED + self.config.seed)
            contexts = backend.draw_contexts(self.options.distill_contexts, gen)
            self._distil_features = policy_features(policy, backend, contexts)
        was_training = policy.training
        policy.eval()
        clock = distil_global_clock(policy, self._distil_features)
        policy.train(was_training)
        return clock.to(module_device(policy))

    # -- experience ----------------------------------------------------------------------
    @torch.no_grad()
    def collect(self, policy: ARTClockPolicy, backend: Backend, contexts: Any,
                dist: Dist) -> ARTBatch:
        if dist.distributed:
            raise ValueError("ART trains in one process (its trajectories are sequential); "
                             "launch it without data parallelism.")
        o = self.options
        features = policy_features(policy, backend, contexts)
        ctx = policy.context(features)
        dt = o.horizon / o.grid

        def trajectory(flow: FlowField, rows: Tensor) -> dict[str, Tensor]:
            x = flow.start
            b = x.shape[0]
            c = None if ctx is None else ctx[rows.to(ctx.device)]
            psi = torch.zeros(b, dtype=torch.float64)
            end = o.horizon * (1.0 - o.sigma_floor)  # psi where the flow has arrived
            psis, qs, thetas, active = [psi], [], [], []
            for k in range(o.grid):
                sigma = (1.0 - psi / o.horizon).clamp(o.sigma_floor, 1.0)
                if o.error_signal == "jvp":
                    v, q = velocity_and_error(flow, x, sigma.to(x.dtype), o.q_method)
                else:  # one extra plain forward, reusing v
                    v = flow(x, sigma.to(x.dtype))
                    q = finite_difference_q(flow, x, sigma.to(x.dtype), v, o.fd_step)
                q_size = error_size(q).double() / o.horizon ** 2
                if o.solver == "direct":  # the uniform clock: |Q| on every cell of psi
                    theta = torch.full((b,), 1.0, dtype=torch.float64)
                else:
                    mu = policy.mean_speed(torch.tensor(k * dt), psi, c).double()
                    std = torch.sqrt(o.lam / q_size.clamp_min(o.eps))
                    theta = mu + std * torch.randn(b, dtype=torch.float64)
                # dx/ds = theta F, F = dx/dpsi = -v / T; the state stops where the flow ends
                # (an exploring clock may overshoot: its x stays there, its cost stops and
                # only the constraint sees the overshoot)
                move = torch.minimum(theta * dt, (end - psi).clamp_min(0.0))
                x = x - (move / o.horizon).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1))) * v
                active.append((psi < end).double())
                psi = psi + theta * dt
                psis.append(psi)
                qs.append(q_size)
                thetas.append(theta)
            return {"psi": torch.stack(psis, 1), "q": torch.stack(qs, 1),
                    "theta": torch.stack(thetas, 1), "active": torch.stack(active, 1)}

        out = backend.flow_rollout(contexts, trajectory)
        if out is None:
            raise ValueError("ART needs a back-end with a differentiable flow field (the "
                             "testbed or a ComfyUI flow model).")
        b = out["psi"].shape[0]
        if o.error_signal == "jvp":
            self.model_calls += b * o.grid
            self.model_jvps += b * o.grid
        else:  # the velocity and the finite difference's forward: no JVP
            self.model_calls += 2 * b * o.grid
        return ARTBatch(features=features, mine=torch.arange(b), psi=out["psi"].float(),
                        q=out["q"].float(), theta=out["theta"].float(),
                        active=out["active"].float())

    # -- the update ----------------------------------------------------------------------
    def update(self, policy: ARTClockPolicy, optimizer: torch.optim.Optimizer,
               batch: Batch, dist: Dist) -> dict[str, float]:
        assert isinstance(batch, ARTBatch)
        assert self.critic is not None and self.critic_opt is not None
        o = self.options
        if o.solver == "direct":
            self.q_sum += batch.q.double().sum(0).cpu()
            self.q_count += batch.q.shape[0]
            return {"q_mean": float(batch.q.mean()),
                    "q_estimate_se": float(batch.q.double().std(0).mean()
                                           / math.sqrt(self.q_count)),
                    "model_calls": float(self.model_calls),
                    "model_jvps": float(self.model_jvps)}
        dt = o.horizon / o.grid
        b, k = batch.theta.shape
        device = module_device(policy)
        s = (torch.arange(k, dtype=torch.float32, device=device) * dt)[None, :].expand(b, k)
        psi, q, theta, active = (t.to(device) for t in (batch.psi[:, :-1], batch.q, batch.theta,
                                                        batch.active))
        # the critic at every grid point; V(T) = 0 (terminal)
        nn_value = self.critic(s, psi, batch.features)
        value = nn_value + o.lam * s
        if self.gamma is None:  # where the uniform clock is stationary on average
            self.gamma = -2.0 * float(q.mean()) * o.horizon
        with torch.no_grad():
            end = batch.psi[:, -1:].to(device) - o.horizon  # terminal: -rho/2 (psi(T)-T)^2
            following = torch.cat([value[:, 1:], -0.5 * o.penalty * end.pow(2)], 1)
            # the error cost of step k: |Q| at its start, or (trapezoid) the mean of its two
            # ends, so that a fast step cannot jump over a high-|Q| stretch for free
            q_cost = 0.5 * (q + torch.cat([q[:, 1:], q[:, -1:]], 1)) if o.trapezoid else q
            delta = (following - value - self.gamma * theta * dt
                     - active * q_cost * theta.pow(2) * dt)
            if o.trace > 0.0:  # TD(trace): A_k = sum_j trace^(j-k) delta_j (1: Monte Carlo)
                advantage = torch.zeros_like(delta)
                running = torch.zeros_like(delta[:, 0])
                for j in range(k - 1, -1, -1):
                    running = delta[:, j] + o.trace * running
                    advantage[:, j] = running
                delta = advantage
        var = o.lam / q.clamp_min(o.eps)
        mu = policy.mean_speed(s, psi, policy.context(batch.features)[:, None, :]
                               if policy.encoder is not None else None)
        logp = -0.5 * (theta - mu).pow(2) / var - 0.5 * torch.log(2 * math.pi * var)
        weight = var if o.natural_gradient else torch.ones_like(var)
        if o.project:  # the multiplier at its fast-time-scale limit: see ARTConfig.project
            signal = weight * (theta - mu.detach()) / var * delta
            n = active.sum().clamp_min(1.0)
            signal = signal - (signal * active).sum() / n
            signal = signal / ((signal.pow(2) * active).sum() / n).sqrt().clamp_min(1e-12)
            # a proportional pull back to psi(T) = T (per trajectory, no lag)
            signal = signal - o.restore * (batch.psi[:, -1:].to(device) - o.horizon)
            actor_loss = -(mu * signal * active).sum(1).mean()
        else:
            actor_loss = -(weight * logp * delta).sum(1).mean()
        critic_loss = -(nn_value * delta).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        (actor_loss + critic_loss).backward()
        clip = self.config.grad_clip
        actor_norm = float(nn.utils.clip_grad_norm_(policy.parameters(), clip))
        critic_norm = float(nn.utils.clip_grad_norm_(self.critic.parameters(), clip))
        scale = optimizer.param_groups[0]["lr"] / self.options.lr  # the engine's schedule
        for group in self.critic_opt.param_groups:
            group["lr"] = self.critic_lr * scale
        warm = self.updates < o.critic_warmup  # the critic learns the uniform clock's value
        self.updates += 1
        if not warm:
            optimizer.step()
        self.critic_opt.step()
        psi_end = batch.psi[:, -1].double()
        violation = float((psi_end - o.horizon).mean())
        if not warm:
            self.gamma += o.gamma_lr * max(-o.horizon, min(o.horizon, violation))
        return {"value_loss": float(delta.pow(2).sum(1).mean()), "gamma": self.gamma,
                "constraint_violation": violation,
                "abs_violation": float((psi_end - o.horizon).abs().mean()),
                "q_mean": float(q.mean()), "theta_mean": float(theta.mean()),
                "actor_grad_norm": actor_norm, "critic_grad_norm": critic_norm,
                "model_calls": float(self.model_calls), "model_jvps": float(self.model_jvps)}


__all__ = ["ART", "ARTBatch", "Critic"]
