"""A whole calibration: teacher, grid search, gradient refinement, per step count; with a
budget, progress and cancellation. What the CLI (``training/calibrate``) and the ComfyUI
adapter (:mod:`comfy_bridge.calibration`) call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from .fit import gradient_calls, refine_global
from .problem import Meter, Problem, counted, log_mse
from .sampler import euler
from .search import dp_calls, dp_search, grid_indices
from .teacher import Teacher, teacher_targets

log = logging.getLogger("learned_schedules.calibration")

SEARCHES = ("dp+gradient", "dp", "gradient")
"""How the global schedule is found: the grid search then a gradient refinement (default,
measured best: docs/calibrate.md), the grid search alone, or gradients from the model's
default schedule."""


@dataclass(frozen=True)
class CalibrationOptions:
    """What a global calibration does (all of it enters the cache key)."""

    steps: tuple[int, ...] = (8,)
    search: str = "dp+gradient"
    budget: float = 600.0
    """Model calls per context for everything (teacher included)."""
    minutes: float = float("inf")
    iterations: int = 150
    """At most this many gradient iterations per step count."""
    lr: float = 0.05
    checkpointing: bool = True
    dp_share: float = 0.5
    """Share of a step count's budget the grid search may use (the grid is thinned to fit)."""

    def check(self) -> None:
        """``ValueError`` with a plain sentence for options that cannot run."""
        if not self.steps or any(not isinstance(s, int) or s < 1 or s > 1000 for s in self.steps):
            raise ValueError(f"Steps must be integers from 1 to 1000, got {list(self.steps)}.")
        if self.search not in SEARCHES:
            raise ValueError(f"Unknown search {self.search!r}; expected one of "
                             f"{', '.join(SEARCHES)}.")
        if not self.budget > 0 or not self.minutes > 0:
            raise ValueError("The budget (model calls, minutes) must be positive.")

    def key(self) -> str:
        """A stable text of the options (part of a result cache key)."""
        d = asdict(self)
        d["minutes"] = None if d["minutes"] == float("inf") else d["minutes"]
        return json.dumps(d, sort_keys=True)


@dataclass
class StepResult:
    """One step count's calibrated schedule and how it was found."""

    flow: Tensor
    """Flow schedule ``[L+1]``."""
    loss_start: float
    """Mean log MSE of the search's start (the grid search's result, or the default)."""
    loss: float
    """Mean log MSE of the final schedule on the calibration contexts."""
    iterations: int = 0
    calls: float = 0.0


@dataclass
class CalibrationResult:
    """Schedules by step count, the teacher, the cost."""

    schedules: dict[int, StepResult] = field(default_factory=dict)
    teacher: Teacher | None = None
    calls: float = 0.0
    seconds: float = 0.0
    key: str = ""
    """The caller's cache key of this result (the ComfyUI adapter's ``calibration_key``)."""
    extra: Any = None
    """What a caller's follow-up in the same model context returned (e.g. a per-image fit)."""


def calibrate_global(problem: Problem, grid: Tensor, options: CalibrationOptions,
                     default_flow: Callable[[int], Tensor] | None = None,
                     cache_dir: str | None = None,
                     progress: Callable[[int, int], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> CalibrationResult:
    """Calibrate one global schedule per step count against the teacher run on ``grid``
    (flow times ``[T+1]``). ``default_flow(L)``: the model's default schedule (the start of
    a ``gradient``-only search). ``progress(done, total)`` in model calls; ``should_stop()``
    polled after every call (raises :class:`.problem.Stopped`)."""
    options.check()
    meter = Meter(budget=options.budget, minutes=options.minutes, progress=progress,
                  should_stop=should_stop)
    teacher = teacher_targets(problem, grid, cache_dir, meter)
    work = counted(problem, meter)
    result = CalibrationResult(teacher=teacher)
    for n, steps in enumerate(options.steps):
        share = meter.left() / (len(options.steps) - n)
        before = meter.calls
        starts = _starts(work, teacher, steps, options, share, default_flow)
        (flow, loss), iters = starts[0], 0
        loss0 = loss
        if options.search != "dp":
            # each start gets an equal part of what is left; the best result is kept (the
            # grid search's greedy targets can lead into a worse basin than the default's:
            # docs/calibrate.md, the testbed at L = 4)
            for k, (first, first_loss) in enumerate(starts):
                until = meter.calls + (share - (meter.calls - before)) / (len(starts) - k)
                iterations = min(options.iterations, int(
                    (until - meter.calls) // gradient_calls(steps, options.checkpointing)))
                got, got_loss, n_iter = refine_global(
                    work, teacher, first, meter, iterations=iterations, lr=options.lr,
                    checkpointing=options.checkpointing, until=until)
                iters += n_iter
                if min(got_loss, first_loss) < loss:
                    flow, loss = (got, got_loss) if got_loss <= first_loss else \
                        (first, first_loss)
        result.schedules[steps] = StepResult(flow=flow.double().cpu(), loss_start=loss0,
                                             loss=loss, iterations=iters,
                                             calls=meter.calls - before)
        log.info("calibrated L=%d: mean log-MSE %.4f -> %.4f (%d gradient iterations, %.0f "
                 "calls)", steps, loss0, loss, iters, meter.calls - before)
    result.calls, result.seconds = meter.calls, meter.elapsed()
    return result


def _default(steps: int, default_flow: Callable[[int], Tensor] | None) -> Tensor:
    if default_flow is None:
        return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return default_flow(steps).double()


def _starts(problem: Problem, teacher: Teacher, steps: int, options: CalibrationOptions,
            share: float, default_flow: Callable[[int], Tensor] | None
            ) -> list[tuple[Tensor, float]]:
    """The refinement's starts with their mean log MSE, the first one the reported start:
    ``dp``: the grid search's schedule; ``gradient``: the model's default schedule;
    ``dp+gradient``: both, the default replaced by the uniform schedule when that scores
    better (``L`` calls each)."""
    def scored(flow: Tensor) -> tuple[Tensor, float]:
        with torch.no_grad():
            out = euler(problem, problem.sigmas(flow).to(problem.start.device))
        return flow.double(), float(log_mse(out, teacher.final).mean())

    if options.search == "gradient":
        return [scored(_default(steps, default_flow))]
    dp_budget = share if options.search == "dp" else share * options.dp_share
    idx = grid_indices(teacher.steps, steps, dp_budget)
    if len(idx) - 1 < teacher.steps:
        log.info("grid search for L=%d on %d of the teacher's %d grid steps (%d calls)", steps,
                 len(idx) - 1, teacher.steps, dp_calls(len(idx) - 1, steps))
    found = [dp_search(problem, teacher, steps, idx)]
    if options.search == "dp+gradient":
        others = [scored(_default(steps, default_flow))]
        if default_flow is not None:
            others.append(scored(_default(steps, None)))
        found.append(min(others, key=lambda pair: pair[1]))
    return found


__all__ = ["SEARCHES", "CalibrationOptions", "StepResult", "CalibrationResult",
           "calibrate_global"]
