"""The RL engine: what every training method shares.

One iteration:

1. draw B contexts (prompt, initial noise) from the training stream;
2. the algorithm (:mod:`training.rl.algorithms`) collects experience with the policy on the
   back-end (the one-shot methods: K sampled schedules per context, rewards ``[B, K]``);
3. the algorithm updates the policy and returns its metrics, which become the columns of
   ``metrics.csv`` (plus ``iteration``, ``lr``, ``eval_reward`` and ``seconds``).

The engine owns the rest: the run folder and its ``config.json``, seeding, the learning-rate
schedule, resuming bit for bit, checkpoints, periodic evaluation of the policy's mean schedule
on held-out contexts, the policy file (``method`` from the algorithm, ``global_schedule`` from
the held-out contexts), metrics and progress.

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

import csv
import json
import logging
import math
import os
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
from ...policies.policy_file import save_policy
from .algorithms import Algorithm, make_algorithm
from .backend import Backend, make_backend, policy_features
from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .config import TrainConfig, check_device
from .distributed import Dist, current, isolated_rng
from .progress import Progress
from .stepwise import check_deployable, policy_rollout, policy_schedules
from .tensorboard import ScalarWriter

log = logging.getLogger("learned_schedules.training")

FIRST_COLUMNS = ["iteration", "lr"]
LAST_COLUMNS = ["eval_reward", "seconds"]
"""``metrics.csv`` columns around the algorithm's own metrics."""


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


def default_run_name(config: TrainConfig) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return (f"{config.backend}-{make_algorithm(config).run_tag}-L{config.steps}"
            f"__{config.seed}__{stamp}")


def _rng_state(gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {"torch": torch.get_rng_state(), "contexts": gen.get_state()}


def _metric_columns(path: Path, metrics: dict[str, Any]) -> list[str]:
    """The CSV's columns: an existing file's header (a resumed run), else from ``metrics``."""
    if path.exists() and path.stat().st_size:
        with path.open(newline="") as f:
            header = next(csv.reader(f), None)
        if header:
            return header
    names = [k for k in metrics if k not in FIRST_COLUMNS + LAST_COLUMNS]
    return FIRST_COLUMNS + names + LAST_COLUMNS


def _write_metrics(path: Path, columns: list[str], row: dict[str, Any]) -> None:
    new = not path.exists() or not path.stat().st_size
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in columns})


def _prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    for pattern in ("state_*.safetensors", "policy_*.safetensors"):
        files = sorted(ckpt_dir.glob(pattern))
        for old in files[:-keep] if keep > 0 else files:
            old.unlink()


def train(config: TrainConfig, *, backend: Backend | None = None,
          resume: str | Path | None = None,
          callback: Callable[[int, dict[str, float]], None] | None = None,
          dist: Dist | None = None) -> RunResult:
    """Train a policy; return the run folder and the trained policy (see :func:`_train`),
    with torch's CPU threads set by ``config.threads`` for the run and restored after it."""
    config.validate()
    threads = config.threads or (1 if config.backend == "testbed" else 0)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(config, backend=backend, resume=resume, callback=callback, dist=dist)
    finally:
        torch.set_num_threads(before)


