"""Prototypes for the learning-quality study (issue 11): policy parameterisations, look-ahead
features and a self-contained training loop on the analytic testbed.

Nothing here is imported by the package; the lead ports what works into ``policies/dirichlet.py``
and the algorithm package. The loop mirrors ``training/rl/engine.py``'s REINFORCE / PPO update
(AdamW, weight decay 1e-4, clip 1.0, cosine lr to 0.1x, mean-mode evaluation) so that the
``alpha`` parameterisation with ``rloo`` reproduces the engine, and adds:

* ``param="meanconc"``: :class:`MeanConcentrationPolicy`, a mean head (softmax over segments)
  and a separate total concentration ``kappa`` that is either scheduled (geometric from
  ``kappa0`` to ``kappa1`` over the run, not learned) or learned inside ``[kappa_min,
  kappa_max]``;
* per-iteration diagnostics: the spread across contexts of the mean schedule, the
  concentration, the JS weight and its variance components;
* grouped batches (``group_size`` seeds per prompt) for the grouped James-Stein baselines;
* ``look``: extra policy features from one look at the model (:class:`LookBackend`);
* ``algo="pathwise"``: the same policy trained by backpropagation through the exact sampler
  (the testbed is differentiable), i.e. what this policy class and data budget can reach at
  best: the ceiling for any policy-gradient method.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from learned_schedules.policies.dirichlet import ALPHA_FLOOR, DirichletPolicy, to_schedule
from learned_schedules.policies.encoders import VectorEncoder
from learned_schedules.training.rl.baselines import compute_baseline
from learned_schedules.training.testbed.backend import TestbedBackend
from learned_schedules.training.testbed.comparators import comparator_schedules
from learned_schedules.training.testbed.mixture import DTYPE, Contexts, Testbed

EVAL_SEED = 10_000
CACHE = Path(__file__).resolve().parents[1] / "results" / "quality_cache"


class MeanConcentrationPolicy(DirichletPolicy):
    """Dirichlet policy with separate mean and concentration: ``alpha = kappa * softmax(h)``.

    The head's ``L + 1`` outputs are the mean's logits (zero at initialisation: the uniform
    split); ``kappa`` is a buffer set by the trainer (``kappa_mode="schedule"``) or a single
    learned scalar bounded to ``[kappa_min, kappa_max]`` (``kappa_mode="learned"``,
    ``kappa = kappa_min (kappa_max / kappa_min)^sigmoid(u)``). The mean's logits then carry the
    context dependence at any concentration, instead of competing with it for the scale of one
    softplus output.
    """

    kind = "dirichlet_meanconc"

    def __init__(self, encoder: nn.Module, steps: int, head_hidden: int = 128,
                 kappa: float = 40.0, kappa_mode: str = "schedule", kappa_min: float = 10.0,
                 kappa_max: float = 1000.0, **kw: Any):
        super().__init__(encoder, steps, head_hidden=head_hidden, init_concentration=kappa,
                         **kw)
        with torch.no_grad():
            self.head[2].bias.zero_()
        if kappa_mode not in ("schedule", "learned"):
            raise ValueError(f"kappa_mode must be 'schedule' or 'learned', got {kappa_mode!r}.")
        self.kappa_mode = kappa_mode
        self.kappa_min, self.kappa_max = float(kappa_min), float(kappa_max)
        self.register_buffer("kappa_value", torch.tensor(float(kappa)))
        if kappa_mode == "learned":
            frac = math.log(kappa / kappa_min) / math.log(kappa_max / kappa_min)
            frac = min(max(frac, 1e-3), 1 - 1e-3)
            self.kappa_logit = nn.Parameter(torch.tensor(math.log(frac / (1 - frac))))

    def kappa(self) -> torch.Tensor:
        if self.kappa_mode == "learned":
            span = math.log(self.kappa_max / self.kappa_min)
            return self.kappa_min * torch.exp(span * torch.sigmoid(self.kappa_logit))
        return self.kappa_value

    def set_kappa(self, value: float) -> None:
        self.kappa_value.fill_(float(value))

    @torch.no_grad()
    def init_mean(self, segments: torch.Tensor) -> None:
        seg = torch.as_tensor(segments, dtype=self.head[2].bias.dtype).flatten()
        self.head[2].bias.copy_(torch.log(seg / seg.sum()))

    def mean_segments(self, **features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.encoder(**features)), -1)

    def alpha(self, **features: torch.Tensor) -> torch.Tensor:
        return self.kappa() * self.mean_segments(**features) + ALPHA_FLOOR


LOOKS = ("none", "x0_t1", "x0_look")


class LookBackend(TestbedBackend):
    """Testbed back-end whose features add one look at the model.

    * ``x0_t1``: the denoiser's x0 prediction at the first step (t = 1), which a SAMPLER gets
      for free. On a flow ``x_t = (1 - t) x0 + t eps`` it is ``E[x0 | x_1] = sum_m w_m mu_m``:
      the class mean, independent of the noise, so it can add nothing the prompt embedding
      does not carry (measured here to confirm).
    * ``x0_look``: one Euler step of the uniform schedule from t = 1 to ``look_t`` (the first
      step's model call, free in a SAMPLER), then the x0 prediction at ``look_t``: one more
      model call. It tells the policy where this noise is heading.
    """

    def __init__(self, testbed: Testbed, look: str = "none", look_t: float = 0.8, **kw: Any):
        super().__init__(testbed, **kw)
        if look not in LOOKS:
            raise ValueError(f"look must be one of {LOOKS}, got {look!r}.")
        self.look, self.look_t = look, look_t

    def look_features(self, contexts: Contexts) -> torch.Tensor:
        tb = self.testbed
        x, c = contexts.noise.to(DTYPE), contexts.classes
        one = torch.ones(x.shape[0], dtype=DTYPE)
        v1 = tb.velocity(x, one, c)
        if self.look == "x0_t1":
            return x - v1
        t = self.look_t
        xt = x + (t - 1.0) * v1
        return xt - t * tb.velocity(xt, one * t, c)

    def features(self, contexts: Contexts) -> dict[str, torch.Tensor]:
        f = super().features(contexts)
        if self.look != "none":
            f["noise"] = torch.cat([f["noise"], self.look_features(contexts).to(self.dtype)], -1)
        return f

    def build_encoder(self, hidden: int, depth: int) -> nn.Module:
        extra = 0 if self.look == "none" else self.testbed.dim
        return VectorEncoder(self.testbed.dim + extra, self.testbed.cond_dim, hidden=hidden,
                             depth=depth)


@dataclass
class Exp:
    """One training run of the study."""

    config: str | None = None
    steps: int = 5
    iterations: int = 2000
    batch: int = 16
    rollouts: int = 2
    lr: float = 3e-3
    lr_min_frac: float = 0.1
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    algo: str = "reinforce"  # reinforce | ppo | pathwise
    baseline: str = "rloo"
    group_size: int = 0  # seeds per prompt in a batch (0: independent contexts)
    param: str = "alpha"  # alpha | meanconc
    kappa0: float = 40.0  # initial concentration (both parameterisations)
    kappa1: float | None = None  # meanconc schedule: final kappa (None: constant kappa0)
    kappa_mode: str = "schedule"
    kappa_min: float = 10.0
    kappa_max: float = 1000.0
    normalize_adv: bool = False
    entropy_coef: float = 0.0
    ppo_epochs: int = 4
    ppo_clip: float = 0.2
    look: str = "none"
    look_t: float = 0.8
    init_best_global: bool = False  # start the mean at the fitted best global schedule
    hidden: int = 128
    depth: int = 2
    seed: int = 0
    eval_every: int = 100
    eval_contexts: int = 256
    diag_every: int = 20
    final_contexts: int = 512


def make_backend(exp: Exp) -> LookBackend:
    tb = Testbed.from_json(exp.config) if exp.config else Testbed.default()
    return LookBackend(tb, look=exp.look, look_t=exp.look_t, pool_size=16384,
                       pool_seed=exp.seed + 7_919)


def build_policy(exp: Exp, backend: LookBackend) -> DirichletPolicy:
    enc = backend.build_encoder(exp.hidden, exp.depth)
    if exp.param == "alpha":
        return DirichletPolicy(enc, exp.steps, head_hidden=exp.hidden,
                               init_concentration=exp.kappa0)
    if exp.param == "meanconc":
        return MeanConcentrationPolicy(enc, exp.steps, head_hidden=exp.hidden, kappa=exp.kappa0,
                                       kappa_mode=exp.kappa_mode, kappa_min=exp.kappa_min,
                                       kappa_max=exp.kappa_max)
    raise ValueError(f"unknown param {exp.param!r}")


def draw_batch(exp: Exp, backend: LookBackend, by_class: list[torch.Tensor],
               gen: torch.Generator) -> tuple[Contexts, torch.Tensor | None]:
    """B contexts: independent, or ``B / group_size`` distinct prompts x ``group_size`` seeds."""
    if not exp.group_size:
        return backend.draw_contexts(exp.batch, gen), None
    s = exp.group_size
    p = exp.batch // s
    classes = torch.randperm(len(by_class), generator=gen)[:p]
    idx = []
    for c in classes.tolist():
        pool = by_class[c]
        idx.append(pool[torch.randint(len(pool), (s,), generator=gen)])
    index = torch.cat(idx)
    return backend.pool.select(index), torch.arange(p).repeat_interleave(s)


def schedule_spread(sched: torch.Tensor) -> float:
    """Mean over interior timesteps of the std across contexts of the schedules ``[N, L+1]``."""
    if sched.shape[1] <= 2:
        return 0.0
    return float(sched[:, 1:-1].std(0).mean())


@torch.no_grad()
def mean_schedules(policy: DirichletPolicy, backend: LookBackend, ctx: Contexts) -> torch.Tensor:
    return policy.schedule(mode="mean", **backend.features(ctx))


@torch.no_grad()
def eval_rewards(policy: DirichletPolicy, backend: LookBackend, ctx: Contexts) -> torch.Tensor:
    sched = mean_schedules(policy, backend, ctx)
    return backend.testbed.sample_and_score(ctx, sched.double())


def lr_at(exp: Exp, it: int) -> float:
    progress = (it - 1) / max(1, exp.iterations - 1)
    return exp.lr * (exp.lr_min_frac + (1 - exp.lr_min_frac) * 0.5
                     * (1 + math.cos(math.pi * progress)))


def run(exp: Exp) -> dict[str, Any]:
    """Train one policy; returns the final held-out rewards, learning curve and diagnostics."""
    torch.set_num_threads(1)
    torch.manual_seed(exp.seed)
    backend = make_backend(exp)
    policy = build_policy(exp, backend)
    if exp.init_best_global:
        from learned_schedules.policies.schedule import schedule_to_increments

        bg = torch.tensor(comparators(exp.config, exp.steps)["best_global_schedule"])
        policy.init_mean(schedule_to_increments(bg.to(DTYPE)).float())
    opt = torch.optim.AdamW(policy.parameters(), lr=exp.lr, weight_decay=exp.weight_decay)
    gen = torch.Generator().manual_seed(exp.seed)
    by_class = [torch.nonzero(backend.pool.classes == c).flatten()
                for c in range(backend.testbed.num_classes)] if exp.group_size else []
    eval_ctx = backend.held_out_contexts(exp.eval_contexts, EVAL_SEED)
    diag_ctx = eval_ctx.select(torch.arange(min(64, len(eval_ctx))))
    curve: list[tuple[int, float]] = []
    diag: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for it in range(1, exp.iterations + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(exp, it)
        if isinstance(policy, MeanConcentrationPolicy) and policy.kappa_mode == "schedule":
            k1 = exp.kappa1 or exp.kappa0
            policy.set_kappa(exp.kappa0 * (k1 / exp.kappa0) ** ((it - 1)
                                                                / max(1, exp.iterations - 1)))
        ctx, groups = draw_batch(exp, backend, by_class, gen)
        feats = backend.features(ctx)
        row: dict[str, float] = {}
        if exp.algo == "pathwise":
            sched = policy.schedule(mode="mean", **feats)
            r = backend.testbed.sample_and_score(ctx, sched.double(), ctx.target)
            loss = -r.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = float(nn.utils.clip_grad_norm_(policy.parameters(), exp.grad_clip))
            opt.step()
            row.update(reward=float(r.detach().mean()), grad_norm=gn)
        else:
            with torch.no_grad():
                alpha = policy.alpha(**feats)
                tau = torch.distributions.Dirichlet(alpha).sample((exp.rollouts,))
                schedules = to_schedule(tau, policy.min_segment).transpose(0, 1)
            rewards = backend.rewards(ctx, schedules).double()
            base = compute_baseline(rewards, exp.baseline, groups=groups)
            adv = (rewards - base.baseline)
            if exp.normalize_adv:
                adv = adv / (rewards.std() + 1e-8)
            adv = adv.float()
            old_logp = None
            epochs = exp.ppo_epochs if exp.algo == "ppo" else 1
            if exp.algo == "ppo":
                with torch.no_grad():
                    old_logp = policy.distribution(**feats).log_prob(tau.clamp_min(1e-12)).T
            for _ in range(epochs):
                dist = policy.distribution(**feats)
                logp = dist.log_prob(tau.clamp_min(1e-12)).T
                if old_logp is None:
                    loss = -(adv * logp).mean()
                else:
                    ratio = torch.exp(logp - old_logp)
                    clipped = ratio.clamp(1 - exp.ppo_clip, 1 + exp.ppo_clip)
                    loss = -torch.minimum(ratio * adv, clipped * adv).mean()
                if exp.entropy_coef:
                    loss = loss - exp.entropy_coef * dist.entropy().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                gn = float(nn.utils.clip_grad_norm_(policy.parameters(), exp.grad_clip))
                opt.step()
            row.update(reward=float(rewards.mean()), grad_norm=gn,
                       concentration=float(alpha.sum(-1).mean()),
                       js_weight=float(base.js_weight),
                       s2=float(base.s2) if base.s2 is not None else float("nan"),
                       d2=float(base.d2) if base.d2 is not None else float("nan"))
        if it % exp.diag_every == 0 or it == 1:
            with torch.no_grad():
                sched = mean_schedules(policy, backend, diag_ctx)
                row["spread"] = schedule_spread(sched)
                row["diag_concentration"] = float(policy.alpha(
                    **backend.features(diag_ctx)).sum(-1).mean())
            diag.append({"iteration": it, **row})
        if it % exp.eval_every == 0 or it == exp.iterations:
            curve.append((it, float(eval_rewards(policy, backend, eval_ctx).mean())))
    seconds = time.perf_counter() - t0
    final_ctx = backend.held_out_contexts(exp.final_contexts, EVAL_SEED)
    final = eval_rewards(policy, backend, final_ctx)
    spread = schedule_spread(mean_schedules(policy, backend, final_ctx))
    return {"exp": asdict(exp), "rewards": final.tolist(), "mean": float(final.mean()),
            "spread": spread, "curve": curve, "diag": diag, "seconds": seconds}


def comparators(config: str | None, steps: int, n: int = 512) -> dict[str, list[float]]:
    """Per-context held-out rewards of best_global and the multi-start oracle (cached)."""
    name = Path(config).stem if config else "default_testbed"
    path = CACHE / f"comparators_{name}_L{steps}_n{n}.json"
    if path.exists():
        return json.loads(path.read_text())
    torch.set_num_threads(1)
    tb = Testbed.from_json(config) if config else Testbed.default()
    held = tb.contexts_from_seed(n, EVAL_SEED)
    train_ctx = tb.contexts_from_seed(512, EVAL_SEED + 1)
    sched = comparator_schedules(tb, held, train_ctx, steps)
    out: dict[str, list[float]] = {}
    with torch.no_grad():
        for key, s in sched.items():
            out[key] = tb.sample_and_score(held, s.to(DTYPE)).tolist()
    out["oracle_spread"] = [schedule_spread(sched["oracle"])]
    out["oracle_schedules"] = sched["oracle"][:8].tolist()
    out["best_global_schedule"] = sched["best_global"].tolist()
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def gap_closed(mean: float, comp: dict[str, list[float]]) -> float:
    lo = sum(comp["best_global"]) / len(comp["best_global"])
    hi = sum(comp["oracle"]) / len(comp["oracle"])
    return (mean - lo) / (hi - lo)
