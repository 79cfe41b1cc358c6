"""Runs are never lost or broken (issue 9): a crash at any moment, a damaged checkpoint or a
resume with changed settings leaves a run that continues to exactly the uninterrupted result,
with one metrics row per iteration."""

from __future__ import annotations

import csv
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from learned_schedules.training.cli import main as cli_main
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.engine import train


def _config(out: Path, **kw) -> TrainConfig:
    base = dict(steps=3, baseline="js", rollouts=2, batch=8, iterations=30, lr=1e-3,
                eval_every=10, checkpoint_every=10, keep_checkpoints=10, out=str(out),
                run_name="run", progress=False, eval_contexts=32, hidden=16, depth=1,
                pool_size=256, seed=3)
    base.update(kw)
    return TrainConfig.from_dict(base)


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _same_metrics(a: list[dict[str, str]], b: list[dict[str, str]]) -> None:
    """Row by row, every column but the wall-clock one."""
    assert [r["iteration"] for r in a] == [str(i) for i in range(1, len(a) + 1)]
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert {k: v for k, v in ra.items() if k != "seconds"} == \
            {k: v for k, v in rb.items() if k != "seconds"}


def _same_policy(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


class Crash(RuntimeError):
    """A simulated hard crash (no checkpoint is saved, unlike Ctrl-C)."""


def _crash_at(n: int):
    def callback(it, _metrics):
        if it == n:
            raise Crash(f"crash at {n}")
    return callback


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    return train(_config(tmp_path_factory.mktemp("ref"))).run_dir


@pytest.mark.parametrize("crash_at", [4, 10, 17, 29])
def test_crash_then_resume_one_row_per_iteration(tmp_path, reference, crash_at):
    """Crashed before the first checkpoint (4: resumes from the start), right after one (10),
    between two (17: rows 11..17 must not be written twice), just before the end (29)."""
    with pytest.raises(Crash):
        train(_config(tmp_path), callback=_crash_at(crash_at))
    run = tmp_path / "run"
    assert len(_rows(run)) == crash_at
    with (run / "metrics.csv").open("a") as f:  # half a row, as a kill mid-write leaves
        f.write(f"{crash_at + 1},0.00")
    resumed = train(_config(tmp_path), resume=run)
    assert resumed.iterations_done == 30
    _same_metrics(_rows(run), _rows(reference))
    _same_policy(run / "policy.safetensors", reference / "policy.safetensors")


def test_restart_in_place_is_refused_but_resume_starts_over(tmp_path, reference, caplog):
    with pytest.raises(Crash):
        train(_config(tmp_path), callback=_crash_at(5))
    with pytest.raises(ValueError, match="--resume"):
        train(_config(tmp_path))
    with caplog.at_level(logging.WARNING):
        train(_config(tmp_path), resume=tmp_path / "run")
    assert "no checkpoint yet" in caplog.text
    _same_metrics(_rows(tmp_path / "run"), _rows(reference))


@pytest.mark.parametrize("damage", ["half", "empty", "garbage", "header_only"])
def test_damaged_latest_checkpoint_falls_back(tmp_path, reference, caplog, damage):
    with pytest.raises(Crash):
        train(_config(tmp_path), callback=_crash_at(25))
    ckpts = tmp_path / "run" / "checkpoints"
    latest = ckpts / "state_000020.safetensors"
    raw = latest.read_bytes()
    latest.write_bytes({"half": raw[: len(raw) // 2], "empty": b"",
                        "garbage": os.urandom(len(raw)),
                        "header_only": raw[:200]}[damage])
    with caplog.at_level(logging.WARNING):
        resumed = train(_config(tmp_path), resume=tmp_path / "run")
    assert "state_000010.safetensors, the newest readable checkpoint" in caplog.text
    assert (ckpts / "state_000020.safetensors.unreadable").exists()
    assert resumed.iterations_done == 30
    _same_metrics(_rows(tmp_path / "run"), _rows(reference))
    _same_policy(tmp_path / "run" / "policy.safetensors", reference / "policy.safetensors")


def test_no_readable_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(Crash):
        train(_config(tmp_path), callback=_crash_at(25))
    for state in (tmp_path / "run" / "checkpoints").glob("state_*"):
        state.write_bytes(b"\x00" * 10)
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match="No readable checkpoint"):
        train(_config(tmp_path), resume=tmp_path / "run")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("change", [
    {"steps": 4}, {"hidden": 32}, {"depth": 2}, {"algo": "ppo"}, {"seed": 4},
    {"pool_size": 128}, {"init_concentration": 30.0}, {"init_schedule": "uniform"},
    {"backend": "comfy"},
])
def test_resume_refuses_changes_that_cannot_apply(tmp_path, change):
    with pytest.raises(Crash):
        train(_config(tmp_path), callback=_crash_at(15))
    before = _snapshot(tmp_path)
    field = next(iter(change))
    with pytest.raises(ValueError, match=f"Cannot resume .* changed {field} ") as info:
        train(_config(tmp_path, **change), resume=tmp_path / "run")
    assert "\n" not in str(info.value)
    assert _snapshot(tmp_path) == before  # config.json not rewritten: a plain resume works
    assert train(_config(tmp_path), resume=tmp_path / "run").iterations_done == 30


@pytest.mark.parametrize("change, match", [
    ({"lr": float("nan")}, "lr must be"), ({"iterations": 5}, "iterations=5"),
    ({"grad_clip": float("inf")}, "grad_clip"), ({"device": "banana"}, "device"),
])
def test_resume_with_invalid_settings_writes_nothing(tmp_path, change, match):
    with pytest.raises(Crash):
        train(_config(tmp_path), callback=_crash_at(15))
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=match):
        train(_config(tmp_path, **change), resume=tmp_path / "run")
    assert _snapshot(tmp_path) == before


