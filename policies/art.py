"""ART's schedule policies: a learned clock speed, deployed as a fixed schedule.

ART (adaptive reparameterised time, ``../shared/REFERENCE.md`` section 2) learns the speed
``theta = dpsi/ds`` of a clock ``psi`` on a uniform grid ``s_k = k T / K``; the sampler's flow
time is ``sigma = 1 - psi / T``. Two registered kinds:

* ``art-clock`` (:class:`ARTClockPolicy`, the trained actor's mean, instance level): a 3-layer
  Softplus MLP ``mu(s, psi, c)`` over the grid time, the clock and (optionally) an encoding ``c``
  of the context's cheap features (initial noise, prompt). Unlike the paper's actor it does
  not read the sample ``x_s``: a clock that needs only the context can be unrolled before
  sampling, so it is kept per instance at inference with no model call (one tiny MLP per grid
  point). Its schedule for ``L`` steps reads the unrolled, normalised clock at ``s = j T / L``.
* ``art-global`` (:class:`ARTGlobalClock`, the paper's deployment): one fixed schedule, the
  distilled clock (mean ``theta(s)`` over contexts, normalised so the clock ends at ``T``;
  :func:`distil_global_clock`), stored as ``L + 1`` flow times.

Both are deterministic one-shot policies (:class:`policies.contract.OneShotPolicy`; ``mode``
``mean`` and ``sample`` agree) and nothing more: ART trains the clock with its own actor-critic
(:mod:`training.rl.algorithms.art`, which reads :meth:`ARTClockPolicy.mean_speed`), so they
have no sampling distribution. Other step counts come from **log-linear** interpolation of the
``L``-step schedule (:func:`resample_loglinear`; the ``resample`` method the contract's
resampling check uses), as in the paper.

Pure torch; no ComfyUI and no trainer import.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .checks import check_sizes
from .contract import Features, features_argument, kind_options, register_policy
from .encoders import build_encoder
from .schedule import (
    DEFAULT_MIN_STEP,
    increments_to_schedule,
    resample_schedule,
    uniform_schedule,
)


def resample_loglinear(schedule: Tensor, steps: int) -> Tensor:
    """Resample flow schedules ``[..., n+1]`` to ``steps`` steps with ``log t`` interpolated
    linearly in the normalised step position (ART's rule for other step counts; see
    :func:`policies.schedule.resample_schedule`)."""
    return resample_schedule(schedule, steps, interpolation="loglinear")


def clock_to_schedule(psi: Tensor, steps: int) -> Tensor:
    """Clock values ``psi [..., K+1]`` on a uniform grid (increasing from 0) -> the flow
    schedule ``[..., steps+1]`` read at ``s = j / steps`` of the normalised clock (linear
    between grid points, exact for a piecewise-constant speed), from 1 down to 0."""
    k = psi.shape[-1] - 1
    flat = psi.reshape(-1, k + 1).to(torch.float64)
    flat = (flat - flat[:, :1]) / (flat[:, -1:] - flat[:, :1])
    pos = torch.linspace(0.0, float(k), steps + 1, dtype=torch.float64)
    idx = torch.clamp(pos.floor().long(), 0, k - 1)
    w = pos - idx
    read = flat[:, idx] * (1 - w) + flat[:, idx + 1] * w
    out = 1.0 - read
    out[:, 0], out[:, -1] = 1.0, 0.0
    return out.reshape(*psi.shape[:-1], steps + 1).to(psi.dtype)


FREQUENCIES = 4
"""Sinusoidal frequencies of the time and clock embedding (:func:`time_features`)."""
TIME_FEATURES = 3 + 4 * FREQUENCIES


def time_features(s: Tensor, psi: Tensor, horizon: float) -> Tensor:
    """What the actor and the critic read of ``(s, psi)`` ``[...]`` -> ``[..., TIME_FEATURES]``:
    both normalised, ``-log sigma / 7`` (sigma = 1 - psi / T floored at 1e-3: resolution near
    the data end, where the error signal changes fastest) and sines / cosines of
    ``pi k s / T`` and ``pi k psi / T`` (k = 1..4). A plain MLP of ``(s, psi)`` learns only a
    nearly linear clock in a few thousand noisy updates; the embedding lets it bend."""
    u, p = s / horizon, psi / horizon
    sigma = (1.0 - p).clamp(1e-3, 1.0)
    k = torch.arange(1, FREQUENCIES + 1, dtype=u.dtype, device=u.device) * math.pi
    return torch.cat([u[..., None], p[..., None], -torch.log(sigma)[..., None] / 7.0,
                      torch.sin(u[..., None] * k), torch.cos(u[..., None] * k),
                      torch.sin(p[..., None] * k), torch.cos(p[..., None] * k)], -1)


def _mlp(inputs: int, width: int, layers: int, outputs: int = 1) -> nn.Sequential:
    """``layers`` linear layers of width ``width`` with Softplus between them (the paper's
    3-layer, width-128 Softplus MLPs)."""
    mods: list[nn.Module] = []
    for i in range(layers - 1):
        mods += [nn.Linear(inputs if i == 0 else width, width), nn.Softplus()]
    mods.append(nn.Linear(width if layers > 1 else inputs, outputs))
    return nn.Sequential(*mods)


class _Clock(nn.Module):
    """What both clocks share: ART's rule for other step counts."""

    steps: int

    def resample(self, schedule: Tensor, steps: int) -> Tensor:
        """How this kind reaches another step count from its ``L``-step schedule."""
        return resample_loglinear(schedule, steps)


