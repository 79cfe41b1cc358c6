"""Schedule maths: endpoints, monotonicity, floors, resampling, family mappings."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learned_schedules.comfy_bridge.sigmas import flow_to_sigmas, sigmas_to_flow
from learned_schedules.policies.schedule import (
    clamp_increments,
    flow_shift,
    flux_shift_schedule,
    increments_to_schedule,
    increments_to_timesteps,
    resample_schedule,
    schedule_to_increments,
    shifted_schedule,
    timesteps_to_increments,
    uniform_schedule,
    validate_schedule,
)

simplex = st.integers(1, 40).flatmap(
    lambda n: st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=n + 1, max_size=n + 1)
)


def _tau(raw: list[float]) -> torch.Tensor:
    t = torch.tensor(raw, dtype=torch.float64) + 1e-9
    return t / t.sum()


@settings(max_examples=200, deadline=None)
@given(simplex)
def test_segments_give_valid_schedules(raw):
    tau = clamp_increments(_tau(raw), 1e-4)
    assert torch.all(tau >= 1e-4 / (1 + tau.numel() * 1e-4) - 1e-15)
    assert math.isclose(float(tau.sum()), 1.0, abs_tol=1e-12)
    t = increments_to_timesteps(tau)
    assert float(t[0]) == 1.0 and float(t[-1]) > 0
    assert torch.all(t[:-1] > t[1:])
    sched = increments_to_schedule(tau)
    assert sched.shape[-1] == tau.shape[-1]  # L + 1 segments -> L steps -> L + 1 sigmas
    validate_schedule(sched, min_step=1e-4 / (1 + tau.numel() * 1e-4) * 0.999)
    assert torch.allclose(timesteps_to_increments(t), tau, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(simplex, st.integers(1, 60))
def test_resampling_keeps_endpoints_and_order(raw, steps):
    sched = increments_to_schedule(clamp_increments(_tau(raw), 1e-3))
    out = resample_schedule(sched, steps)
    assert out.shape == (steps + 1,)
    validate_schedule(out)
    # resampling to the same count is the identity; and a round trip through a finer grid
    # that contains the original grid points is exact
    assert torch.equal(resample_schedule(sched, sched.numel() - 1), sched)
    n = sched.numel() - 1
    back = resample_schedule(resample_schedule(sched, 3 * n), n)
    assert torch.allclose(back, sched, atol=1e-9)


def test_schedule_round_trip_through_increments():
    sched = shifted_schedule(7, 3.0, dtype=torch.float64)
    tau = schedule_to_increments(sched)
    assert math.isclose(float(tau.sum()), 1.0, abs_tol=1e-12)
    assert torch.allclose(increments_to_schedule(tau), sched, atol=1e-12)


def test_batched_shapes():
    tau = torch.distributions.Dirichlet(torch.ones(3, 4, 6)).sample()
    assert increments_to_schedule(tau).shape == (3, 4, 6)
    assert resample_schedule(increments_to_schedule(tau), 9).shape == (3, 4, 10)


def test_known_comfyui_values():
    # BasicScheduler "simple", 5 steps (values from ComfyUI, see COMFYUI_RUNTIME.md)
    sd3 = shifted_schedule(5, 3.0)
    assert torch.allclose(sd3, torch.tensor([1, .9231, .8182, .6667, .4286, 0]), atol=1e-4)
    flux = flux_shift_schedule(5, 1024, 1024)
    assert torch.allclose(flux, torch.tensor([1, .9266, .8257, .678, .4412, 0]), atol=2e-4)
    assert torch.allclose(uniform_schedule(4), torch.tensor([1, .75, .5, .25, 0]))
    assert float(flow_shift(torch.tensor(0.5), 1.0)) == 0.5


@pytest.mark.parametrize(
    "sigmas, message",
    [
        (torch.tensor([1.0, 0.5, float("nan"), 0.0]), "NaN"),
        (torch.tensor([0.9, 0.5, 0.0]), "starts at"),
        (torch.tensor([1.0, 0.5, 0.1]), "ends at"),
        (torch.tensor([1.0, 0.5, 0.5, 0.0]), "strictly decreasing"),
        (torch.tensor([1.0, 0.6, 0.0]).reshape(1, 3), "one-dimensional"),
        (torch.tensor([1.0]), "at least two"),
    ],
)
def test_validation_rejects_bad_schedules(sigmas, message):
    with pytest.raises(ValueError, match=message):
        validate_schedule(sigmas)


def test_validation_floor():
    validate_schedule(torch.tensor([1.0, 0.5, 0.0]), min_step=0.5)
    with pytest.raises(ValueError, match="shorter than the floor"):
        validate_schedule(torch.tensor([1.0, 0.999, 0.0]), min_step=0.01)


def test_clamp_rejects_impossible_floor():
    with pytest.raises(ValueError, match="too large"):
        clamp_increments(torch.ones(4) / 4, 0.3)


def test_loglinear_family_round_trip():
    sched = shifted_schedule(6, 3.0, dtype=torch.float64)
    sig = flow_to_sigmas(sched, "loglinear", sigma_min=0.03, sigma_max=14.6)
    assert math.isclose(float(sig[0]), 14.6, rel_tol=1e-12) and float(sig[-1]) == 0.0
    validate_schedule(sig, sigma_max=14.6)
    assert torch.allclose(sigmas_to_flow(sig, "loglinear", 0.03, 14.6), sched, atol=1e-12)
    assert torch.equal(flow_to_sigmas(sched), sched)
    with pytest.raises(ValueError, match="sigma_min"):
        flow_to_sigmas(sched, "loglinear")
    with pytest.raises(ValueError, match="Unknown sigma family"):
        flow_to_sigmas(sched, "vp")


def test_steps_must_be_positive():
    with pytest.raises(ValueError, match="positive integer"):
        uniform_schedule(0)
    with pytest.raises(ValueError, match="positive integer"):
        resample_schedule(uniform_schedule(3), 0)
