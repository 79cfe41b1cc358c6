"""The trainer's metrics in TensorBoard event files (through ``torch.utils.tensorboard``), read
back with TensorBoard's own reader; without TensorBoard, metrics.csv alone."""

from __future__ import annotations

import logging
import sys

import pytest

from learned_schedules.training.rl.metrics_log import MetricsLog

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator")


def _read(folder):
    acc = event_accumulator.EventAccumulator(str(folder))
    acc.Reload()
    return acc


def test_scalars_round_trip_through_tensorboard(tmp_path):
    w = MetricsLog(tmp_path)
    for step in range(1, 6):
        w.write({"iteration": step, "reward/mean": step * 0.25, "loss": -step,
                 "skipped_nan": float("nan"), "skipped_text": "x"})
    w.close()
    acc = _read(tmp_path / "tensorboard")
    assert sorted(acc.Tags()["scalars"]) == ["loss", "reward/mean"]
    points = [(e.step, e.value) for e in acc.Scalars("reward/mean")]
    assert points == [(s, s * 0.25) for s in range(1, 6)]
    assert [e.value for e in acc.Scalars("loss")] == [-1.0, -2.0, -3.0, -4.0, -5.0]


def test_a_resumed_writer_purges_the_points_past_the_resume_step(tmp_path):
    first = MetricsLog(tmp_path)
    for step in range(1, 11):  # crashed at 10, last checkpoint at 6
        first.write({"iteration": step, "r": float(step)})
    first.close()
    second = MetricsLog(tmp_path, purge_step=7)
    for step in range(7, 13):
        second.write({"iteration": step, "r": 100.0 + step})
    second.close()
    points = [(e.step, e.value) for e in _read(tmp_path / "tensorboard").Scalars("r")]
    assert points == [(s, float(s)) for s in range(1, 7)] + [(s, 100.0 + s) for s in range(7, 13)]


def test_without_tensorboard_metrics_go_to_the_csv_with_one_line_saying_so(
        tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    caplog.set_level(logging.INFO, logger="learned_schedules.training")
    w = MetricsLog(tmp_path)
    for step in range(1, 4):
        w.write({"iteration": step, "r": float(step)})
    w.close()
    said = [r.getMessage() for r in caplog.records if "TensorBoard" in r.getMessage()]
    assert len(said) == 1 and "not installed" in said[0] and "\n" not in said[0]
    assert not (tmp_path / "tensorboard").exists()
    assert (tmp_path / "metrics.csv").read_text().splitlines() == [
        "iteration,lr,r,eval_reward,seconds", "1,,1.0,,", "2,,2.0,,", "3,,3.0,,"]


def test_training_writes_the_metrics_to_tensorboard_too_and_resume_leaves_one_point_each(
        tmp_path):
    """Every metrics.csv value is in the run's event files; after a crash past the last
    checkpoint and a resume, TensorBoard shows exactly one point per iteration (the resumed
    run's), equal to the CSV."""
    import csv

    from learned_schedules.training.rl.config import TrainConfig
    from learned_schedules.training.rl.engine import train

    cfg = dict(steps=3, rollouts=2, batch=8, iterations=12, lr=1e-3, eval_every=4,
               checkpoint_every=5, out=str(tmp_path), run_name="run", progress=False,
               eval_contexts=16, hidden=16, depth=1, pool_size=256)

    def crash_at_8(it, _metrics):
        if it == 8:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated"):
        train(TrainConfig.from_dict(cfg), callback=crash_at_8)
    result = train(TrainConfig.from_dict(cfg), resume=tmp_path / "run")
    assert result.iterations_done == 12
    with (result.run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    acc = _read(result.run_dir / "tensorboard")
    for tag in ("reward_mean", "lr", "eval_reward"):
        points = [(e.step, e.value) for e in acc.Scalars(tag)]
        expected = [(int(r["iteration"]), float(r[tag])) for r in rows if r[tag] != ""]
        assert [p[0] for p in points] == [e[0] for e in expected], tag
        for (_, got), (_, want) in zip(points, expected, strict=True):
            assert got == pytest.approx(want, rel=1e-6), tag


def test_progress_in_a_log_is_a_line_every_interval_not_every_iteration(caplog):
    import logging

    from learned_schedules.training.rl.progress import Progress

    caplog.set_level(logging.INFO, logger="learned_schedules.training")
    quiet = Progress(2000, terminal=False, interval=3600)
    for it in range(1, 2001):
        quiet.update(it, {"reward_mean": 0.5})
    quiet.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "iteration 2000/2000 (100%)" in lines[0]
    assert "reward_mean 0.5" in lines[0] and "\r" not in lines[0]
    caplog.clear()
    chatty = Progress(10, terminal=False, interval=0.0)
    for it in range(1, 11):
        chatty.update(it, {})
    assert len(caplog.records) == 10 and "ETA" in caplog.records[3].getMessage()