def _batch(features: Features) -> int:
    for v in features.values():
        return int(v.shape[0])
    return 1


@register_policy
class ARTGlobalClock(_Clock):
    """The distilled clock: one fixed flow schedule ``[L+1]`` for every context (buffers
    only). Other step counts: :func:`resample_loglinear`."""

    kind = "art-global"

    def __init__(self, steps: int, flow: Tensor | None = None):
        super().__init__()
        check_sizes("ARTGlobalClock", steps=steps)
        self.steps = steps
        self.register_buffer("flow", uniform_schedule(steps) if flow is None
                             else torch.as_tensor(flow, dtype=torch.float32).clone())
        if self.flow.shape != (steps + 1,):
            raise ValueError(f"ARTGlobalClock needs {steps + 1} flow times, got "
                             f"{tuple(self.flow.shape)}.")

    def feature_dims(self) -> dict[str, list[int]]:
        return {}

    def schedule(self, features: Features | str | None = None, steps: int | None = None,
                 mode: str = "mean", **legacy: Tensor) -> Tensor:
        """The fixed schedule for every context ``[B, steps+1]`` (``mode`` ``mean`` and
        ``sample`` agree: the clock is deterministic)."""
        features, mode = features_argument(features, mode, legacy)
        if mode not in ("mean", "sample"):
            raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}.")
        sched = self.flow[None, :].expand(_batch(features), -1).clone()
        if steps is not None and steps != self.steps:
            sched = self.resample(sched, steps)
        return sched

    def config(self) -> dict[str, Any]:
        return {"policy": self.kind, "steps": self.steps}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ARTGlobalClock:
        cfg = kind_options(cls, config)
        return cls(**cfg)

    @classmethod
    def for_training(cls, encoder: nn.Module | None, steps: int, *, hidden: int = 0,
                     init_segments: Tensor | None = None, **options: Any) -> ARTGlobalClock:
        """A fixed clock at ``init_segments`` (else uniform); the encoder is not used."""
        flow = None if init_segments is None else increments_to_schedule(
            torch.as_tensor(init_segments, dtype=torch.float64))
        return cls(steps, flow)


