"""TensorBoard event files written without TensorBoard, read back with TensorBoard's reader."""

from __future__ import annotations

import pytest

from learned_schedules.training.rl.tensorboard import ScalarWriter, crc32c

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator")


def _read(folder):
    acc = event_accumulator.EventAccumulator(str(folder))
    acc.Reload()
    return acc


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert crc32c(b"") == 0


def test_scalars_round_trip_through_tensorboard(tmp_path):
    w = ScalarWriter(tmp_path)
    for step in range(1, 6):
        w.add_scalars(step, {"reward/mean": step * 0.25, "loss": -step,
                             "skipped_nan": float("nan"), "skipped_text": "x"})
    w.close()
    acc = _read(tmp_path)
    assert sorted(acc.Tags()["scalars"]) == ["loss", "reward/mean"]
    points = [(e.step, e.value) for e in acc.Scalars("reward/mean")]
    assert points == [(s, s * 0.25) for s in range(1, 6)]
    assert [e.value for e in acc.Scalars("loss")] == [-1.0, -2.0, -3.0, -4.0, -5.0]


def test_a_resumed_writer_drops_the_points_past_the_resume_step(tmp_path):
    first = ScalarWriter(tmp_path)
    for step in range(1, 11):  # crashed at 10, last checkpoint at 6
        first.add_scalars(step, {"r": float(step)})
    first.close()
    second = ScalarWriter(tmp_path, start_step=7)
    for step in range(7, 13):
        second.add_scalars(step, {"r": 100.0 + step})
    second.close()
    points = [(e.step, e.value) for e in _read(tmp_path).Scalars("r")]
    assert points == [(s, float(s)) for s in range(1, 7)] + [(s, 100.0 + s) for s in range(7, 13)]
