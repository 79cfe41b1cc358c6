"""Schedules for two-expert models (Wan 2.2 A14B): one step lands on the hand-over boundary.

Wan 2.2 A14B denoises with a high-noise expert down to a boundary sigma (0.875 for
text-to-video, 0.9 for image-to-video, in the model's sigma) and a low-noise expert below it;
in ComfyUI that is two ``SamplerCustomAdvanced`` nodes, the first given the schedule down to
the boundary, the second (no added noise) the rest. :func:`snap_to_boundary` makes one step of
a schedule land exactly on the boundary: the interior step nearest to it moves onto it (which
keeps the schedule strictly decreasing, since the boundary lies between that step's
neighbours), so where the hand-over falls within the budget follows the schedule itself — a
learned schedule decides it, and the model's default schedule gives its nearest step.
:func:`split_at_boundary` cuts the snapped schedule into the two experts' SIGMAS. The Split
at Expert Boundary node, the trainer's two-expert rollouts and the tests all call these, so
what is trained is what the graph runs. Pure torch; no ComfyUI.
"""

from __future__ import annotations

import torch


def snap_to_boundary(sigmas: torch.Tensor, boundary: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Schedules ``[..., L+1]`` (decreasing model sigmas) with the interior step nearest to
    ``boundary`` set to it exactly, and that step's index ``[...]`` (long). ``ValueError``, a
    plain sentence, unless ``sigmas[0] > boundary > sigmas[-1]`` and ``L >= 2``."""
    if sigmas.shape[-1] < 3:
        raise ValueError("A two-expert schedule needs at least 2 steps (one per expert).")
    b = float(boundary)
    first, last = sigmas[..., 0], sigmas[..., -1]
    if not bool((first > b).all()) or not bool((last < b).all()):
        raise ValueError(f"The schedule runs from sigma {float(first.min()):.4g} to "
                         f"{float(last.max()):.4g}; the experts' boundary {b:g} must lie "
                         "inside it (a schedule that starts below the boundary needs only the "
                         "low-noise expert).")
    interior = sigmas[..., 1:-1]
    index = (interior - b).abs().argmin(dim=-1, keepdim=True) + 1
    snapped = sigmas.clone()
    snapped.scatter_(-1, index, torch.full(index.shape, b, dtype=sigmas.dtype,
                                           device=sigmas.device))
    return snapped, index[..., 0]


def split_at_boundary(sigmas: torch.Tensor, boundary: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """One schedule ``[L+1]`` -> ``(high [k+1], low [L-k+1])``: the high-noise expert's
    SIGMAS down to the boundary and the low-noise expert's from it (both hold the boundary
    step; ``high[:-1]`` followed by ``low`` is :func:`snap_to_boundary`'s schedule)."""
    if sigmas.ndim != 1:
        raise ValueError(f"Expected one schedule [L+1], got {tuple(sigmas.shape)}.")
    snapped, index = snap_to_boundary(sigmas, boundary)
    k = int(index)
    return snapped[:k + 1].clone(), snapped[k:].clone()


__all__ = ["snap_to_boundary", "split_at_boundary"]
