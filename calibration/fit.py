"""Teacher matching by gradients through the few-step sampler.

* :func:`refine_global`: one global schedule (LD3-style): the ``L + 1`` simplex segments of
  the flow schedule as a softmax of free logits, started at a given schedule (the grid
  search's), Adam on the mean ``log MSE`` between the few-step result and the many-step
  result; the best schedule seen is kept (never worse than the start).
* :func:`fit_per_image`: a per-image policy (INDIS-style): a
  :class:`policies.dirichlet.DirichletPolicy` whose *mean* schedule (what the node deploys) is
  a function of each context's features, trained on the same loss, started at the global
  schedule. A quarter of the contexts is held out of the gradient for early stopping (the
  same batched forward scores them: no extra model call).

Gradient cost per iteration: ``L`` forwards, ``L`` recomputed forwards (activation
checkpointing) and a backward (counted as ``2 L`` calls). The gradient reaches the sigmas
through the Euler coefficients and, where the model's time input is continuous (flow
families), through the network's time embedding; discrete-time models (SD 1.x / SDXL) round
sigma to a table index, so there the gradient sees the coefficients only.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import Tensor, nn

from ..policies.dirichlet import DirichletPolicy, to_schedule
from ..policies.schedule import increments_to_schedule, schedule_to_increments
from .problem import Meter, Problem, counted, log_mse
from .sampler import euler
from .teacher import Teacher

log = logging.getLogger("learned_schedules.calibration")


def gradient_calls(steps: int, checkpointing: bool = True) -> int:
    """Model calls of one gradient iteration (forward, recompute, backward = 2)."""
    return steps * (4 if checkpointing else 3)


def _logits(flow: Tensor) -> Tensor:
    seg = schedule_to_increments(flow.double()).clamp_min(1e-6)
    return torch.log(seg / seg.sum())


def _flow(logits: Tensor) -> Tensor:
    return increments_to_schedule(torch.softmax(logits, -1))


def refine_global(problem: Problem, teacher: Teacher, start: Tensor, meter: Meter, *,
                  iterations: int = 200, lr: float = 0.05, checkpointing: bool = True,
                  until: float = float("inf")) -> tuple[Tensor, float, int]:
    """Refine the flow schedule ``start [L+1]``: ``(best schedule, its mean log MSE,
    iterations run)``; stops early when the meter's budget is spent or its calls would pass
    ``until``."""
    steps = start.shape[0] - 1
    logits = _logits(start).clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    target = teacher.final
    best_flow, best = start.double().clone(), float("inf")
    done = 0
    for done in range(1, iterations + 1):
        cost = gradient_calls(steps, checkpointing)
        if meter.out_of_time() or meter.left() < cost or meter.calls + cost > until:
            done -= 1
            break
        flow = _flow(logits)
        out = euler(problem, problem.sigmas(flow).to(problem.start.device),
                    checkpoint_steps=checkpointing)
        loss = log_mse(out, target).mean()
        if float(loss.detach()) < best:
            best, best_flow = float(loss.detach()), flow.detach().clone()
        opt.zero_grad()
        loss.backward()
        meter.count(2.0 * steps)
        opt.step()
    return best_flow, best, done


def per_image_policy(encoder: nn.Module, global_flow: Tensor, hidden: int = 64
                     ) -> DirichletPolicy:
    """A Dirichlet policy (``scheduled`` concentration: its mean is ``softmax(head)``) whose
    mean schedule starts at ``global_flow`` for every context."""
    steps = global_flow.shape[0] - 1
    policy = DirichletPolicy.for_training(encoder, steps, hidden=hidden,
                                          concentration="scheduled")
    policy.init_mean(schedule_to_increments(global_flow.double()).clamp_min(1e-6).float())
    return policy


def fit_per_image(problem: Problem, teacher: Teacher, policy: DirichletPolicy, meter: Meter,
                  *, iterations: int = 200, lr: float = 1e-3, weight_decay: float = 1e-4,
                  checkpointing: bool = True, seed: int = 0) -> tuple[DirichletPolicy, dict]:
    """Train ``policy``'s mean schedule per context; returns the policy at its best
    held-out-quarter loss and a summary (losses at the start and best, iterations).
    ``problem`` is the plain one: its model calls are counted here on ``meter``."""
    if problem.features is None:
        raise ValueError("A per-image calibration needs the contexts' features.")
    n = len(problem)
    if n < 4:
        raise ValueError("A per-image calibration needs at least 4 contexts.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val = torch.zeros(n, dtype=torch.bool)
    val[perm[: max(1, n // 4)]] = True
    device = problem.start.device
    val = val.to(device)
    problem = counted(problem, meter)
    feats = {k: v.to(device) for k, v in problem.features.items()}
    policy.to(device).train()
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=weight_decay)
    steps = policy.steps
    best_state, best_val, first_val = copy.deepcopy(policy.state_dict()), float("inf"), None
    done = 0
    for done in range(1, iterations + 1):
        if meter.out_of_time() or meter.left() < gradient_calls(steps, checkpointing):
            done -= 1
            break
        flow = to_schedule(policy.mean_segments(feats), policy.min_segment)
        out = euler(problem, problem.sigmas(flow).to(device), checkpoint_steps=checkpointing)
        per = log_mse(out, teacher.final)
        val_loss = float(per[val].mean().detach())
        first_val = val_loss if first_val is None else first_val
        if val_loss < best_val:
            best_val, best_state = val_loss, copy.deepcopy(policy.state_dict())
        loss = per[~val].mean()
        opt.zero_grad()
        loss.backward()
        meter.count(2.0 * steps)
        opt.step()
    policy.load_state_dict(best_state)
    policy.eval()
    return policy, {"val_start": first_val, "val_best": best_val, "iterations": done}


__all__ = ["gradient_calls", "refine_global", "per_image_policy", "fit_per_image"]
