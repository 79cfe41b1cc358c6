"""The RL engine: what every training method shares.

One iteration:

1. draw B contexts (prompt, initial noise) from the training stream;
2. the algorithm (:mod:`training.rl.algorithms`) collects experience with the policy on the
   back-end (the one-shot methods: K sampled schedules per context, rewards ``[B, K]``);
3. the algorithm updates the policy and returns its metrics, which become the columns of
   ``metrics.csv`` (plus ``iteration``, ``lr``, ``eval_reward`` and ``seconds``).

The engine owns the loop around it: seeding, the learning-rate schedule, resuming bit for bit,
when to checkpoint, periodic evaluation of the policy's mean schedule on held-out contexts, the
policy file's ``method`` (from the algorithm) and ``global_schedule`` (from the held-out
contexts), and progress. The run folder (where the run goes, what it resumes from and the
checks on it, ``config.json``, checkpoints and their rotation, metrics files) is
:mod:`training.rl.run_folder`'s.

Data-parallel (``accelerate launch --multi_gpu --num_processes N -m learned_schedules.training
train ...``, see :mod:`training.rl.distributed`): every rank draws the same contexts and samples
the same actions, rolls out only its own slice of the batch, and all-gathers the rewards so the
metrics are the single-process ones; local losses are scaled so that the all-reduced (summed)
gradient is the single-process gradient, and every rank takes the same step. Only the main rank
writes the run folder.

The engine is back-end agnostic (:class:`training.rl.backend.Backend`), policy agnostic (it
evaluates any deployable policy by its role, :mod:`policies.contract`) and imports no ComfyUI.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...policies.contract import is_stepwise
from ...policies.device import module_device
from .algorithms import Algorithm, make_algorithm
from .backend import Backend, make_backend, policy_features
from .checkpoint import load_checkpoint
from .config import TrainConfig, check_device
from .distributed import Dist, current, isolated_rng
from .progress import Progress
from .run_folder import RunFolder, RunPlan, plan_run, prepare_run_dir
from .stepwise import check_deployable, policy_rollout, policy_schedules

log = logging.getLogger("learned_schedules.training")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (the one seeding block)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class RunResult:
    """The outcome of :func:`train`."""

    run_dir: Path
    policy: nn.Module
    iterations_done: int
    interrupted: bool = False
    eval_history: list[tuple[int, float]] = field(default_factory=list)
    is_main: bool = True
    """False on the other ranks of a data-parallel run (they write nothing)."""


def learning_rate(config: TrainConfig, iteration: int) -> float:
    """The learning rate at ``iteration`` (1-based); stateless, so resuming needs no state."""
    if config.lr_schedule == "constant" or config.iterations <= 1:
        return config.lr
    progress = (iteration - 1) / (config.iterations - 1)
    frac = config.lr_min_frac + (1 - config.lr_min_frac) * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr * frac


def train_iteration(policy: nn.Module, optimizer: torch.optim.Optimizer, backend: Backend,
                    contexts: Any, config: TrainConfig, dist: Dist | None = None,
                    algorithm: Algorithm | None = None,
                    iteration: int | None = None) -> dict[str, float]:
    """One policy update on a batch of contexts: the algorithm's ``collect`` then ``update``
    (``iteration``, 1-based, tells the algorithm where the run is).

    With a data-parallel ``dist``, ``contexts`` is the global batch (the same on every rank);
    every metric returned is a global-batch statistic.
    """
    dist = dist or Dist()
    algorithm = algorithm or make_algorithm(config)
    if iteration is not None:
        algorithm.iteration = iteration
    batch = algorithm.collect(policy, backend, contexts, dist)
    return algorithm.update(policy, optimizer, batch, dist)


def draw_batch(backend: Backend, config: TrainConfig, generator: torch.Generator) -> Any:
    """One iteration's training contexts: ``config.batch`` independent ones, or prompts x
    seeds when the config asks for batches grouped by prompt (:meth:`TrainConfig.grouped_draw`)."""
    shape = config.grouped_draw()
    if shape is None:
        return backend.draw_contexts(config.batch, generator)
    return backend.draw_grouped_contexts(*shape, generator)


@torch.no_grad()
def evaluate_policy(policy: nn.Module, backend: Backend, contexts: Any,
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
            with isolated_rng(module_device(policy)):
                local = evaluate_policy(policy, backend, contexts.select(mine), mode).float()
        return dist.all_gather(local)
    check_deployable(policy)
    was_training = policy.training
    policy.eval()
    if is_stepwise(policy):  # it decides each step while sampling: the rollout's reward
        rewards = policy_rollout(policy, backend, contexts, mode).reward
        assert rewards is not None, "a back-end's rollout carries the rewards"
        policy.train(was_training)
        return rewards
    schedules = policy.schedule(policy_features(policy, backend, contexts), mode=mode)
    rewards = backend.rewards(contexts, schedules[:, None, :])[:, 0]
    policy.train(was_training)
    return rewards


@torch.no_grad()
def global_schedule(policy: nn.Module, backend: Backend, contexts: Any,
                    chunk: int = 64) -> torch.Tensor:
    """The policy's mean schedule averaged over ``contexts`` (flow time ``[L+1]``, float64):
    one prompt-independent summary written into policy files as ``global_schedule``.

    Runs on the main rank only, so the torch RNG is isolated (a back-end drawing from it
    would otherwise move this rank's stream away from the others')."""
    was_training = policy.training
    policy.eval()
    total = None
    n = len(contexts)
    with isolated_rng(module_device(policy)):
        for lo in range(0, n, chunk):
            part = contexts.select(torch.arange(lo, min(n, lo + chunk)))
            sched = policy_schedules(policy, backend, part).double().sum(0)
            total = sched.cpu() if total is None else total + sched.cpu()
    policy.train(was_training)
    assert total is not None, "global_schedule needs at least one context"
    out = total / n
    out[0], out[-1] = 1.0, 0.0  # exact ends (each schedule has them; the sum may round)
    return out


def _rng_state(gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {"torch": torch.get_rng_state(), "contexts": gen.get_state()}


def train(config: TrainConfig, *, backend: Backend | None = None,
          resume: str | Path | RunPlan | None = None,
          callback: Callable[[int, dict[str, float]], None] | None = None,
          dist: Dist | None = None) -> RunResult:
    """Train a policy; return the run folder and the trained policy (see :func:`_train`),
    with torch's CPU threads set by ``config.threads`` for the run and restored after it."""
    config.validate()  # the one validation: a user's mistake fails before anything is written
    threads = config.threads or (1 if config.backend == "testbed" else 0)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(config, backend=backend, resume=resume, callback=callback, dist=dist)
    finally:
        torch.set_num_threads(before)


