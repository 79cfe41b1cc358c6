"""The testbed's part of ``eval`` (:mod:`training.eval`): its comparators, its squared-error
measure and its schedule plot."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ...plots import plot_schedules
from .comparators import comparator_schedules
from .mixture import DTYPE, Contexts, Testbed

log = logging.getLogger("learned_schedules.training")


def testbed_comparators(testbed: Testbed, steps: int, contexts: Contexts, *, seed: int = 10_000,
                        train_contexts: int = 512, fit_iters: int = 400, oracle: bool = True,
                        **_: Any) -> dict[str, torch.Tensor]:
    """uniform, sd3, flux, best_global (fitted on ``train_contexts`` contexts of the stream
    ``seed + 1``, disjoint from the held-out ``seed`` stream) and the multi-start oracle."""
    if train_contexts < 1 or fit_iters < 0:
        raise ValueError("--train-contexts must be >= 1 and --fit-iters >= 0.")
    train_ctx = testbed.contexts_from_seed(train_contexts, seed + 1)
    log.info("fitting comparators (best global on %d training contexts%s)", train_contexts,
             ", per-instance oracle" if oracle else "")
    return comparator_schedules(testbed, contexts, train_ctx, steps, oracle=oracle,
                                iters=fit_iters)


def squared_errors(testbed: Testbed, contexts: Contexts, schedules: torch.Tensor
                   ) -> torch.Tensor:
    """``||x_L - x*||^2`` per context for schedules ``[N, L+1]`` (the discretisation error)."""
    with torch.no_grad():
        return testbed.squared_error(contexts, schedules.to(DTYPE))


def write_schedule_plot(out_dir: Path, schedules: dict[str, torch.Tensor], steps: int
                        ) -> list[Path]:
    """``schedules.png``: the learned per-instance schedules and every global comparator."""
    learned = schedules.get("learned")
    comparators = {k: v[0] for k, v in schedules.items()
                   if k not in ("learned", "oracle") and v.ndim == 2}
    return [plot_schedules(out_dir / "schedules.png", comparators, instances=learned,
                           title=f"L = {steps}: learned per-instance schedules vs comparators")]
