"""ART on the analytic testbed: the error signal Q against finite differences, the policy kinds
(log-linear resampling, distillation), the algorithm's learning, its constraint and its exact
resume, and ``train --method art``."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from learned_schedules.policies.art import (
    ARTClockPolicy,
    ARTGlobalClock,
    clock_to_schedule,
    distil_global_clock,
    resample_loglinear,
)
from learned_schedules.policies.policy_file import load_policy
from learned_schedules.policies.schedule import (
    shifted_schedule,
    uniform_schedule,
    validate_schedule,
)
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.engine import train
from learned_schedules.training.rl.flow_error import (
    FD_STEPS,
    METHODS,
    FlowField,
    error_size,
    finite_difference_error,
    finite_difference_q,
    velocity_and_error,
)
from learned_schedules.training.testbed.backend import TestbedBackend
from learned_schedules.training.testbed.mixture import DTYPE, Testbed


@pytest.fixture(scope="module")
def backend():
    return TestbedBackend(Testbed.default())


@pytest.mark.parametrize("sigma", [0.95, 0.6, 0.3, 0.1, 0.03, 0.005])
def test_q_matches_float64_finite_differences_on_the_testbed(backend, sigma):
    """Every JVP method gives the derivative of the exact velocity along the flow, as central
    differences with a small step (float64) do; Q is not the velocity's mere sigma-derivative."""
    ctx = backend.held_out_contexts(12, 5)
    field = backend.flow_field(ctx)
    s = torch.full((12,), sigma, dtype=DTYPE)
    x = field.start * sigma + (1 - sigma) * backend.testbed.means[ctx.classes, 0]
    fd = finite_difference_error(field, x, s, h=1e-6 * sigma)
    for method in METHODS:
        v, q = velocity_and_error(field, x, s, method)
        torch.testing.assert_close(v, backend.testbed.velocity(x, s, ctx.classes))
        torch.testing.assert_close(q, fd, rtol=1e-5, atol=1e-6 * float(fd.abs().max()))
    ds = (field(x, s + 1e-6) - field(x, s - 1e-6)) / 2e-6  # the time derivative alone
    assert float((q - ds).abs().max()) > 1e-3 * float(q.abs().max())
    assert error_size(q).shape == (12,) and bool((error_size(q) > 0).all())


def test_loglinear_resampling_is_monotone_and_keeps_the_ends():
    sched = torch.tensor([[1.0, 0.7, 0.45, 0.2, 0.05, 0.0], [1.0, 0.5, 0.3, 0.1, 0.01, 0.0]])
    for steps in (1, 2, 3, 5, 8, 13, 40):
        out = resample_loglinear(sched, steps)
        assert out.shape == (2, steps + 1)
        for row in out:
            validate_schedule(row)
    torch.testing.assert_close(resample_loglinear(sched, 5), sched)
    # log-linear inside a cell: the geometric mean halfway between 0.45 and 0.2
    mid = resample_loglinear(sched[:1], 10)[0, 5]
    assert abs(float(mid) - (0.45 * 0.2) ** 0.5) < 1e-6


def test_clock_and_distillation():
    psi = torch.linspace(0, 2, 101) ** 2 / 4  # speeds up: slow start, fast end
    sched = clock_to_schedule(psi, 4)
    validate_schedule(sched)
    torch.testing.assert_close(sched, torch.tensor([1.0, 1 - 0.25 ** 2, 0.75, 1 - 0.75 ** 2,
                                                    0.0]), atol=1e-6, rtol=0)
    torch.manual_seed(0)
    policy = ARTClockPolicy(None, 6, width=16, grid=40)
    with torch.no_grad():
        policy.actor[-1].weight.normal_(std=0.5)
    clock = distil_global_clock(policy, {"noise": torch.zeros(3, 2)})
    assert isinstance(clock, ARTGlobalClock) and clock.steps == 6
    validate_schedule(clock.flow)
    # without features every context has the same clock: the distilled one is it
    torch.testing.assert_close(clock.flow, policy.schedule({"noise": torch.zeros(1, 2)})[0],
                               atol=2e-4, rtol=0)


