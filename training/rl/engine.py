"""The RL engine: REINFORCE (with none / RLOO / XCTX / James-Stein baselines) and TPDM-style PPO.

One iteration, as in the paper:

1. draw B contexts (prompt, initial noise) from the training stream;
2. the policy gives Dirichlet concentrations ``alpha`` per context; sample K segment vectors
   ``tau`` per context and turn them into sampler schedules;
3. the back-end samples with each schedule and scores the results: rewards ``r [B, K]``;
4. advantages ``r - b`` with the chosen baseline;
5. REINFORCE: minimise ``-mean((r - b) * log Dir(tau; alpha))`` with AdamW and gradient
   clipping (no gradient through the sampler). PPO: several epochs of the clipped-ratio
   objective on the same rollouts.

Data-parallel (``accelerate launch --multi_gpu --num_processes N -m learned_schedules.training
train ...``, see :mod:`training.distributed`): every rank draws the same contexts and samples the
same ``tau``, rolls out only its own slice of the batch, and all-gathers the rewards so the
baseline and the metrics are the single-process ones; local losses are scaled so that the
all-reduced (summed) gradient is the single-process gradient, and every rank takes the same
step. Only the main rank writes the run folder.

The engine is back-end agnostic (:class:`training.backend.Backend`) and imports no ComfyUI.
"""

from __future__ import annotations

import csv
import logging
import math
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...policies.dirichlet import DirichletPolicy, to_schedule
from ...policies.policy_file import save_policy
from .backend import Backend, make_backend
from .baselines import compute_baseline
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import Dist, current

log = logging.getLogger("learned_schedules.training")

METRIC_FIELDS = ["iteration", "lr", "reward_mean", "reward_std", "baseline_mse", "js_weight",
                 "grad_norm", "entropy", "concentration", "eval_reward", "seconds"]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (the one seeding block)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class IterationStats:
    """What one policy update logged."""

    reward_mean: float
    reward_std: float
    baseline_mse: float
    js_weight: float
    grad_norm: float
    entropy: float
    concentration: float


@dataclass
class RunResult:
    """The outcome of :func:`train`."""

    run_dir: Path
    policy: DirichletPolicy
    iterations_done: int
    interrupted: bool = False
    eval_history: list[tuple[int, float]] = field(default_factory=list)
    is_main: bool = True
    """False on the other ranks of a data-parallel run (they write nothing)."""


def build_policy_for(config: TrainConfig, backend: Backend) -> DirichletPolicy:
    """The Dirichlet policy a config asks for, with the back-end's encoder."""
    encoder = backend.build_encoder(hidden=config.hidden, depth=config.depth)
    policy = DirichletPolicy(encoder, config.steps, head_hidden=config.hidden,
                             init_concentration=config.init_concentration)
    segments = backend.default_segments(config.steps) if config.init_schedule == "default" \
        else None
    if segments is not None:
        policy.init_mean(segments)
    return policy


