"""``calibrate`` on the analytic testbed (no weights): the command beats the uniform schedule
on held-out contexts, its policy file deploys the calibrated schedules, the teacher cache is
hit the second time, the grid search and the stored-schedules kind behave, and user mistakes
are one line, exit 2, nothing written."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from learned_schedules.calibration.problem import Meter, counted
from learned_schedules.calibration.run import CalibrationOptions, calibrate_global
from learned_schedules.calibration.search import dp_calls, dp_search
from learned_schedules.calibration.teacher import teacher_targets
from learned_schedules.policies.policy_file import load_policy
from learned_schedules.policies.schedule import uniform_schedule
from learned_schedules.policies.stored import StoredSchedules
from learned_schedules.training.cli import main
from learned_schedules.training.testbed.calibration import calibration_grid, calibration_problem
from learned_schedules.training.testbed.mixture import Testbed


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_calibrate_testbed_beats_uniform_on_held_out(tmp_path, capsys, one_thread):
    code = main(["calibrate", "--backend", "testbed", "--steps", "5", "--out", str(tmp_path),
                 "--teacher-cache", str(tmp_path / "teacher"), "--eval-contexts", "64",
                 "--per-image", "--per-image-iterations", "5"])
    assert code == 0
    paths = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    loaded = load_policy(paths["policy"])
    meta = loaded.metadata
    assert meta["method"] == "calibrate-teacher" and meta["model_family"] == "testbed"
    assert isinstance(loaded.policy, StoredSchedules) and meta["steps"] == 5
    flow = loaded.policy.schedule({}, steps=5)[0].double()
    assert torch.allclose(flow, torch.tensor(meta["global_schedule"], dtype=torch.float64),
                          atol=1e-6)
    # held-out contexts neither the calibration nor its table used
    tb = Testbed.default()
    held = tb.contexts_from_seed(256, 777)
    diff = torch.log(tb.squared_error(held, uniform_schedule(5).double())) - \
        torch.log(tb.squared_error(held, flow))
    se = float(diff.std()) / math.sqrt(len(diff))
    assert float(diff.mean()) > 3 * se > 0
    table = (tmp_path / "calibration.md").read_text()
    assert "| uniform |" in table and "| **calibrated per-image** |" in table
    from learned_schedules.nodes.named_schedulers import discover

    named = discover([("calibrated_testbed.safetensors", paths["policy"])])
    assert torch.allclose(named["learned:calibrated_testbed"], flow)  # the named scheduler
    per_image = load_policy(paths["per_image"][0])
    assert per_image.metadata["method"] == "calibrate-teacher-per-image"
    assert per_image.metadata["global_schedule"] == meta["global_schedule"]


def test_teacher_cache_is_hit_the_second_time(tmp_path):
    tb = Testbed.default()
    problem = calibration_problem(tb, tb.contexts_from_seed(8, 3, with_target=False))
    grid = calibration_grid(12)
    first, second = Meter(), Meter()
    a = teacher_targets(problem, grid, tmp_path, first)
    b = teacher_targets(problem, grid, tmp_path, second)
    assert not a.from_cache and b.from_cache
    assert first.calls == 12 and second.calls == 0
    assert torch.equal(a.states, b.states)
    other = calibration_problem(tb, tb.contexts_from_seed(8, 4, with_target=False))
    assert not teacher_targets(other, grid, tmp_path).from_cache  # other seeds: other key
    opts = CalibrationOptions(steps=(3,), search="dp", budget=200)
    res = calibrate_global(problem, grid, opts, cache_dir=tmp_path)
    assert res.teacher.from_cache and res.calls == dp_calls(12, 3)


def test_grid_search_costs_what_it_says_and_beats_uniform_on_its_grid():
    tb = Testbed.default()
    problem = calibration_problem(tb, tb.contexts_from_seed(32, 5, with_target=False))
    grid = torch.linspace(1.0, 0.0, 13, dtype=torch.float64)
    teacher = teacher_targets(problem, grid)
    meter = Meter()
    flow, cost = dp_search(counted(problem, meter), teacher, 4)
    assert meter.calls == dp_calls(12, 4)
    assert flow[0] == 1 and flow[-1] == 0 and bool((flow[1:] < flow[:-1]).all())
    assert all(bool((grid - v).abs().min() < 1e-12) for v in flow)  # on the grid
    from learned_schedules.calibration.problem import log_mse
    from learned_schedules.calibration.sampler import euler

    uniform = float(log_mse(euler(problem, uniform_schedule(4).double()), teacher.final).mean())
    assert cost <= uniform + 1e-9  # uniform at 4 steps lies on this grid


def test_stored_schedules_keep_every_count_and_resample_others():
    pol = StoredSchedules([4, 8], {4: torch.tensor([1, .7, .4, .15, 0.]),
                                   8: torch.linspace(1, 0, 9)})
    assert pol.steps == 4 and pol.feature_dims() == {}
    assert torch.allclose(pol.schedule({}, steps=8)[0], torch.linspace(1, 0, 9))
    six = pol.schedule({"noise": torch.zeros(3, 2)}, steps=6)
    assert six.shape == (3, 7) and torch.allclose(six[0], torch.linspace(1, 0, 7))  # from 8
    with pytest.raises(ValueError, match="distinct"):
        StoredSchedules([4, 4])


@pytest.mark.parametrize("argv, words", [
    (["--steps", "0"], "--steps"),
    (["--method", "magic"], "Unknown method"),
    (["--backend", "comfy", "--prompts", "no/such/prompts.txt"], "not found"),
    (["--teacher-steps", "4", "--steps", "8"], "--teacher-steps"),
])
def test_user_mistakes_are_one_line_exit_2_nothing_written(tmp_path, caplog, argv, words):
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        code = main(["calibrate", "--backend", "testbed", "--out", str(out), *argv])
    assert code == 2 and not out.exists()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and words in errors[0].getMessage()
    assert "\n" not in errors[0].getMessage()


def test_progress_and_interrupt_callbacks():
    """What a node drives: progress (model calls done, budget) after every call, and a stop
    request that ends the calibration with :class:`Stopped`."""
    from learned_schedules.calibration.problem import Stopped

    tb = Testbed.default()
    problem = calibration_problem(tb, tb.contexts_from_seed(8, 6, with_target=False))
    seen: list[tuple[int, int]] = []
    opts = CalibrationOptions(steps=(3,), search="dp+gradient", budget=60, iterations=2)
    res = calibrate_global(problem, calibration_grid(10), opts,
                           progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == res.calls <= 60 and all(t == 60 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    with pytest.raises(Stopped):
        calibrate_global(problem, calibration_grid(10), opts, should_stop=lambda: True)