def _config(tmp_path, **over):
    art = {"grid": 40, "width": 32, "lr": 3e-3, "critic_lr": 1e-2, "features": False,
           "distill_contexts": 32, **over.pop("art", {})}
    base = dict(algo="art", steps=8, batch=8, hidden=16, iterations=6, out=str(tmp_path),
                run_name="run", progress=False, checkpoint_every=2, eval_every=3,
                eval_contexts=16, lr_schedule="constant", art=art)
    base.update(over)
    return TrainConfig.from_dict(base)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    """The critic, its optimiser, gamma and the evaluation counts are checkpointed."""
    full = train(_config(tmp_path / "full"))

    def stop(it, _metrics):
        if it == 3:
            raise KeyboardInterrupt

    cfg = _config(tmp_path / "part")
    assert train(cfg, callback=stop).interrupted
    resumed = train(cfg, resume=tmp_path / "part" / "run")
    rows = {}
    for name, run in (("full", full), ("resumed", resumed)):
        with (run.run_dir / "metrics.csv").open() as f:
            rows[name] = [{k: v for k, v in r.items() if k != "seconds"}
                          for r in csv.DictReader(f)]
    assert rows["full"] == rows["resumed"] and len(rows["full"]) == 6
    assert {"value_loss", "gamma", "constraint_violation"} <= set(rows["full"][0])
    assert len({r["gamma"] for r in rows["full"]}) > 1
    for key, value in full.policy.state_dict().items():
        assert torch.equal(value, resumed.policy.state_dict()[key])
    loaded = load_policy(full.run_dir / "policy.safetensors")
    assert loaded.metadata["method"] == "art"
    assert isinstance(loaded.policy, ARTGlobalClock)  # the distilled clock is deployed


