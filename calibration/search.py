"""One global schedule by dynamic programming over the teacher's grid (OSS-style, forwards
only).

The student's state after step ``i`` sits on a grid index ``j`` of the teacher's grid (flow
times ``g_0 = 1 > ... > g_T = 0``). From every reachable state ``(i - 1, k)`` one batched
model call gives ``D = x0(x, g_k)``; an Euler jump to any later index ``j`` costs nothing more
(``x + (s_j - s_k) (x - D) / s_k``) and is scored by the distance to the teacher's state at
``j`` (mean over contexts of ``log MSE``: the mean PSNR). Each ``(i, j)`` keeps its best
predecessor and its state; step ``L`` must land on ``g_T = 0``, where the jump returns ``D``
and the score is the distance to the many-step result. Calls: ``1 + (L - 1)(T' - L + 1)``
for a grid of ``T'`` steps (the teacher's grid, thinned by ``stride`` to fit a budget).
Greedy in the intermediate targets, as OSS: a gradient refinement (:mod:`.fit`) follows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .problem import Problem, log_mse
from .teacher import Teacher


def dp_calls(grid_steps: int, steps: int) -> int:
    """Model calls of :func:`dp_search` on a grid of ``grid_steps`` steps."""
    return 1 + (steps - 1) * (grid_steps - steps + 1)


def grid_indices(teacher_steps: int, steps: int, budget: float) -> Tensor:
    """The teacher grid's indices the search uses: all of them, or every ``stride``-th (and
    the last) when the full search would cost more than ``budget`` calls."""
    stride = 1
    while True:
        idx = torch.arange(0, teacher_steps + 1, stride)
        if int(idx[-1]) != teacher_steps:
            idx = torch.cat([idx, torch.tensor([teacher_steps])])
        if dp_calls(len(idx) - 1, steps) <= budget or len(idx) - 1 <= steps:
            return idx
        stride += 1


@torch.no_grad()
def dp_search(problem: Problem, teacher: Teacher, steps: int,
              indices: Tensor | None = None) -> tuple[Tensor, float]:
    """The best ``steps``-step schedule on the teacher's grid: ``(flow schedule [L+1], its
    mean log MSE to the many-step result)``. ``indices``: the grid indices to use (default
    all; :func:`grid_indices`)."""
    if indices is None:
        indices = torch.arange(teacher.steps + 1)
    g = len(indices) - 1
    if g < steps:
        raise ValueError(f"The teacher's grid has {g} steps; it needs at least {steps} to "
                         f"search a {steps}-step schedule (raise the teacher steps).")
    flow = teacher.grid[indices]
    sig = problem.sigmas(flow).to(problem.start.device)
    targets = teacher.states[indices]
    n = len(problem)
    states: dict[int, Tensor] = {0: problem.start}
    back: list[dict[int, int]] = []
    cost: dict[int, float] = {}
    for i in range(1, steps + 1):
        last = g if i == steps else g - (steps - i)
        best: dict[int, tuple[float, int, Tensor]] = {}
        for k in sorted(states):
            x = states[k]
            d = problem.denoise(x, sig[k].expand(n))
            js = [g] if i == steps else range(k + 1, last + 1)
            for j in js:
                ratio = float((sig[j] - sig[k]) / sig[k])
                y = x + ratio * (x - d)
                c = float(log_mse(y, targets[j]).mean())
                if j not in best or c < best[j][0]:
                    best[j] = (c, k, y)
        states = {j: v[2] for j, v in best.items()}
        cost = {j: v[0] for j, v in best.items()}
        back.append({j: v[1] for j, v in best.items()})
    path = [g]
    for level in reversed(back):
        path.append(level[path[-1]])
    path.reverse()
    return flow[path].clone(), cost[g]


__all__ = ["dp_calls", "grid_indices", "dp_search"]