@register_policy
class ARTClockPolicy(_Clock):
    """The actor's mean clock speed ``mu(s, psi, c)``, unrolled per context (instance level).

    Args:
        encoder: a :mod:`policies.encoders` module for the context features, or None for a
            clock of ``(s, psi)`` only.
        steps: the sampler budget ``L`` of the deployed schedule.
        width, layers: the MLP (the paper: 128, 3).
        grid: ``K``, points of the time grid (the paper: 100).
        horizon: ``T``, the clock's total time (``psi(T) = T``).
        min_speed: floor on the unrolled speed (a deployed clock must move forward).
        max_speed: ceiling on the mean speed (an exploring clock that races past the end of
            the flow meets the large error signal at the floor of sigma and destabilises the
            critic).
    """

    kind = "art-clock"

    def __init__(self, encoder: nn.Module | None, steps: int, width: int = 128, layers: int = 3,
                 grid: int = 100, horizon: float = 1.0, min_speed: float = 1e-3,
                 max_speed: float = 5.0):
        super().__init__()
        check_sizes("ARTClockPolicy", steps=steps, width=width, layers=layers, grid=grid)
        if encoder is not None and not hasattr(encoder, "out_dim"):
            raise ValueError("ARTClockPolicy needs an encoder from policies.encoders (or None).")
        if not (math.isfinite(horizon) and horizon > 0 and 0 < min_speed < 1 < max_speed
                and math.isfinite(max_speed)):
            raise ValueError("ARTClockPolicy: horizon must be > 0, min_speed in (0, 1) and "
                             "max_speed a finite number > 1.")
        self.encoder = encoder
        self.steps, self.width, self.layers, self.grid = steps, width, layers, grid
        self.horizon, self.min_speed = float(horizon), float(min_speed)
        self.max_speed = float(max_speed)
        extra = encoder.out_dim if encoder is not None else 0
        self.actor = _mlp(TIME_FEATURES + extra, width, layers)
        last = self.actor[-1]
        nn.init.zeros_(last.weight)  # starts at the uniform clock, theta = exp(0) = 1
        nn.init.zeros_(last.bias)

    # -- the actor ------------------------------------------------------------------------
    def context(self, features: Features) -> Tensor | None:
        """The encoded context ``[B, H]`` (None without an encoder)."""
        return None if self.encoder is None else self.encoder(**features)

    def mean_speed(self, s: Tensor, psi: Tensor, context: Tensor | None) -> Tensor:
        """``mu(s, psi, c) = max_speed * sigmoid(MLP(s, psi, c) + b)`` for ``s, psi [...]`` and
        ``context [..., H]`` (broadcast; ``b`` makes the zero MLP the uniform clock). The
        paper leaves the parameterisation open: this one is log-like below 1 (the optimal
        speed scales as ``|Q|^{-1/2}`` and spans orders of magnitude) and bounded above."""
        s, psi = s.to(torch.float32), psi.to(torch.float32)
        inputs = [time_features(s.expand_as(psi), psi, self.horizon)]
        if context is not None:
            inputs.append(context.expand(*psi.shape, context.shape[-1]))
        h = self.actor(torch.cat(inputs, -1))[..., 0]
        # mu = max_speed * sigmoid(h + b): 1 at h = 0, below max_speed with a gradient
        # everywhere (a hard clamp would stall a clock that hit it)
        return self.max_speed * torch.sigmoid(h - math.log(self.max_speed - 1.0))

    def speeds(self, features: Features) -> Tensor:
        """The deterministic clock's speeds on the grid ``[B, K]`` (mean action, floored)."""
        ctx = self.context(features)
        b = _batch(features)
        dt = self.horizon / self.grid
        device = self.actor[-1].bias.device
        psi = torch.zeros(b, device=device)
        out = []
        for k in range(self.grid):
            s = torch.full((b,), k * dt, device=device)
            theta = self.mean_speed(s, psi, None if ctx is None else ctx).clamp_min(
                self.min_speed)
            out.append(theta)
            psi = psi + theta * dt
        return torch.stack(out, 1)

    def clock(self, features: Features) -> Tensor:
        """The unrolled clock ``psi [B, K+1]`` (from 0)."""
        theta = self.speeds(features).double()
        dt = self.horizon / self.grid
        zero = theta.new_zeros(theta.shape[0], 1)
        return torch.cat([zero, torch.cumsum(theta * dt, 1)], 1)

    # -- the one-shot role ------------------------------------------------------------------
    def feature_dims(self) -> dict[str, list[int]]:
        return {} if self.encoder is None else self.encoder.feature_dims()

    def schedule(self, features: Features | str | None = None, steps: int | None = None,
                 mode: str = "mean", **legacy: Tensor) -> Tensor:
        """Each context's clock as an ``L``-step flow schedule ``[B, steps+1]`` (other step
        counts: log-linear from it). ``mode`` ``mean`` and ``sample`` agree (deterministic)."""
        features, mode = features_argument(features, mode, legacy)
        if mode not in ("mean", "sample"):
            raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}.")
        sched = clock_to_schedule(self.clock(features), self.steps).float()
        if steps is not None and steps != self.steps:
            sched = self.resample(sched, steps)
        return sched

    def config(self) -> dict[str, Any]:
        return {"policy": self.kind, "steps": self.steps, "width": self.width,
                "layers": self.layers, "grid": self.grid, "horizon": self.horizon,
                "min_speed": self.min_speed, "max_speed": self.max_speed,
                "encoder": None if self.encoder is None else self.encoder.config()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ARTClockPolicy:
        cfg = kind_options(cls, config)
        enc = cfg.pop("encoder", None)
        return cls(None if enc is None else build_encoder(enc), **cfg)

    @classmethod
    def for_training(cls, encoder: nn.Module | None, steps: int, *, hidden: int = 128,
                     init_segments: Tensor | None = None, **options: Any) -> ARTClockPolicy:
        """A fresh clock at the uniform speed (ART starts there; ``init_segments`` is not
        used). Options: ``width``, ``layers``, ``grid``, ``horizon``, ``min_speed``."""
        known = {k: v for k, v in options.items()
                 if k in ("width", "layers", "grid", "horizon", "min_speed", "max_speed")}
        known.setdefault("width", hidden)
        return cls(encoder, steps, **known)


def equidistributed_schedule(q_cells: Tensor, steps: int) -> Tensor:
    """The exact minimiser of ART's objective for a global clock: given the mean error signal
    ``|Q|`` on ``K`` equal cells of the clock ``psi in [0, T]`` ``[K]``, the flow schedule
    ``[steps+1]`` whose every step covers the same integral of ``sqrt(|Q|)`` over ``psi``
    (minimising ``int |Q(psi)| theta^2 ds`` subject to ``int theta ds = T`` gives
    ``|Q| theta^2 = const``: the clock moves at speed ``|Q|^{-1/2}``)."""
    dens = q_cells.double().clamp_min(1e-12).sqrt()
    cum = torch.cat([dens.new_zeros(1), torch.cumsum(dens, 0)])
    cum = cum / cum[-1]
    k = len(q_cells)
    grid = torch.linspace(0.0, 1.0, k + 1, dtype=torch.float64)
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    idx = torch.clamp(torch.searchsorted(cum, u, right=True) - 1, 0, k - 1)
    w = (u - cum[idx]) / (cum[idx + 1] - cum[idx]).clamp_min(1e-300)
    out = 1.0 - (grid[idx] + w * (grid[idx + 1] - grid[idx]))
    out[0], out[-1] = 1.0, 0.0
    return out


@torch.no_grad()
def distil_global_clock(policy: ARTClockPolicy, features: Features,
                        min_speed: float | None = None,
                        steps: int | None = None) -> ARTGlobalClock:
    """The paper's deployment: the mean speed ``theta(s)`` of the policy's clocks over the
    contexts, floored, normalised so the clock ends at ``T``, read as an ``L``-step schedule
    (``steps``: another budget than the policy's, read from the same clock)."""
    theta = policy.speeds(features).double().mean(0)
    theta = theta.clamp_min(policy.min_speed if min_speed is None else min_speed)
    psi = torch.cat([theta.new_zeros(1), torch.cumsum(theta, 0)])
    steps = policy.steps if steps is None else steps
    flow = clock_to_schedule(psi, steps)
    # keep every step at least DEFAULT_MIN_STEP long (a valid sampler schedule)
    lengths = (flow[:-1] - flow[1:]).clamp_min(DEFAULT_MIN_STEP)
    flow = torch.cat([torch.ones(1, dtype=flow.dtype),
                      1.0 - torch.cumsum(lengths / lengths.sum(), 0)])
    flow[-1] = 0.0
    return ARTGlobalClock(steps, flow.float())


__all__ = ["ARTClockPolicy", "ARTGlobalClock", "distil_global_clock", "equidistributed_schedule",
           "resample_loglinear", "clock_to_schedule", "time_features", "TIME_FEATURES"]