def policy_loss(policy: DirichletPolicy, features: dict[str, torch.Tensor], tau: torch.Tensor,
                adv: torch.Tensor, config: TrainConfig,
                old_logp: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss for one update; ``tau [K, B, L+1]``, ``adv [B, K]``. Returns (loss, entropy)."""
    dist = policy.distribution(**features)
    logp = dist.log_prob(tau.clamp_min(1e-12)).transpose(0, 1)  # [B, K]
    entropy = dist.entropy().mean()
    if old_logp is None:
        loss = -(adv * logp).mean()
    else:
        ratio = torch.exp(logp - old_logp)
        clipped = ratio.clamp(1 - config.ppo_clip, 1 + config.ppo_clip)
        loss = -torch.minimum(ratio * adv, clipped * adv).mean()
    if config.entropy_coef:
        loss = loss - config.entropy_coef * entropy
    return loss, entropy.detach()


def policy_features(policy: torch.nn.Module, backend: Backend, contexts: Any
                    ) -> dict[str, torch.Tensor]:
    """The back-end's features for ``contexts``, on the policy's device."""
    device = next(policy.parameters()).device
    return {k: v.to(device) for k, v in backend.features(contexts).items()}


def learning_rate(config: TrainConfig, iteration: int) -> float:
    """The learning rate at ``iteration`` (1-based); stateless, so resuming needs no state."""
    if config.lr_schedule == "constant" or config.iterations <= 1:
        return config.lr
    progress = (iteration - 1) / (config.iterations - 1)
    frac = config.lr_min_frac + (1 - config.lr_min_frac) * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr * frac


def train_iteration(policy: DirichletPolicy, optimizer: torch.optim.Optimizer,
                    backend: Backend, contexts: Any, config: TrainConfig,
                    dist: Dist | None = None) -> IterationStats:
    """One policy update on a batch of contexts (rollouts, baseline, gradient step).

    With a data-parallel ``dist``, ``contexts`` is the global batch (the same on every rank):
    this rank rolls out its own slice, and everything logged is a global-batch statistic.
    """
    dist = dist or Dist()
    features = policy_features(policy, backend, contexts)
    with torch.no_grad():
        alpha = policy.alpha(**features)
        tau = torch.distributions.Dirichlet(alpha).sample((config.rollouts,))  # [K, B, L+1]
        schedules = to_schedule(tau, policy.min_segment).transpose(0, 1)  # [B, K, L+1]
    batch = schedules.shape[0]
    mine = dist.shard(batch)  # this rank's contexts: all of them in a single process
    share = len(mine) / batch  # local mean * share, summed over ranks = global mean
    local_rewards = _local_rewards(backend, contexts, schedules, mine, dist).to(alpha)
    rewards = dist.all_gather(local_rewards)  # [B, K], the same on every rank
    base = compute_baseline(rewards, config.baseline)
    adv = rewards - base.baseline
    if config.normalize_advantages:
        adv = adv / (rewards.std() + 1e-8)
    local_features = {name: value[mine] for name, value in features.items()}
    tau, adv = tau[:, mine], adv[mine]
    old_logp = None
    epochs = config.ppo_epochs if config.algo == "ppo" else 1
    if config.algo == "ppo" and share:
        with torch.no_grad():
            old_logp = policy.distribution(**local_features).log_prob(tau.clamp_min(1e-12)).T
    grad_norm = 0.0
    entropy = alpha.new_zeros(())
    for _ in range(epochs):
        optimizer.zero_grad(set_to_none=True)
        if share:  # a rank with no contexts (batch < world size) adds a zero gradient
            loss, entropy = policy_loss(policy, local_features, tau, adv, config, old_logp)
            (loss * share).backward()
        dist.all_reduce_grads(policy)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip))
        optimizer.step()
    entropy = dist.all_reduce_sum(entropy * share)
    return IterationStats(
        reward_mean=float(rewards.mean()), reward_std=float(rewards.std()),
        baseline_mse=float((rewards - base.baseline).pow(2).mean()),
        js_weight=float(base.js_weight), grad_norm=grad_norm, entropy=float(entropy),
        concentration=float(alpha.sum(-1).mean()))


@torch.no_grad()
def _local_rewards(backend: Backend, contexts: Any, schedules: torch.Tensor,
                   mine: torch.Tensor, dist: Dist) -> torch.Tensor:
    """Rewards ``[len(mine), K]`` of this rank's contexts."""
    if not dist.distributed:
        return backend.rewards(contexts, schedules)
    if len(mine) == 0:
        return torch.zeros(0, schedules.shape[1])
    with _isolated_rng(schedules.device):
        return backend.rewards(contexts.select(mine), schedules[mine])


def _isolated_rng(device: torch.device) -> AbstractContextManager[Any]:
    """Keep a back-end's own randomness from moving the torch RNG that samples ``tau``.

    Ranks roll out different slices, so without this a back-end that draws from the global
    RNG would leave the ranks with different streams, and different ``tau``, next iteration.
    """
    cuda = [device.index or 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=cuda)


@torch.no_grad()
def evaluate_policy(policy: DirichletPolicy, backend: Backend, contexts: Any,
                    mode: str = "mean", dist: Dist | None = None) -> torch.Tensor:
    """Per-context reward of the policy's schedules (mean mode by default).

    With a data-parallel ``dist``, each rank scores its slice of ``contexts`` and every rank
    gets all the rewards, in order.
    """
    dist = dist or Dist()
    if dist.distributed:
        mine = dist.shard(len(contexts))
        local = torch.zeros(0)
        if len(mine):
            with _isolated_rng(next(policy.parameters()).device):
                local = evaluate_policy(policy, backend, contexts.select(mine), mode).float()
        return dist.all_gather(local)
    was_training = policy.training
    policy.eval()
    schedules = policy.schedule(mode=mode, **policy_features(policy, backend, contexts))
    rewards = backend.rewards(contexts, schedules[:, None, :])[:, 0]
    policy.train(was_training)
    return rewards


def default_run_name(config: TrainConfig) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return (f"{config.backend}-{config.algo}-{config.baseline}-L{config.steps}"
            f"__{config.seed}__{stamp}")


def _rng_state(gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {"torch": torch.get_rng_state(), "contexts": gen.get_state()}


def _write_metrics(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in METRIC_FIELDS})


def _prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    for pattern in ("state_*.safetensors", "policy_*.safetensors"):
        files = sorted(ckpt_dir.glob(pattern))
        for old in files[:-keep] if keep > 0 else files:
            old.unlink()


def train(config: TrainConfig, *, backend: Backend | None = None,
          resume: str | Path | None = None,
          callback: Callable[[int, IterationStats], None] | None = None,
          dist: Dist | None = None) -> RunResult:
    """Train a policy; return the run folder and the trained policy.

    ``resume``: a run folder (its latest checkpoint) or a checkpoint file; the run continues
    exactly where it stopped, in the same folder, up to ``config.iterations``. ``callback``
    is called after every iteration (tests use it to interrupt a run). Ctrl-C
    (``KeyboardInterrupt``) saves a checkpoint before returning with ``interrupted=True``.
    ``dist``: the data-parallel group; by default from the launcher's environment (a single
    process unless launched distributed). Only its main rank writes the run folder.
    """
    config.validate()
    dist = dist or current(config.device)
    device = dist.policy_device(config.device)
    start = 0
    seed_everything(config.seed)
    backend = backend or make_backend(config)  # bad inputs fail before a run folder exists
    run_dir, ckpt = dist.on_main(_prepare_run_dir, config, resume)
    ckpt_dir = run_dir / "checkpoints"
    if dist.distributed and dist.is_main:
        log.info("data-parallel training on %d processes (%s)", dist.world_size, dist.backend)

    policy = build_policy_for(config, backend).to(device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    ctx_gen = torch.Generator().manual_seed(config.seed)
    if ckpt is not None:
        start, rng, _ = load_checkpoint(ckpt, policy=policy, optimizer=optimizer)
        torch.set_rng_state(rng["torch"])
        ctx_gen.set_state(rng["contexts"])
        if dist.is_main:
            log.info("resumed %s at iteration %d", run_dir, start)
    if not dist.broadcast_params(policy):
        raise RuntimeError("The processes built different policies: every rank must run the "
                           "same config and checkpoint.")
    eval_ctx = backend.held_out_contexts(config.eval_contexts, config.eval_seed)
    metrics_path = run_dir / "metrics.csv"
    result = RunResult(run_dir=run_dir, policy=policy, iterations_done=start,
                       is_main=dist.is_main)

    def checkpoint(it: int) -> None:  # main rank only; every rank holds the same state
        save_checkpoint(ckpt_dir / f"state_{it:06d}.safetensors", policy=policy,
                        optimizer=optimizer, iteration=it, rng=_rng_state(ctx_gen),
                        info={"config": config.to_json(), "world_size": dist.world_size})
        save_run_policy(ckpt_dir / f"policy_{it:06d}.safetensors", policy, backend, config, it)
        _prune_checkpoints(ckpt_dir, config.keep_checkpoints)

    bar = _progress(config, start) if dist.is_main else None
    t0 = time.perf_counter()
    it = start
    try:
        for it in range(start + 1, config.iterations + 1):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, it)
            contexts = backend.draw_contexts(config.batch, ctx_gen)
            stats = train_iteration(policy, optimizer, backend, contexts, config, dist)
            row: dict[str, Any] = {"iteration": it, "lr": learning_rate(config, it),
                                   **stats.__dict__,
                                   "seconds": round(time.perf_counter() - t0, 3)}
            if it == config.iterations or (config.eval_every and it % config.eval_every == 0):
                ev = float(evaluate_policy(policy, backend, eval_ctx, dist=dist).mean())
                row["eval_reward"] = ev
                result.eval_history.append((it, ev))
            if dist.is_main:
                _write_metrics(metrics_path, row)
            result.iterations_done = it
            if bar is not None:
                bar.update(1)
                bar.set_postfix(reward=f"{stats.reward_mean:.3f}", js=f"{stats.js_weight:.2f}")
            if dist.is_main and config.checkpoint_every and it % config.checkpoint_every == 0:
                checkpoint(it)
            if dist.is_main and config.sample_every and it % config.sample_every == 0:
                backend.write_samples(policy, run_dir / "samples" / f"iter_{it:06d}.png")
            if callback is not None:
                callback(it, stats)
    except KeyboardInterrupt:
        result.interrupted = True
        if not dist.is_main:  # no collectives here: the other ranks may be gone already
            return result
        done = result.iterations_done
        log.warning("interrupted: saving a checkpoint at iteration %d in %s", done, ckpt_dir)
        if not (ckpt_dir / f"state_{done:06d}.safetensors").exists():
            checkpoint(done)
        return result
    finally:
        if bar is not None:
            bar.close()
    if dist.is_main:
        if not (ckpt_dir / f"state_{result.iterations_done:06d}.safetensors").exists():
            checkpoint(result.iterations_done)
        save_run_policy(run_dir / "policy.safetensors", policy, backend, config,
                        result.iterations_done)
        log.info("finished %d iterations in %.1f s; policy: %s", result.iterations_done - start,
                 time.perf_counter() - t0, run_dir / "policy.safetensors")
    dist.barrier()  # the run folder is complete before any rank returns
    return result


def _prepare_run_dir(config: TrainConfig, resume: str | Path | None) -> tuple[Path, Path | None]:
    """Create (or find, to resume) the run folder and write its config; the main rank's job."""
    ckpt = None
    if resume is not None:
        run_dir, ckpt = _resolve_resume(Path(resume))
    else:
        run_dir = Path(config.out) / (config.run_name or default_run_name(config))
        # a folder holding only a config (a run that failed before its first metrics) is reused
        kept = [f for f in run_dir.rglob("*") if f.is_file() and f.name != "config.json"] \
            if run_dir.exists() else []
        if kept:
            raise ValueError(f"Run folder {run_dir} already exists and is not empty; pass "
                             "--resume to continue it or choose another --run-name.")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (run_dir / "config.json").write_text(config.to_json())
    return run_dir, ckpt


def save_run_policy(path: Path, policy: DirichletPolicy, backend: Backend, config: TrainConfig,
                    iteration: int) -> None:
    """Write the policy in the node-loadable policy file format."""
    training = {k: v for k, v in config.__dict__.items() if k not in ("progress",)}
    training["iterations_done"] = iteration
    save_policy(path, policy, method="dirichlet-reinforce", model_family=backend.model_family,
                training=training, reward=backend.reward_name)


def _resolve_resume(path: Path) -> tuple[Path, Path]:
    if path.is_file():
        return path.parent.parent, path
    states = sorted((path / "checkpoints").glob("state_*.safetensors"))
    if not states:
        raise ValueError(f"No checkpoint to resume from in {path}.")
    return path, states[-1]


def _progress(config: TrainConfig, start: int):
    if not config.progress:
        return None
    import sys

    from tqdm.auto import tqdm

    # a terminal gets a live bar; a log file gets a line every 10 s, not every iteration
    interval = 0.1 if sys.stderr.isatty() else 10.0
    return tqdm(total=config.iterations, initial=start, desc="train", unit="it",
                dynamic_ncols=True, smoothing=0.1, mininterval=interval)


__all__ = ["train", "train_iteration", "evaluate_policy", "build_policy_for", "RunResult",
           "IterationStats", "seed_everything"]
