"""The teacher: the model's own many-step Euler run from the same start, computed once and
cached on disk.

Its grid (flow times ``[T+1]`` from 1 to 0: the model's default schedule at ``T`` steps, as
the back-end gives it) is also the search grid of :mod:`.search`, and its states on that grid
are the search's targets; its last state is the target of every fit and of the evaluation
(the distance to the many-step result).

The cache is one safetensors file per key (never pickle): ``sha256`` of the problem's
``identity`` (model, prompts, seeds, guidance), the sampler and the grid (so the teacher's
steps). A second calibration of the same model and contexts reads it instead of running the
``T`` model calls.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from .problem import Meter, Problem
from .sampler import trajectory

log = logging.getLogger("learned_schedules.calibration")


@dataclass
class Teacher:
    """The many-step run: ``grid`` flow times ``[T+1]``, ``states [T+1, N, ...]``."""

    grid: Tensor
    states: Tensor
    from_cache: bool = False
    """Whether the states were read from the disk cache."""

    @property
    def final(self) -> Tensor:
        """The many-step result ``[N, ...]``."""
        return self.states[-1]

    @property
    def steps(self) -> int:
        return int(self.grid.shape[0]) - 1


def teacher_key(identity: str, grid: Tensor, sampler: str = "euler") -> str:
    """The cache key of a teacher run: model + contexts (``identity``), sampler and grid."""
    h = hashlib.sha256()
    h.update(identity.encode())
    h.update(sampler.encode())
    h.update(grid.double().cpu().numpy().round(12).tobytes())
    return h.hexdigest()[:32]


def _check_grid(grid: Tensor) -> None:
    if grid.ndim != 1 or grid.numel() < 3 or float(grid[0]) != 1.0 or float(grid[-1]) != 0.0 \
            or not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError("The teacher's grid must be flow times from 1 down to 0, strictly "
                         "decreasing, with at least 2 steps.")


def teacher_targets(problem: Problem, grid: Tensor, cache_dir: str | Path | None = None,
                    meter: Meter | None = None) -> Teacher:
    """The teacher's states on ``grid`` (flow times), read from ``cache_dir`` when a run with
    the same key is there, else computed (``T`` model calls) and written there."""
    grid = grid.double().cpu()
    _check_grid(grid)
    path = None
    if cache_dir is not None and problem.identity:
        path = Path(cache_dir) / f"teacher_{teacher_key(problem.identity, grid)}.safetensors"
        if path.is_file():
            try:
                data = load_file(str(path))
                states = data["states"].to(problem.start.device)
                if states.shape[1:] == problem.start.shape and torch.equal(
                        data["grid"], grid):
                    log.info("teacher targets: cache hit (%s)", path.name)
                    return Teacher(grid=grid, states=states, from_cache=True)
            except Exception as exc:  # a damaged cache file is recomputed
                log.warning("teacher cache %s unreadable (%s); recomputing", path.name, exc)
    sigmas = problem.sigmas(grid).to(problem.start.device)
    states = torch.stack(trajectory(problem, sigmas)).detach()
    if meter is not None:
        meter.count(float(grid.shape[0] - 1))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"grid": grid, "states": states.cpu().contiguous()}, str(tmp),
                  metadata={"identity": problem.identity[:4000]})
        os.replace(tmp, path)
    return Teacher(grid=grid, states=states)


__all__ = ["Teacher", "teacher_key", "teacher_targets"]