def _train(config: TrainConfig, *, backend: Backend | None = None,
           resume: str | Path | None = None,
           callback: Callable[[int, dict[str, float]], None] | None = None,
           dist: Dist | None = None) -> RunResult:
    """Train a policy; return the run folder and the trained policy.

    ``resume``: a run folder (its latest checkpoint) or a checkpoint file; the run continues
    exactly where it stopped, in the same folder, up to ``config.iterations``. ``callback``
    is called after every iteration with the algorithm's metrics (tests use it to interrupt a
    run). Ctrl-C (``KeyboardInterrupt``) saves a checkpoint before returning with
    ``interrupted=True``.
    ``dist``: the data-parallel group; by default from the launcher's environment (a single
    process unless launched distributed). Only its main rank writes the run folder.
    """
    # everything that can fail on a user's input fails here, before anything is written
    config.validate()
    check_device(config.device)
    dist = dist or current(config.device)
    device = dist.policy_device(config.device)
    start = 0
    plan = dist.on_main(_plan_run, config, resume)
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
    run_dir = dist.on_main(_prepare_run_dir, config, plan, start)
    ckpt_dir = run_dir / "checkpoints"
    if dist.distributed and dist.is_main:
        log.info("data-parallel training on %d processes (%s)", dist.world_size, dist.backend)
    if plan.checkpoint is not None and dist.is_main:
        log.info("resumed %s at iteration %d", run_dir, start)
    if not dist.broadcast_params(policy):
        raise RuntimeError("The processes built different policies: every rank must run the "
                           "same config and checkpoint.")
    eval_ctx = backend.held_out_contexts(config.eval_contexts, config.eval_seed)
    metrics_path = run_dir / "metrics.csv"
    result = RunResult(run_dir=run_dir, policy=policy, iterations_done=start,
                       is_main=dist.is_main)

    summaries: dict[int, torch.Tensor] = {}

    def summary(it: int) -> torch.Tensor | None:  # the policy file's global_schedule
        if it not in summaries and len(eval_ctx):
            summaries.clear()
            summaries[it] = global_schedule(algorithm.deployable(policy, backend), backend,
                                            eval_ctx)
        return summaries.get(it)

    def checkpoint(it: int) -> None:  # main rank only; every rank holds the same state
        save_checkpoint(ckpt_dir / f"state_{it:06d}.safetensors", policy=policy,
                        optimizer=optimizer, iteration=it, rng=_rng_state(ctx_gen),
                        info={"config": config.to_json(), "world_size": dist.world_size},
                        extra=algorithm.extra_state())
        save_run_policy(ckpt_dir / f"policy_{it:06d}.safetensors",
                        algorithm.deployable(policy, backend), backend, config, it,
                        method=algorithm.method, global_schedule=summary(it))
        _prune_checkpoints(ckpt_dir, config.keep_checkpoints)

    bar = Progress(config.iterations, start) if dist.is_main and config.progress else None
    board: ScalarWriter | None = None  # opened with the first row, like metrics.csv
    t0 = time.perf_counter()
    it = start
    columns: list[str] | None = None
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
            if dist.is_main:
                columns = columns or _metric_columns(metrics_path, metrics)
                _write_metrics(metrics_path, columns, row)
            result.iterations_done = it
            if dist.is_main:
                if board is None:
                    board = ScalarWriter(run_dir / "tensorboard",
                                         start_step=start + 1 if start else None)
                board.add_scalars(it, {k: v for k, v in row.items() if k != "iteration"})
            if bar is not None:
                bar.update(it, metrics)
            if dist.is_main and config.checkpoint_every and it % config.checkpoint_every == 0:
                checkpoint(it)
            if dist.is_main and config.comfy.sample_every and it % config.comfy.sample_every == 0:
                backend.write_samples(policy, run_dir / "samples" / f"iter_{it:06d}.png")
            if callback is not None:
                callback(it, metrics)
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
        if board is not None:
            board.close()
    if dist.is_main:
        if not (ckpt_dir / f"state_{result.iterations_done:06d}.safetensors").exists():
            checkpoint(result.iterations_done)
        save_run_policy(run_dir / "policy.safetensors", algorithm.deployable(policy, backend),
                        backend, config, result.iterations_done, method=algorithm.method,
                        global_schedule=summary(result.iterations_done))
        log.info("finished %d iterations in %.1f s; policy: %s", result.iterations_done - start,
                 time.perf_counter() - t0, run_dir / "policy.safetensors")
    dist.barrier()  # the run folder is complete before any rank returns
    return result


@dataclass
class RunPlan:
    """Where a run goes and what it resumes from, decided before anything is written."""

    run_dir: Path
    checkpoint: Path | None = None
    """The checkpoint to load (None: start at iteration 0)."""
    unreadable: list[Path] = field(default_factory=list)
    """Newer checkpoints that could not be read (set aside once the run starts)."""
    resume: bool = False


def _plan_run(config: TrainConfig, resume: str | Path | None) -> RunPlan:
    """Find the run folder and the checkpoint to resume from, and check that the config can
    continue it; reads only (the main rank's job). Every problem is a ``ValueError``."""
    if resume is None:
        run_dir = Path(config.out) / (config.run_name or default_run_name(config))
        if run_dir.exists() and not run_dir.is_dir():
            raise ValueError(f"Run folder {run_dir} is a file; choose another --run-name.")
        # a folder holding only a config (a run that failed before its first metrics) is reused
        kept = [f for f in run_dir.rglob("*") if f.is_file() and f.name != "config.json"] \
            if run_dir.exists() else []
        if kept:
            raise ValueError(f"Run folder {run_dir} already exists and is not empty; pass "
                             f"--resume {run_dir} to continue it (from its last checkpoint, or "
                             "from the start if it has none) or choose another --run-name.")
        return RunPlan(run_dir)
    path = Path(resume)
    if not path.exists():
        raise ValueError(f"Nothing to resume: {path} does not exist.")
    if path.is_file():
        run_dir, states = path.parent.parent, [path]
    else:
        run_dir = path
        if not (run_dir / "config.json").is_file() and not (run_dir / "checkpoints").is_dir():
            raise ValueError(f"{run_dir} is not a run folder (it has no config.json and no "
                             "checkpoints/).")
        states = sorted((run_dir / "checkpoints").glob("state_*.safetensors"), reverse=True)
    plan = RunPlan(run_dir, resume=True)
    for state in states:
        try:
            iteration, saved = read_checkpoint_config(state)
        except ValueError as exc:
            if path.is_file():
                raise
            plan.unreadable.append(state)
            log.warning("%s", exc)
            continue
        if plan.unreadable:
            log.warning("resuming from %s, the newest readable checkpoint (iteration %d)",
                        state.name, iteration)
        plan.checkpoint = state
        _check_resume(config, saved, run_dir, iteration)
        return plan
    if plan.unreadable:
        raise ValueError(f"No readable checkpoint in {run_dir / 'checkpoints'} (all "
                         f"{len(plan.unreadable)} are damaged); move them away to start the run "
                         "again from iteration 0.")
    if (run_dir / "config.json").is_file():
        saved_config = TrainConfig.load(run_dir / "config.json")
        _check_resume(config, saved_config, run_dir, 0)
    log.warning("%s has no checkpoint yet (it stopped before the first one): starting it "
                "again from iteration 0", run_dir)
    return plan


