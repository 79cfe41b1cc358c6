"""Comparator schedules on the analytic testbed.

* ``uniform``: ``[1, (L-1)/L, ..., 0]``;
* ``sd3``: ComfyUI's ``simple`` schedule with SD3's default shift 3;
* ``flux``: Flux-dev's resolution shift at 1024x1024 (mu = 1.15);
* ``best_global``: ONE schedule fitted by Adam through the exact, differentiable Euler sampler
  on training contexts (our stand-in for AYS/OSS-style optimised global schedules);
* ``oracle``: a schedule fitted per held-out context the same way, from several starts with the
  best kept (the ceiling of any instance-level policy that only changes the timesteps; a lower
  bound on it, since gradient fitting may miss the global optimum).

Fitted schedules are parameterised by softmax logits over the ``L + 1`` segments of
:mod:`policies.schedule`, so they are always valid (start at 1, end at 0, decreasing).
"""

from __future__ import annotations

import logging

import torch

from ...policies.schedule import (
    clamp_increments,
    flux_shift_schedule,
    increments_to_schedule,
    schedule_to_increments,
    shifted_schedule,
    uniform_schedule,
)
from .mixture import DTYPE, Contexts, Testbed

log = logging.getLogger("learned_schedules.training")

MIN_SEGMENT = 1e-4


def fixed_schedules(steps: int) -> dict[str, torch.Tensor]:
    """The hand-made comparators for a budget of ``steps``."""
    return {"uniform": uniform_schedule(steps, DTYPE),
            "sd3": shifted_schedule(steps, 3.0, DTYPE),
            "flux": flux_shift_schedule(steps, dtype=DTYPE)}


def _logits_to_schedule(logits: torch.Tensor) -> torch.Tensor:
    return increments_to_schedule(clamp_increments(torch.softmax(logits, -1), MIN_SEGMENT))


def _init_logits(init: torch.Tensor) -> torch.Tensor:
    return torch.log(schedule_to_increments(init.to(DTYPE)).clamp_min(1e-6))


def fit_schedules(testbed: Testbed, contexts: Contexts, init: torch.Tensor, *,
                  per_context: bool, iters: int = 300, lr: float = 0.05,
                  target: torch.Tensor | None = None) -> torch.Tensor:
    """Fit schedules by Adam on the testbed's reward through the exact Euler sampler.

    ``per_context=False``: one shared schedule ``[L+1]`` maximising the mean reward.
    ``per_context=True``: one schedule per context ``[N, L+1]`` (contexts are independent, so
    the summed reward is maximised). ``init``: ``[L+1]`` or ``[N, L+1]`` starting point. The
    best iterate (by the objective) is returned, never a worse one than the start.
    """
    if target is None and testbed.reward_name == "fidelity":
        target = testbed.target_of(contexts)
    n = len(contexts)
    logits = _init_logits(init)
    if per_context and logits.ndim == 1:
        logits = logits.expand(n, -1)
    logits = logits.clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    best_val = None
    best = None
    for _ in range(iters + 1):
        sched = _logits_to_schedule(logits)
        r = testbed.sample_and_score(contexts, sched, target)
        with torch.no_grad():
            if per_context:
                cur = r.detach()
                if best_val is None:
                    best_val, best = cur.clone(), sched.detach().clone()
                else:
                    better = cur > best_val
                    best_val = torch.where(better, cur, best_val)
                    best[better] = sched.detach()[better]
            else:
                cur = float(r.mean())
                if best_val is None or cur > best_val:
                    best_val, best = cur, sched.detach().clone()
        loss = -r.sum() if per_context else -r.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return best


def best_global_schedule(testbed: Testbed, train_contexts: Contexts, steps: int,
                         iters: int = 400, lr: float = 0.05,
                         starts: tuple[str, ...] = ("uniform", "sd3", "flux")) -> torch.Tensor:
    """The single schedule maximising the mean training reward (best of several starts)."""
    target = testbed.target_of(train_contexts) if testbed.reward_name == "fidelity" else None
    best, best_val = None, -float("inf")
    for name, init in fixed_schedules(steps).items():
        if name not in starts:
            continue
        sched = fit_schedules(testbed, train_contexts, init, per_context=False, iters=iters,
                              lr=lr, target=target)
        val = float(testbed.sample_and_score(train_contexts, sched, target).mean())
        log.debug("best_global from %s: %.4f", name, val)
        if val > best_val:
            best, best_val = sched, val
    return best


def oracle_schedules(testbed: Testbed, contexts: Contexts, steps: int,
                     init: torch.Tensor | None = None, iters: int = 300, lr: float = 0.05,
                     starts: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
    """Per-context fitted schedules ``[N, L+1]``: the instance-level ceiling, multi-start.

    Each context's schedule is fitted from every start (``init`` — typically the best global
    schedule — and the uniform schedule by default, or the given ``starts``), and the best
    result per context is kept. A single start stops at local optima (4-8% below the best
    multi-start value on some configurations). Gradient fitting can still miss the global
    optimum, so the oracle is a **lower bound** on the true per-instance ceiling.
    """
    if starts is None:
        starts = (uniform_schedule(steps, DTYPE),) if init is None else (
            init, uniform_schedule(steps, DTYPE))
    target = testbed.target_of(contexts) if testbed.reward_name == "fidelity" else None
    best, best_val = None, None
    for start in starts:
        sched = fit_schedules(testbed, contexts, start, per_context=True, iters=iters, lr=lr,
                              target=target)
        with torch.no_grad():
            val = testbed.sample_and_score(contexts, sched, target)
        if best is None:
            best, best_val = sched, val
        else:
            better = val > best_val
            best = torch.where(better[:, None], sched, best)
            best_val = torch.where(better, val, best_val)
    return best


def comparator_schedules(testbed: Testbed, held_out: Contexts, train_contexts: Contexts,
                         steps: int, oracle: bool = True, iters: int = 400
                         ) -> dict[str, torch.Tensor]:
    """Every comparator's schedule(s): ``[L+1]`` for global ones, ``[N, L+1]`` for the oracle."""
    out = fixed_schedules(steps)
    out["best_global"] = best_global_schedule(testbed, train_contexts, steps, iters=iters)
    if oracle:
        out["oracle"] = oracle_schedules(testbed, held_out, steps, init=out["best_global"],
                                         iters=iters)
    return out
