"""The run folder: where a run goes, what it resumes from, and everything it writes.

Layout of ``<out>/<run_name>/``: ``config.json`` (the run's config, rewritten atomically on
every start or resume), ``metrics.csv`` and ``tensorboard/`` (:mod:`training.rl.metrics_log`),
``checkpoints/state_<it>.safetensors`` (resumable state, :mod:`training.rl.checkpoint`) beside
``checkpoints/policy_<it>.safetensors`` (the policy file at that iteration), the last
``keep_checkpoints`` of each kept, ``samples/`` (sample images, ComfyUI back-ends) and
``policy.safetensors`` (the final policy).

Resuming (:func:`plan_resume`, then :func:`check_resume`) reads only, and every problem is one
``ValueError`` sentence: a path that is no run folder, a run killed before its first checkpoint
(it starts again from iteration 0), a damaged latest checkpoint (the newest readable one is
used; the damaged ones are renamed ``*.unreadable`` once the run starts), settings that cannot
change on resume. A write that fails mid-run (a full disk, a lost permission) is one
:class:`RunFolderWriteError` sentence naming the folder; every file is written to a temporary
name and renamed, so the last checkpoint stays intact and ``--resume`` continues from it.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn

from ...policies.json_io import parse_json
from ...policies.policy_file import save_policy
from .algorithms import make_algorithm
from .backend import Backend
from .checkpoint import read_checkpoint, save_checkpoint
from .config import TrainConfig
from .metrics_log import MetricsLog

log = logging.getLogger("learned_schedules.training")

CONFIG_FILE = "config.json"


class RunFolderWriteError(ValueError):
    """A write into the run folder failed (a full disk, a lost permission); one sentence
    naming the folder and how to continue."""


def default_run_name(config: TrainConfig) -> str:
    """``{backend}-{algorithm tag}-L{steps}__{seed}__{time}`` (CleanRL's pattern)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return (f"{config.backend}-{make_algorithm(config).run_tag}-L{config.steps}"
            f"__{config.seed}__{stamp}")


# -- the plan: where the run goes and what it resumes from (reads only) ----------------------
@dataclass
class RunPlan:
    """Where a run goes and what it resumes from, decided before anything is written."""

    run_dir: Path
    checkpoint: Path | None = None
    """The checkpoint to load (None: start at iteration 0)."""
    iteration: int = 0
    """The checkpoint's iteration."""
    saved: TrainConfig | None = None
    """The config the run was saved with (its checkpoint's, else its ``config.json``'s; None
    for a new run, or a checkpoint of another version)."""
    unreadable: list[Path] = field(default_factory=list)
    """Newer checkpoints that could not be read (set aside once the run starts)."""
    reasons: list[str] = field(default_factory=list)
    """Why each of ``unreadable`` could not be read."""
    resume: bool = False

    def base_config(self) -> TrainConfig:
        """The resumed run's ``config.json``: the config the CLI's flags change."""
        path = self.run_dir / CONFIG_FILE
        if not path.is_file():
            raise ValueError(f"--resume: {self.run_dir} is not a run folder (it has no "
                             f"{CONFIG_FILE}).")
        return TrainConfig.load(path)


def plan_new_run(config: TrainConfig) -> RunPlan:
    """The folder of a new run; ``ValueError`` if it is a file or holds another run."""
    run_dir = Path(config.out) / (config.run_name or default_run_name(config))
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"Run folder {run_dir} is a file; choose another --run-name.")
    # a folder holding only a config (a run that failed before its first metrics) is reused
    kept = [f for f in run_dir.rglob("*") if f.is_file() and f.name != CONFIG_FILE] \
        if run_dir.exists() else []
    if kept:
        raise ValueError(f"Run folder {run_dir} already exists and is not empty; pass "
                         f"--resume {run_dir} to continue it (from its last checkpoint, or "
                         "from the start if it has none) or choose another --run-name.")
    return RunPlan(run_dir)