def test_train_method_art_on_the_testbed(tmp_path, capsys):
    from learned_schedules.training.cli import main

    code = main(["train", "--method", "art", "--steps", "4", "--iterations", "2",
                 "--batch", "2", "--hidden", "8", "--art.grid", "10", "--art.width", "8",
                 "--art.deploy", "instance", "--eval-contexts", "4", "--out", str(tmp_path),
                 "--run-name", "cli", "--no-progress"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    loaded = load_policy(out["policy"])
    assert isinstance(loaded.policy, ARTClockPolicy) and loaded.metadata["method"] == "art"
    # eval takes an ART policy file like any other
    assert main(["eval", out["policy"], "--contexts", "8", "--train-contexts", "8",
                 "--fit-iters", "1", "--no-oracle", "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert "learned" in [r["name"] for r in report["rows"]]
    assert main(["train", "--method", "nope", "--out", str(tmp_path)]) == 2


def test_arts_clock_beats_uniform_and_shift3_on_held_out_contexts(tmp_path, backend):
    """ART's objective solved from measured error signals (``solver=direct``: 96 training
    trajectories, no reward, no reference solution): the deployed clock starts at 1 and ends
    at 0 exactly (psi(T) = T after normalisation), and on 256 held-out contexts it beats the
    uniform and the shift-3 schedules by more than 3 paired standard errors at L = 8."""
    steps = 8
    result = train(_config(tmp_path, steps=steps, iterations=12, checkpoint_every=0,
                           eval_every=0, art={"solver": "direct", "grid": 100}))
    with (result.run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["model_jvps"]) == 12 * 8 * 100
    clock = load_policy(result.run_dir / "policy.safetensors").policy
    assert isinstance(clock, ARTGlobalClock)
    flow = clock.schedule({}, steps=steps)[0]
    validate_schedule(flow)
    assert float(flow[0]) == 1.0 and float(flow[-1]) == 0.0
    held = backend.held_out_contexts(256, 10_000)
    reward = backend.rewards(held, flow.expand(256, 1, -1))[:, 0].double()
    for name, other in (("uniform", uniform_schedule(steps)),
                        ("shift 3", shifted_schedule(steps, 3.0))):
        diff = reward - backend.rewards(held, other.expand(256, 1, -1))[:, 0].double()
        se = float(diff.std() / diff.numel() ** 0.5)
        assert float(diff.mean()) > 3 * se, (name, float(diff.mean()), se)


def test_actor_critic_clock_beats_uniform_on_held_out_contexts(tmp_path, backend):
    """The paper's actor-critic (``solver=actor_critic``), stabilised as documented in
    ``ARTConfig`` (Monte Carlo advantage ``trace=1``, a critic warm-up, the actor's step
    projected onto the constraint with a proportional pull): 250 iterations of 32 trajectories,
    no reward, no reference solution. Its distilled clock beats the uniform schedule on 256
    held-out contexts at L = 8 by more than 3 paired standard errors."""
    steps = 8
    art = {"lr": 3e-3, "critic_lr": 3e-3, "gamma_lr": 0.0, "critic_warmup": 30,
           "project": True, "restore": 10.0, "trace": 1.0}
    result = train(_config(tmp_path, steps=steps, batch=32, iterations=250, checkpoint_every=0,
                           eval_every=0, art=art))
    with (result.run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert abs(float(rows[-1]["constraint_violation"])) < 0.2  # the clock ends near psi = T
    clock = load_policy(result.run_dir / "policy.safetensors").policy
    assert isinstance(clock, ARTGlobalClock)
    flow = clock.schedule({}, steps=steps)[0]
    validate_schedule(flow)
    held = backend.held_out_contexts(256, 10_000)
    diff = (backend.rewards(held, flow.expand(256, 1, -1))[:, 0].double()
            - backend.rewards(held, uniform_schedule(steps).expand(256, 1, -1))[:, 0].double())
    se = float(diff.std() / diff.numel() ** 0.5)
    assert float(diff.mean()) > 3 * se, (float(diff.mean()), se)


def _relative_errors(q, ref):
    """RMS over items of |Q_fd - Q| / |Q| (the vector) and of (|Q_fd| - |Q|) / |Q| (ART's
    scalar)."""
    q, ref = q.double().flatten(1), ref.double().flatten(1)
    vec = ((q - ref).norm(dim=1) / ref.norm(dim=1)).pow(2).mean().sqrt()
    size = ((error_size(q) - error_size(ref)) / error_size(ref)).pow(2).mean().sqrt()
    return float(vec), float(size)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_finite_difference_q_agrees_with_the_jvp_on_the_testbed(backend, dtype):
    """The one-sided difference at the default step of the field's dtype (1e-4 float64, 1e-3
    float32) within 4% of the float64 JVP (docs/art.md: float32 tolerance) along an Euler
    trajectory, forward inside the range and backward at sigma 1; exactly one field call."""
    n = 32
    ctx = backend.held_out_contexts(n, 5)
    ref = backend.flow_field(ctx)
    tb = backend.testbed
    low = FlowField(start=ref.start.to(dtype), compute_dtype=dtype,
                    velocity=lambda x, s: tb.velocity(x.double(), s.double(),
                                                      ctx.classes).to(dtype))
    x = ref.start.clone()
    worst = 0.0
    for k in range(100):
        s = torch.full((n,), 1.0 - k / 100, dtype=DTYPE)
        v, q = velocity_and_error(ref, x, s, "double_backward")
        if k % 10 == 0:
            xs, ss = x.to(dtype), s.to(dtype)
            vl = low(xs, ss)
            calls = low.calls
            q_fd = finite_difference_q(low, xs, ss, vl)
            assert low.calls == calls + 1
            worst = max(worst, *_relative_errors(q_fd, q))
        x = x - v / 100
    assert worst < 0.04, worst
    assert FD_STEPS[torch.float32] > FD_STEPS[torch.float64]


def test_finite_difference_error_signal_in_art(tmp_path, backend, monkeypatch):
    """``--art.error-signal finite_difference`` parses from the CLI and trains; every grid
    point costs two plain field calls (the velocity and one more), no JVP."""
    from learned_schedules.training.cli import main

    seen = []
    original = TestbedBackend.flow_rollout

    def counting(self, contexts, fn):
        def wrapped(field, rows):
            out = fn(field, rows)
            seen.append((field.calls, field.jvps, len(rows)))
            return out
        return original(self, contexts, wrapped)

    monkeypatch.setattr(TestbedBackend, "flow_rollout", counting)
    code = main(["train", "--method", "art", "--steps", "4", "--iterations", "2",
                 "--batch", "3", "--hidden", "8", "--art.grid", "10", "--art.width", "8",
                 "--art.error-signal", "finite_difference", "--art.fd-step", "0.002",
                 "--eval-contexts", "4", "--out", str(tmp_path), "--run-name", "fd",
                 "--no-progress"])
    assert code == 0
    assert seen == [(2 * 10, 0, 3)] * 2
    with (tmp_path / "fd" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["model_calls"]) for r in rows] == [60.0, 120.0]
    assert [float(r["model_jvps"]) for r in rows] == [0.0, 0.0]
    assert main(["train", "--method", "art", "--art.error-signal", "nope",
                 "--out", str(tmp_path)]) == 2
