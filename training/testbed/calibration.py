"""The analytic testbed as a calibration problem (:mod:`calibration`): its exact velocity as
the denoiser (``x0 = x - t v``, flow time = sigma), the contexts' noise as the start and
``(noise, cond)`` as the per-image features; the teacher's grid is dense near the data end
(``t_k = (1 - k / T)^2``), where the mixture's flow bends."""

from __future__ import annotations

import torch

from ...calibration.problem import Problem
from .mixture import DTYPE, Contexts, Testbed


def calibration_problem(testbed: Testbed, contexts: Contexts, identity: str = "") -> Problem:
    """The calibration problem of testbed contexts (float64)."""
    classes = contexts.classes

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        t = sigma.to(x.dtype)
        return x - t[:, None] * testbed.velocity(x, t, classes)

    seeds = contexts.noise.double().numpy().round(9).tobytes()
    import hashlib

    ident = identity or "testbed|" + hashlib.sha256(
        testbed.means.numpy().tobytes() + seeds + classes.numpy().tobytes()).hexdigest()
    return Problem(start=contexts.noise.to(DTYPE), denoise=denoise,
                   to_sigma=lambda t: t.double(),
                   features={"noise": contexts.noise.float(), "cond": contexts.cond.float()},
                   identity=ident)


def calibration_grid(steps: int = 64) -> torch.Tensor:
    """The teacher's grid on the testbed: ``(1 - k / T)^2``, ``T + 1`` flow times."""
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64) ** 2


__all__ = ["calibration_problem", "calibration_grid"]