def plan_resume(path: str | Path) -> RunPlan:
    """What ``--resume path`` continues: a run folder (its newest readable checkpoint, or
    iteration 0 if it stopped before its first) or one checkpoint file. Reads only and logs
    nothing; every problem is a ``ValueError`` sentence."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"Nothing to resume: {path} does not exist.")
    if path.is_file():
        run_dir, states = path.parent.parent, [path]
    else:
        run_dir = path
        if not (run_dir / CONFIG_FILE).is_file() and not (run_dir / "checkpoints").is_dir():
            raise ValueError(f"{run_dir} is not a run folder (it has no {CONFIG_FILE} and no "
                             "checkpoints/).")
        states = sorted((run_dir / "checkpoints").glob("state_*.safetensors"), reverse=True)
    plan = RunPlan(run_dir, resume=True)
    for state in states:
        try:
            plan.iteration, plan.saved = read_checkpoint_config(state)
        except ValueError as exc:
            if path.is_file():
                raise
            plan.unreadable.append(state)
            plan.reasons.append(str(exc))
            continue
        plan.checkpoint = state
        return plan
    if plan.unreadable:
        raise ValueError(f"No readable checkpoint in {run_dir / 'checkpoints'} (all "
                         f"{len(plan.unreadable)} are damaged); move them away to start the run "
                         "again from iteration 0.")
    if (run_dir / CONFIG_FILE).is_file():
        plan.saved = TrainConfig.load(run_dir / CONFIG_FILE)
    return plan


def read_checkpoint_config(path: Path) -> tuple[int, TrainConfig | None]:
    """The iteration and run config a checkpoint holds; ``ValueError`` if it is unreadable."""
    _, meta = read_checkpoint(path)
    raw = (meta.get("info") or {}).get("config")
    try:
        saved = TrainConfig.from_dict(parse_json(raw, f"The config in {path}")) \
            if isinstance(raw, str) else None
    except ValueError:
        saved = None  # a config of another version: the weights' shapes still get checked
    return int(meta["iteration"]), saved


def check_resume(config: TrainConfig, plan: RunPlan) -> None:
    """Refuse, in one sentence, settings a resumed run cannot take."""
    if plan.saved is not None:
        changed = config.changes_refused_on_resume(plan.saved)
        if changed:
            raise ValueError(f"Cannot resume {plan.run_dir} with a changed {', '.join(changed)}: "
                             "these fix the policy's architecture, its algorithm or the "
                             "training stream; start a new run to change them (iterations, lr, "
                             "eval and checkpoint cadence and the like may change on resume).")
    if config.iterations < plan.iteration:
        raise ValueError(f"Cannot resume {plan.run_dir} with iterations={config.iterations}: "
                         f"its checkpoint is at iteration {plan.iteration} already.")


def plan_run(config: TrainConfig, resume: str | Path | RunPlan | None) -> RunPlan:
    """The plan of a new run (``resume`` None) or of a resumed one (a path for
    :func:`plan_resume`, or its plan), checked against ``config``; the main rank's job."""
    if resume is None:
        return plan_new_run(config)
    plan = resume if isinstance(resume, RunPlan) else plan_resume(resume)
    for reason in plan.reasons:
        log.warning("%s", reason)
    if plan.unreadable and plan.checkpoint is not None:
        log.warning("resuming from %s, the newest readable checkpoint (iteration %d)",
                    plan.checkpoint.name, plan.iteration)
    check_resume(config, plan)
    if plan.checkpoint is None:
        log.warning("%s has no checkpoint yet (it stopped before the first one): starting it "
                    "again from iteration 0", plan.run_dir)
    return plan


# -- preparing the folder ------------------------------------------------------------------
def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def truncate_metrics(path: Path, upto: int) -> None:
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


def prepare_run_dir(config: TrainConfig, plan: RunPlan, start: int) -> Path:
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
        for tmp in [*ckpt_dir.glob("*.tmp"), *run_dir.glob("*.tmp")]:  # half-written
            tmp.unlink()
        truncate_metrics(run_dir / "metrics.csv", start)
    write_atomic(run_dir / CONFIG_FILE, config.to_json())
    return run_dir


# -- writing during the run ----------------------------------------------------------------
def _reason(exc: BaseException) -> str:
    """The operating system's words for a failed write (safetensors wraps them in text)."""
    if isinstance(exc, OSError):
        return exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    text = " ".join(str(exc).split())
    found = re.search(r"([^:]+) \(os error \d+\)", text) \
        or re.search(r'message: "([^"]+)"', text)
    return found.group(1).strip() if found else (text or type(exc).__name__)