def test_resume_applies_allowed_changes(tmp_path, reference):
    """More iterations, another lr, eval and checkpoint cadence: the first 10 iterations are
    the reference's, the rest follow the new settings, one row each."""
    with pytest.raises(Crash):
        train(_config(tmp_path), callback=_crash_at(12))
    changed = _config(tmp_path, iterations=40, lr=2e-3, eval_every=4, checkpoint_every=8,
                      keep_checkpoints=2)
    result = train(changed, resume=tmp_path / "run")
    assert result.iterations_done == 40
    rows = _rows(tmp_path / "run")
    assert [r["iteration"] for r in rows] == [str(i) for i in range(1, 41)]
    _same_metrics(rows[:10], _rows(reference)[:10])
    assert float(rows[10]["lr"]) != float(_rows(reference)[10]["lr"])
    assert all(rows[i - 1]["eval_reward"] for i in range(12, 41, 4))
    saved = TrainConfig.load(tmp_path / "run" / "config.json")
    assert saved.iterations == 40 and saved.lr == 2e-3
    assert len(list((tmp_path / "run" / "checkpoints").glob("state_*"))) == 2


def test_cli_resume_refusal_is_one_line(tmp_path, caplog):
    with pytest.raises(Crash):
        train(_config(tmp_path), callback=_crash_at(15))
    before = _snapshot(tmp_path)
    caplog.clear()
    rc = cli_main(["train", "--resume", str(tmp_path / "run"), "--steps", "5", "--hidden", "8"])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert rc == 2 and len(errors) == 1 and "\n" not in errors[0]
    assert "steps (3 -> 5)" in errors[0] and "hidden (16 -> 8)" in errors[0]
    assert _snapshot(tmp_path) == before
    assert cli_main(["train", "--resume", str(tmp_path / "run"), "--iterations", "20"]) == 0


# -- SIGKILL at random moments ------------------------------------------------------------------
CLI_ARGS = ["--steps", "3", "--iterations", "120", "--batch", "8", "--hidden", "16", "--depth",
            "1", "--eval-every", "25", "--eval-contexts", "32", "--pool-size", "256",
            "--checkpoint-every", "7", "--keep-checkpoints", "2", "--seed", "5", "--no-progress"]


def _metrics_rows(run: Path) -> int:
    try:
        return max(0, len((run / "metrics.csv").read_bytes().splitlines()) - 1)
    except OSError:
        return 0


def _latest_checkpoint(run: Path) -> int:
    states = sorted((run / "checkpoints").glob("state_*.safetensors"))
    return int(states[-1].stem.split("_")[1]) if states else 0


def kill_and_resume(tmp_path: Path, seed: int, kills: int = 4) -> tuple[int, int]:
    """Train in a subprocess, SIGKILL it ``kills`` times at seeded random moments (the first
    before its first checkpoint, the others at random iterations, mid-write or not), resume
    each time with a plain ``--resume``, and compare with an uninterrupted run row by row and
    bit for bit. Returns (kills, rows logged past the last checkpoint when killed)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "learned_schedules.training", "train", *CLI_ARGS,
           "--out", str(tmp_path)]
    reference = subprocess.Popen([*cmd, "--run-name", "ref"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = tmp_path / "crash"
    rng = random.Random(seed)
    done, killed, excess, target = False, 0, 0, rng.randint(1, 6)  # before checkpoint 7
    argv = [*cmd, "--run-name", "crash"]
    while not done:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if killed < kills and _metrics_rows(run) >= target:
                time.sleep(rng.uniform(0, 0.01))  # anywhere in the iteration, or a write
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        rc = proc.wait(timeout=120)
        err = proc.stderr.read().decode() if proc.stderr else ""
        if rc == -signal.SIGKILL:
            killed += 1
            excess += _metrics_rows(run) - _latest_checkpoint(run)
            target = _metrics_rows(run) + rng.randint(2, 30)
            argv = [*cmd[:4], "--resume", str(run)]  # a plain resume, no flags
            continue
        assert rc == 0, err[-2000:]
        done = True
    assert reference.wait(timeout=180) == 0
    _same_metrics(_rows(run), _rows(tmp_path / "ref"))
    assert len(_rows(run)) == 120
    _same_policy(run / "policy.safetensors", tmp_path / "ref" / "policy.safetensors")
    return killed, excess


def test_sigkill_at_random_moments_then_resume_is_exact(tmp_path):
    """4 SIGKILLs of a real ``train`` process (see :func:`kill_and_resume`); the kills left
    rows past the last checkpoint (what used to be written twice)."""
    killed, excess = kill_and_resume(tmp_path, seed=20261128)
    assert killed == 4
    assert excess > 0