def read_checkpoint_config(path: Path) -> tuple[int, TrainConfig | None]:
    """The iteration and run config a checkpoint holds; ``ValueError`` if it is unreadable."""
    _, meta = read_checkpoint(path)
    raw = (meta.get("info") or {}).get("config")
    try:
        saved = TrainConfig.from_dict(json.loads(raw)) if isinstance(raw, str) else None
    except ValueError:
        saved = None  # a config of another version: the weights' shapes still get checked
    return int(meta["iteration"]), saved


def _check_resume(config: TrainConfig, saved: TrainConfig | None, run_dir: Path,
                  iteration: int) -> None:
    """Refuse, in one sentence, settings a resumed run cannot take."""
    if saved is not None:
        changed = config.changes_refused_on_resume(saved)
        if changed:
            raise ValueError(f"Cannot resume {run_dir} with a changed {', '.join(changed)}: "
                             "these fix the policy's architecture, its algorithm or the "
                             "training stream; start a new run to change them (iterations, lr, "
                             "eval and checkpoint cadence and the like may change on resume).")
    if config.iterations < iteration:
        raise ValueError(f"Cannot resume {run_dir} with iterations={config.iterations}: its "
                         f"checkpoint is at iteration {iteration} already.")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _truncate_metrics(path: Path, upto: int) -> None:
    """Keep the header and the complete rows of iterations ``1..upto`` (a crashed run may have
    logged iterations past its last checkpoint, or half a row)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or upto <= 0:
        path.unlink()
        return
    header, by_iteration = rows[0], {}
    for row in rows[1:]:
        try:
            it = int(row[0]) if len(row) == len(header) else 0
        except ValueError:
            it = 0
        if 1 <= it <= upto:
            by_iteration[it] = row  # a later row of the same iteration replaces an earlier one
    kept = [header] + [by_iteration[i] for i in sorted(by_iteration)]
    if kept == rows:
        return
    log.info("metrics.csv: dropped %d row(s) logged after the checkpoint", len(rows) - len(kept))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        csv.writer(f).writerows(kept)
    os.replace(tmp, path)


def _prepare_run_dir(config: TrainConfig, plan: RunPlan, start: int) -> Path:
    """Create (or tidy, to resume) the run folder and write its config; the main rank's job,
    after every check has passed."""
    run_dir = plan.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    if plan.resume:
        for bad in plan.unreadable:  # kept for inspection, out of the way of later saves
            os.replace(bad, bad.with_name(bad.name + ".unreadable"))
            log.warning("set aside %s as %s.unreadable", bad.name, bad.name)
        for tmp in ckpt_dir.glob("*.tmp"):  # half-written by a killed run
            tmp.unlink()
        _truncate_metrics(run_dir / "metrics.csv", start)
    _write_atomic(run_dir / "config.json", config.to_json())
    return run_dir


def save_run_policy(path: Path, policy: nn.Module, backend: Backend, config: TrainConfig,
                    iteration: int, *, method: str,
                    global_schedule: torch.Tensor | None = None) -> None:
    """Write the policy in the node-loadable policy file format (``method``: the algorithm's;
    ``global_schedule``: see :func:`global_schedule`)."""
    training = {k: v for k, v in config.to_dict().items() if k != "progress"}
    training["iterations_done"] = iteration
    save_policy(path, policy, method=method, model_family=backend.model_family,
                training=training, reward=backend.reward_name, global_schedule=global_schedule)


__all__ = ["train", "train_iteration", "evaluate_policy", "RunResult",
           "global_schedule", "policy_features", "seed_everything", "learning_rate"]