@contextmanager
def writing(run_dir: Path, what: str) -> Iterator[None]:
    """Turn a failed write of ``what`` (``OSError``, safetensors' ``SafetensorError``) into one
    :class:`RunFolderWriteError` sentence naming the run folder."""
    try:
        yield
    except (OSError, SafetensorError) as exc:
        states = sorted((run_dir / "checkpoints").glob("state_*.safetensors"))
        kept = f"its last complete checkpoint, {states[-1].name}, is intact" if states \
            else "it has no checkpoint yet (a resume starts it again)"
        raise RunFolderWriteError(
            f"Cannot write {what} in {run_dir}: {_reason(exc)}; {kept}. Free some space (or "
            f"restore write access), then continue with --resume {run_dir}.") from None


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def rotate_checkpoints(ckpt_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` states and checkpoint policy files."""
    for pattern in ("state_*.safetensors", "policy_*.safetensors"):
        files = sorted(ckpt_dir.glob(pattern))
        for old in files[:-keep] if keep > 0 else files:
            old.unlink()


def save_run_policy(path: Path, policy: nn.Module, backend: Backend, config: TrainConfig,
                    iteration: int, *, method: str,
                    global_schedule: torch.Tensor | None = None) -> None:
    """Write the policy in the node-loadable policy file format (``method``: the algorithm's;
    ``global_schedule``: see :func:`training.rl.engine.global_schedule`)."""
    training = {k: v for k, v in config.to_dict().items() if k != "progress"}
    training["iterations_done"] = iteration
    save_policy(path, policy, method=method, model_family=backend.model_family,
                training=training, reward=backend.reward_name, global_schedule=global_schedule)


class RunFolder:
    """The main rank's writer of a prepared run folder: metrics, checkpoints (rotated), policy
    files and samples; every failed write is one :class:`RunFolderWriteError`."""

    def __init__(self, run_dir: Path, config: TrainConfig, *, purge_step: int | None = None):
        self.run_dir, self.config = run_dir, config
        self.checkpoints = run_dir / "checkpoints"
        self.metrics = MetricsLog(run_dir, purge_step=purge_step)

    def state_path(self, iteration: int) -> Path:
        """The checkpoint file of ``iteration``."""
        return self.checkpoints / f"state_{iteration:06d}.safetensors"

    def has_checkpoint(self, iteration: int) -> bool:
        """Whether ``iteration`` has its checkpoint already."""
        return self.state_path(iteration).exists()

    def log_metrics(self, row: dict[str, Any]) -> None:
        """Append one iteration's row to ``metrics.csv`` (and TensorBoard)."""
        with writing(self.run_dir, f"metrics row {row.get('iteration')}"):
            self.metrics.write(row)

    def save_state(self, iteration: int, *, policy: nn.Module, optimizer: torch.optim.Optimizer,
                   rng: dict[str, torch.Tensor], world_size: int,
                   extra: tuple[dict[str, torch.Tensor], dict[str, Any]] | None) -> None:
        """The resumable checkpoint at ``iteration`` (see :func:`save_checkpoint`)."""
        path = self.state_path(iteration)
        with writing(self.run_dir, f"checkpoint {path.name}"):
            save_checkpoint(path, policy=policy, optimizer=optimizer, iteration=iteration,
                            rng=rng, info={"config": self.config.to_json(),
                                           "world_size": world_size}, extra=extra)

    def save_policy(self, iteration: int, policy: nn.Module, backend: Backend, *, method: str,
                    global_schedule: torch.Tensor | None, final: bool = False) -> Path:
        """The policy file at ``iteration``: beside its checkpoint, or ``policy.safetensors``
        (``final``)."""
        path = self.run_dir / "policy.safetensors" if final \
            else self.checkpoints / f"policy_{iteration:06d}.safetensors"
        with writing(self.run_dir, f"policy file {path.name}"):
            save_run_policy(path, policy, backend, self.config, iteration, method=method,
                            global_schedule=global_schedule)
        return path

    def rotate(self) -> None:
        """Keep the newest ``keep_checkpoints`` checkpoints."""
        with writing(self.run_dir, "checkpoints (removing old ones)"):
            rotate_checkpoints(self.checkpoints, self.config.keep_checkpoints)

    def write_samples(self, backend: Backend, policy: nn.Module, iteration: int) -> None:
        """The back-end's sample images at ``iteration`` (``samples/iter_<it>.png``)."""
        with writing(self.run_dir, f"sample images of iteration {iteration}"):
            backend.write_samples(policy, self.run_dir / "samples" / f"iter_{iteration:06d}.png")

    def close(self) -> None:
        """Close the metrics files."""
        self.metrics.close()


__all__ = ["RunFolder", "RunFolderWriteError", "RunPlan", "check_resume", "default_run_name",
           "plan_new_run", "plan_resume", "plan_run", "prepare_run_dir", "read_checkpoint_config",
           "rotate_checkpoints", "save_run_policy", "truncate_metrics", "writing"]
