"""What a calibration is run on: contexts, the model's denoiser, the time map, the budget.

A :class:`Problem` is a batch of ``N`` contexts (prompt x seed) of one model:

* ``start``: ``x`` at flow time 1 in the sampler's own space ``[N, ...]`` (ComfyUI: the noise
  after the model's ``noise_scaling`` at ``sigma_max``);
* ``denoise(x, sigma)``: the model's ``x0`` prediction for the whole batch (``sigma [N]`` in
  the model's sigmas; guidance included), differentiable in ``x`` (and in ``sigma`` where the
  model's time input is continuous);
* ``to_sigma(t)``: flow time ``t in [0, 1]`` -> the model's sigma (the bridge owns that map:
  :func:`comfy_bridge.sigmas.flow_to_model`; 0 stays 0);
* ``features``: what a per-image policy reads (``noise``, ``tokens``... or the testbed's
  ``noise`` / ``cond``), or None;
* ``identity``: a stable text naming the model, the contexts and the guidance (the teacher
  cache's key).

Every call of ``denoise`` is counted (:class:`Meter`): the budget is in *model calls per
context* (one batched forward over the ``N`` contexts is one call; a backward counts as two).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""``(x [N, ...], sigma [N]) -> x0 [N, ...]``."""


class Stopped(Exception):
    """Raised inside a calibration when its ``should_stop`` callback says so (the caller's
    interrupt, e.g. ComfyUI's); the partial result is discarded."""


@dataclass
class Problem:
    """A batch of contexts of one model (see the module docstring)."""

    start: Tensor
    denoise: Denoiser
    to_sigma: Callable[[Tensor], Tensor]
    features: dict[str, Tensor] | None = None
    identity: str = ""

    def __len__(self) -> int:
        return int(self.start.shape[0])

    def sigmas(self, flow: Tensor) -> Tensor:
        """Flow schedules ``[..., L+1]`` -> model sigmas (same shape, float64)."""
        return self.to_sigma(flow.double())


@dataclass
class Meter:
    """Counts model calls against a budget, reports progress, checks for a stop.

    ``progress(done, total)`` is called after every model call with calls done and the budget
    (what a ComfyUI progress bar or the CLI's log line shows); ``should_stop()`` is polled at
    the same place and raises :class:`Stopped` when true."""

    budget: float = float("inf")
    """Model calls allowed (per context, see the module docstring)."""
    minutes: float = float("inf")
    """Wall-clock limit in minutes."""
    progress: Callable[[int, int], None] | None = None
    should_stop: Callable[[], bool] | None = None
    calls: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def count(self, n: float = 1.0) -> None:
        """Record ``n`` model calls; report progress; raise :class:`Stopped` if asked to."""
        self.calls += n
        if self.progress is not None:
            total = int(self.budget) if self.budget != float("inf") else int(self.calls)
            self.progress(int(self.calls), max(total, int(self.calls)))
        if self.should_stop is not None and self.should_stop():
            raise Stopped("Calibration interrupted.")

    def left(self) -> float:
        """Model calls left in the budget (infinite without one)."""
        return self.budget - self.calls

    def out_of_time(self) -> bool:
        """Whether the budget (calls or minutes) is spent."""
        return self.calls >= self.budget or \
            (time.monotonic() - self.started) / 60.0 >= self.minutes

    def elapsed(self) -> float:
        """Seconds since the meter was made."""
        return time.monotonic() - self.started


def counted(problem: Problem, meter: Meter) -> Problem:
    """The same problem whose denoiser counts its calls on ``meter`` (a call under autograd
    counts the same; :func:`calibration.sampler.euler` counts its backward)."""
    inner = problem.denoise

    def denoise(x: Tensor, sigma: Tensor) -> Tensor:
        out = inner(x, sigma)
        meter.count(1.0)
        return out

    return Problem(start=problem.start, denoise=denoise, to_sigma=problem.to_sigma,
                   features=problem.features, identity=problem.identity)


def log_mse(x: Tensor, target: Tensor, floor: float = 1e-10) -> Tensor:
    """``log(mean((x - target)^2))`` per context ``[N]`` (the calibration loss: its mean is
    the mean PSNR up to ``-10 / ln 10``)."""
    mse = (x.double() - target.double()).pow(2).flatten(1).mean(1)
    return torch.log(mse.clamp_min(floor))


def psnr_from_mse(mse: Tensor, peak: float = 1.0) -> Tensor:
    """PSNR (dB) of per-context mean squared errors."""
    return 10.0 * torch.log10(peak**2 / mse.clamp_min(1e-20))


__all__ = ["Denoiser", "Stopped", "Problem", "Meter", "counted", "log_mse", "psnr_from_mse"]
