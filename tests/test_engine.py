"""RL engine: learning on held-out contexts, resume == uninterrupted, CLI train -> eval."""

from __future__ import annotations

import json
import math

import pytest
import torch

from learned_schedules.policies.policy_file import load_policy
from learned_schedules.policies.schedule import shifted_schedule, uniform_schedule
from learned_schedules.training.cli import main as cli_main
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.engine import evaluate_policy, train
from learned_schedules.training.testbed.backend import TestbedBackend


def _small_config(tmp_path, **kw) -> TrainConfig:
    base = dict(steps=3, baseline="js", rollouts=2, batch=16, iterations=30, lr=1e-3,
                eval_every=0, checkpoint_every=10, keep_checkpoints=10, out=str(tmp_path),
                run_name="run", progress=False, eval_contexts=64, hidden=32, depth=1,
                pool_size=1024)
    base.update(kw)
    return TrainConfig.from_dict(base)


def test_resume_equals_uninterrupted(tmp_path):
    full = train(_small_config(tmp_path / "a"))

    def stop_at_12(it, _stats):
        if it == 12:
            raise KeyboardInterrupt

    part = train(_small_config(tmp_path / "b"), callback=stop_at_12)
    assert part.interrupted and part.iterations_done == 12
    assert (part.run_dir / "checkpoints" / "state_000012.safetensors").exists()
    resumed = train(_small_config(tmp_path / "b"), resume=part.run_dir)
    assert resumed.iterations_done == 30
    sd_full, sd_res = full.policy.state_dict(), resumed.policy.state_dict()
    assert sd_full.keys() == sd_res.keys()
    for k in sd_full:
        assert torch.equal(sd_full[k], sd_res[k]), k
    # metrics of the resumed run continue the same CSV without gaps
    rows = (part.run_dir / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 30


def test_config_validation_messages():
    with pytest.raises(ValueError, match="at least 2 rollouts"):
        TrainConfig.from_dict({"baseline": "rloo", "rollouts": 1}).validate()
    with pytest.raises(ValueError, match="baseline must be one of"):
        TrainConfig.from_dict({"baseline": "mean"}).validate()
    with pytest.raises(ValueError, match="Unknown config fields"):
        TrainConfig.from_dict({"stepz": 3})


def test_existing_run_folder_is_not_overwritten(tmp_path):
    train(_small_config(tmp_path, iterations=2))
    with pytest.raises(ValueError, match="already exists"):
        train(_small_config(tmp_path, iterations=2))


def test_a_run_that_failed_before_its_first_iteration_can_be_rerun(tmp_path):
    """Its folder holds only config.json: nothing to lose, so the same name starts again."""
    config = _small_config(tmp_path, iterations=2)
    backend = TestbedBackend.from_config(config)
    real = backend.rewards

    def broken(*args):
        raise RuntimeError("CUDA out of memory (simulated)")

    backend.rewards = broken
    with pytest.raises(RuntimeError, match="simulated"):
        train(config, backend=backend)
    assert [p.name for p in (tmp_path / "run").rglob("*") if p.is_file()] == ["config.json"]
    backend.rewards = real
    assert train(config, backend=backend).iterations_done == 2


@pytest.mark.slow
def test_js_policy_beats_uniform_and_shift3_on_held_out(tmp_path):
    """Learning: a JS-trained policy beats uniform and shift-3 by > 3 standard errors."""
    cfg = _small_config(tmp_path, steps=3, iterations=300, batch=16, lr=2e-3, hidden=64,
                        depth=2, checkpoint_every=0, seed=1)
    result = train(cfg)
    backend = TestbedBackend.from_config(cfg)
    held = backend.held_out_contexts(256, seed=4242)  # not the engine's eval contexts
    learned = evaluate_policy(result.policy, backend, held)
    n = learned.numel()
    for name, sched in {"uniform": uniform_schedule(3), "sd3": shifted_schedule(3, 3.0)}.items():
        ref = backend.rewards(held, sched.expand(n, 1, -1).to(torch.float64))[:, 0]
        diff = (learned.to(torch.float64) - ref)
        se = float(diff.std() / math.sqrt(n))
        assert float(diff.mean()) > 3 * se, (name, float(diff.mean()), se)


def test_cli_train_then_eval(tmp_path, capsys):
    rc = cli_main(["train", "--steps", "3", "--iterations", "4", "--batch", "8",
                   "--hidden", "16", "--depth", "1", "--eval-every", "2",
                   "--eval-contexts", "16", "--pool-size", "256", "--out", str(tmp_path),
                   "--run-name", "cli", "--no-progress"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = tmp_path / "cli"
    assert out["iterations"] == 4 and (run / "policy.safetensors").exists()
    assert (run / "config.json").exists() and (run / "metrics.csv").exists()
    loaded = load_policy(run / "policy.safetensors")
    assert loaded.metadata["steps"] == 3 and loaded.metadata["model_family"] == "testbed"
    rc = cli_main(["eval", str(run), "--contexts", "32", "--train-contexts", "32",
                   "--no-oracle", "--fit-iters", "40"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "learned" in text and "uniform" in text and "best_global" in text
    ev = run / "eval"
    assert (ev / "eval.json").exists() and (ev / "eval.csv").exists()
    assert (ev / "schedules.png").stat().st_size > 1000
    data = json.loads((ev / "eval.json").read_text())
    assert {r["name"] for r in data["rows"]} >= {"learned", "uniform", "sd3", "best_global"}


def test_cli_reports_bad_input(tmp_path, caplog):
    assert cli_main(["train", "--baseline", "bogus", "--out", str(tmp_path)]) == 2
    assert "baseline must be one of" in caplog.text