def _train(config: TrainConfig, *, backend: Backend | None = None,
           resume: str | Path | RunPlan | None = None,
           callback: Callable[[int, dict[str, float]], None] | None = None,
           dist: Dist | None = None) -> RunResult:
    """Train a validated config's policy; return the run folder and the trained policy.

    ``resume``: a run folder (its latest checkpoint), a checkpoint file, or the plan
    :func:`training.rl.run_folder.plan_resume` made of one; the run continues exactly where it
    stopped, in the same folder, up to ``config.iterations``. ``callback`` is called after
    every iteration with the algorithm's metrics (tests use it to interrupt a run). Ctrl-C
    (``KeyboardInterrupt``) saves a checkpoint before returning with ``interrupted=True``.
    ``dist``: the data-parallel group; by default from the launcher's environment (a single
    process unless launched distributed). Only its main rank writes the run folder; a write
    that fails there raises :class:`training.rl.run_folder.RunFolderWriteError`.
    """
    # everything that can fail on a user's input fails here, before anything is written
    check_device(config.device)
    dist = dist or current(config.device)
    device = dist.policy_device(config.device)
    start = 0
    plan = dist.on_main(plan_run, config, resume)
    seed_everything(config.seed)
    backend = backend or make_backend(config)
    algorithm = make_algorithm(config)
    policy = algorithm.build_policy(config, backend).to(device)
    optimizer = algorithm.build_optimizer(policy)
    algorithm.setup(policy, backend)
    ctx_gen = torch.Generator().manual_seed(config.seed)
    if plan.checkpoint is not None:
        start, rng, _ = load_checkpoint(plan.checkpoint, policy=policy, optimizer=optimizer,
                                        extra=algorithm.load_extra_state)
        torch.set_rng_state(rng["torch"])
        ctx_gen.set_state(rng["contexts"])
    # then the run folder: config.json, metrics.csv cut back to the checkpoint
    run_dir = dist.on_main(prepare_run_dir, config, plan, start)
    folder = RunFolder(run_dir, config, purge_step=start + 1 if plan.resume else None) \
        if dist.is_main else None
    if dist.distributed and dist.is_main:
        log.info("data-parallel training on %d processes (%s)", dist.world_size, dist.backend)
    if plan.checkpoint is not None and dist.is_main:
        log.info("resumed %s at iteration %d", run_dir, start)
    if not dist.broadcast_params(policy):
        raise RuntimeError("The processes built different policies: every rank must run the "
                           "same config and checkpoint.")
    eval_ctx = backend.held_out_contexts(config.eval_contexts, config.eval_seed)
    result = RunResult(run_dir=run_dir, policy=policy, iterations_done=start,
                       is_main=dist.is_main)

    summaries: dict[int, torch.Tensor] = {}

    def summary(it: int) -> torch.Tensor | None:  # the policy file's global_schedule
        if it not in summaries and len(eval_ctx):
            summaries.clear()
            summaries[it] = global_schedule(algorithm.deployable(policy, backend), backend,
                                            eval_ctx)
        return summaries.get(it)

    def checkpoint(folder: RunFolder, it: int) -> None:  # every rank holds the same state
        folder.save_state(it, policy=policy, optimizer=optimizer, rng=_rng_state(ctx_gen),
                          world_size=dist.world_size, extra=algorithm.extra_state())
        folder.save_policy(it, algorithm.deployable(policy, backend), backend,
                           method=algorithm.method, global_schedule=summary(it))
        folder.rotate()

    bar = Progress(config.iterations, start) if dist.is_main and config.progress else None
    t0 = time.perf_counter()
    it = start
    try:
        for it in range(start + 1, config.iterations + 1):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, it) * group.get("lr_scale", 1.0)
            contexts = draw_batch(backend, config, ctx_gen)
            metrics = train_iteration(policy, optimizer, backend, contexts, config, dist,
                                      algorithm, iteration=it)
            row: dict[str, Any] = {"iteration": it, "lr": learning_rate(config, it), **metrics,
                                   "seconds": round(time.perf_counter() - t0, 3)}
            if it == config.iterations or (config.eval_every and it % config.eval_every == 0):
                ev = float(evaluate_policy(algorithm.deployable(policy, backend), backend,
                                           eval_ctx, dist=dist).mean())
                row["eval_reward"] = ev
                result.eval_history.append((it, ev))
            if folder is not None:
                folder.log_metrics(row)
            result.iterations_done = it
            if bar is not None:
                bar.update(it, metrics)
            if folder is not None and config.checkpoint_every \
                    and it % config.checkpoint_every == 0:
                checkpoint(folder, it)
            every = config.comfy.sample_every
            if folder is not None and every and it % every == 0:
                folder.write_samples(backend, policy, it)
            if callback is not None:
                callback(it, metrics)
    except KeyboardInterrupt:
        result.interrupted = True
        if folder is None:  # no collectives here: the other ranks may be gone already
            return result
        done = result.iterations_done
        log.warning("interrupted: saving a checkpoint at iteration %d in %s", done,
                    folder.checkpoints)
        if not folder.has_checkpoint(done):
            checkpoint(folder, done)
        return result
    finally:
        if bar is not None:
            bar.close()
        if folder is not None:
            folder.close()
    if folder is not None:
        if not folder.has_checkpoint(result.iterations_done):
            checkpoint(folder, result.iterations_done)
        final = folder.save_policy(result.iterations_done, algorithm.deployable(policy, backend),
                                   backend, method=algorithm.method,
                                   global_schedule=summary(result.iterations_done), final=True)
        log.info("finished %d iterations in %.1f s; policy: %s", result.iterations_done - start,
                 time.perf_counter() - t0, final)
    dist.barrier()  # the run folder is complete before any rank returns
    return result


__all__ = ["train", "train_iteration", "evaluate_policy", "RunResult",
           "global_schedule", "policy_features", "seed_everything", "learning_rate"]
