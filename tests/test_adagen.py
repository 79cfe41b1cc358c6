"""AdaGen: the step-wise policy kind, the adagen algorithm (PPO + discriminator) on the
testbed, its checkpoints, and the engine / eval paths for step-wise policies."""

from __future__ import annotations

import csv

import pytest
import torch

from learned_schedules.policies.actors import FixedScheduleActor
from learned_schedules.policies.contract import POLICY_KINDS, has_schedule, is_stepwise
from learned_schedules.policies.encoders import VectorEncoder
from learned_schedules.policies.latent_encoder import LatentTextEncoder
from learned_schedules.policies.policy_file import load_policy, save_policy
from learned_schedules.policies.schedule import uniform_schedule
from learned_schedules.policies.stepwise import StepPolicy
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.engine import train
from learned_schedules.training.rl.stepwise import policy_rollout, policy_schedules
from learned_schedules.training.testbed.backend import TestbedBackend
from learned_schedules.training.testbed.mixture import Testbed


def _config(tmp_path, **kw) -> TrainConfig:
    base = dict(algo="adagen", steps=4, rollouts=2, batch=8, iterations=4, lr=3e-3,
                eval_every=0, checkpoint_every=0, out=str(tmp_path), run_name="run",
                progress=False, eval_contexts=32, hidden=16, depth=1, pool_size=256, seed=2,
                reward="likelihood")
    base.update(kw)
    return TrainConfig.from_dict(base)


def _vector_policy(steps: int = 4, seed: int = 0, noisy: bool = True) -> StepPolicy:
    torch.manual_seed(seed)
    pol = StepPolicy(VectorEncoder(8, 6, hidden=16, depth=1), steps, hidden=16)
    if noisy:  # a policy whose mean moves away from the base schedule
        torch.nn.init.normal_(pol.mu.weight, std=1.0)
    return pol


@pytest.fixture(scope="module")
def backend():
    return TestbedBackend(Testbed.default(reward="likelihood"), pool_size=64)


def test_kind_is_registered_and_stepwise():
    assert POLICY_KINDS["adagen-step"] is StepPolicy
    assert is_stepwise(_vector_policy()) and not is_stepwise(torch.nn.Linear(1, 1))
    from learned_schedules.comfy_bridge.service import policy_flow

    assert not has_schedule(_vector_policy())  # no schedule before sampling: a plain error
    with pytest.raises(ValueError, match="step-wise"):
        policy_flow(_vector_policy(), {"noise": torch.zeros(1, 8), "cond": torch.zeros(1, 6)})


def test_initial_policy_follows_its_base_schedule_exactly(backend):
    """Zero-initialised mean: the mean actor is the default schedule, and the rollout equals
    the fixed-schedule rollout (same samples and reward)."""
    ctx = backend.held_out_contexts(16, 3)
    base = torch.tensor([1.0, 0.8, 0.5, 0.2, 0.0], dtype=torch.float64)
    pol = _vector_policy(noisy=False)
    pol = StepPolicy(pol.encoder, 4, hidden=16, default_schedule=base.tolist())
    traj = policy_rollout(pol, backend, ctx)
    fixed = backend.rollout(ctx, FixedScheduleActor(base), 4)
    assert torch.allclose(traj.sigmas.double(), base.expand(16, -1), atol=1e-6)
    assert torch.allclose(traj.final, fixed.final, atol=1e-6)
    assert torch.allclose(traj.reward, fixed.reward, atol=1e-4)


@pytest.mark.parametrize("mode", ["mean", "sample"])
def test_schedules_decrease_strictly_and_end_at_zero(backend, mode):
    ctx = backend.held_out_contexts(32, 4)
    pol = _vector_policy()
    feats = backend.features(ctx)
    for base in (None, uniform_schedule(7, torch.float64)):  # another length via the base
        actor = pol.actor(feats, mode=mode, base=base)
        traj = backend.rollout(ctx, actor, actor.steps)
        s = traj.sigmas
        assert (s[:, :-1] > s[:, 1:]).all() and (s[:, -1] == 0).all() and (s[:, 0] == 1).all()
        # the learned residual moves the schedule (different items, different schedules)
        assert s[:, 1:-1].std(0).max() > 1e-3
    # scale 0 (the fidelity-diversity knob at its end) follows the base exactly
    traj = backend.rollout(ctx, pol.actor(feats, scale=0.0), 4)
    assert torch.allclose(traj.sigmas.double(), uniform_schedule(4, torch.float64).expand(32, -1),
                          atol=1e-6)


def test_recorded_log_probs_match_evaluate_steps(backend):
    ctx = backend.held_out_contexts(8, 5)
    pol = _vector_policy()
    feats = backend.features(ctx)
    traj = backend.rollout(ctx, pol.actor(feats, mode="sample"), 4)
    logp, entropy, value = pol.evaluate_steps(feats, traj.info)
    active = traj.info["active"]
    assert active[:, -1].eq(0).all() and active[:, :-1].eq(1).all()
    assert torch.allclose(logp * active, traj.info["logp"], atol=1e-5)
    assert torch.allclose(value, traj.info["value"], atol=1e-5)
    assert entropy.shape == (8, 4)


def test_latent_policy_reads_latents_and_survives_a_policy_file(tmp_path):
    from learned_schedules.policies.actors import StepState

    torch.manual_seed(0)
    enc = LatentTextEncoder.for_family("small", latent_channels=16, token_dim=32, pooled_dim=16)
    pol = StepPolicy(enc, 3, hidden=16)
    torch.nn.init.normal_(pol.mu.weight, std=1.0)
    path = tmp_path / "step.safetensors"
    save_policy(path, pol, method="adagen", model_family="sd3")
    loaded = load_policy(path).policy
    assert is_stepwise(loaded) and loaded.config() == pol.config()
    feats = {"noise": torch.randn(2, 16, 4, 4), "tokens": torch.randn(2, 5, 32),
             "pooled": torch.randn(2, 16)}
    outs = []
    for p in (pol, loaded):
        actor = p.actor(feats)
        x = torch.randn(2, 16, 4, 4)
        outs.append(actor.next_sigma(StepState(0, 3, x * 0 + feats["noise"], torch.ones(2),
                                               torch.zeros(2, 16, 4, 4))).sigma_next)
    assert torch.allclose(outs[0], outs[1]) and (outs[0] < 1).all() and (outs[0] > 0).all()
    assert not torch.allclose(outs[0][0], outs[0][1])  # reads its own sample


def test_adagen_trains_and_writes_a_loadable_policy(tmp_path, backend):
    result = train(_config(tmp_path, iterations=3, eval_every=3), backend=backend)
    with (result.run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {"disc_loss", "disc_acc", "adv_reward", "value_loss", "clip_frac"} <= set(rows[0])
    loaded = load_policy(result.run_dir / "policy.safetensors")
    assert loaded.metadata["method"] == "adagen" and is_stepwise(loaded.policy)
    gs = loaded.metadata["global_schedule"]
    assert gs[0] == 1 and gs[-1] == 0 and all(a > b for a, b in zip(gs, gs[1:], strict=False))
    ctx = backend.held_out_contexts(8, 1)
    sched = policy_schedules(loaded.policy, backend, ctx)
    assert sched.shape == (8, 5)


def test_adagen_resume_equals_an_uninterrupted_run(tmp_path):
    """The discriminator and its optimiser are in every checkpoint: a run interrupted at
    iteration 2 and resumed logs the same discriminator losses and rewards as one that ran
    straight through."""
    def stop_at_2(it, _metrics):
        if it == 2:
            raise KeyboardInterrupt

    full = train(_config(tmp_path / "full"))
    cfg = _config(tmp_path / "part")
    assert train(cfg, callback=stop_at_2).interrupted
    resumed = train(cfg, resume=tmp_path / "part" / "run")
    logs = {}
    for name, run in (("full", full), ("resumed", resumed)):
        with (run.run_dir / "metrics.csv").open() as f:
            logs[name] = [(r["disc_loss"], r["adv_reward"], r["reward_mean"])
                          for r in csv.DictReader(f)]
    assert logs["full"] == logs["resumed"] and len(logs["full"]) == 4
    assert len({row[0] for row in logs["full"]}) > 1


def test_adagen_refuses_a_reward_free_config(tmp_path):
    with pytest.raises(ValueError, match="adagen needs a reward"):
        _config(tmp_path, adagen={"adversarial": 0.0, "task": 0.0}).validate()


def test_eval_reads_a_stepwise_policy_against_its_ceilings(tmp_path, backend):
    """``eval`` of a step-wise policy: beside the best global schedule, the row
    ``learned_mean`` (one fixed schedule at the mean of the policy's own schedules over the
    held-out contexts), the spread of those schedules and the policy's paired differences from
    its mean, and the testbed's set measures (fd, tv) with paired bootstrap SEs. Every number
    is recomputed here from the policy's schedules (computed, not copied)."""
    from learned_schedules.training.eval import evaluate_policy_file

    result = train(_config(tmp_path, iterations=2, adagen={"init_std": 0.6}), backend=backend)
    torch.nn.init.normal_(result.policy.mu.weight, std=2.0)  # per-context schedules that differ
    save_policy(tmp_path / "spread.safetensors", result.policy, method="adagen",
                model_family="testbed", reward="likelihood")
    report = evaluate_policy_file(tmp_path / "spread.safetensors", contexts=64, backend=backend,
                                  options={"oracle": False, "train_contexts": 32,
                                           "fit_iters": 5}, out=tmp_path / "eval")
    rows = {row["name"]: row for row in report.rows}
    assert {"best_global", "uniform", "learned", "learned_mean"} <= set(rows)
    ctx = backend.held_out_contexts(64, 10_000)
    sched = policy_schedules(result.policy.eval(), backend, ctx).double()
    mean = sched.mean(0)
    assert torch.allclose(torch.tensor(report.spread["mean"], dtype=torch.float64), mean)
    dev = (sched - mean).abs()
    assert report.spread["max_dev"] == pytest.approx(float(dev.max()))
    assert report.spread["max_dev"] > 0.01  # the policy's schedules do differ per context
    fixed = backend.rewards(ctx, mean.float().expand(64, -1)[:, None])[:, 0].double()
    assert rows["learned_mean"]["reward_mean"] == pytest.approx(float(fixed.mean()), rel=1e-5)
    own = backend.rewards(ctx, sched.float()[:, None])[:, 0].double()
    assert report.spread["reward_minus_mean"] == pytest.approx(float((own - fixed).mean()),
                                                               rel=1e-4, abs=1e-6)
    assert set(report.set_metrics) == {"fd", "tv"}
    for name in ("learned", "learned_mean", "best_global"):
        assert rows[name]["fd_se"] > 0 and rows[name]["fd_minus_best_global_se"] >= 0
    assert report.spread["fd_minus_mean_se"] > 0
    table = (tmp_path / "eval" / "eval.md").read_text()
    assert "| learned_mean |" in table and "Per-image choice" in table
    assert "learned − learned_mean" in table


def test_testbed_fd_ranks_a_fine_schedule_above_a_coarse_one(backend):
    """The testbed's set measure: Euler with 24 steps is closer to the data than with 1 step
    by many paired bootstrap SEs (the same resamples for both)."""
    ctx = backend.held_out_contexts(300, 5)
    sets = backend.set_metrics(ctx, {"one": uniform_schedule(1, torch.float64),
                                     "fine": uniform_schedule(24, torch.float64)})
    one, fine = sets["one"]["fd"], sets["fine"]["fd"]
    assert one.value - fine.value > 5 * one.diff_se(fine) > 0


def test_adagen_base_schedule_and_critic_warmup(tmp_path, backend):
    """``adagen.base`` sets the policy's base schedule (the initial mean rollout follows it);
    during ``critic_warmup`` only the value head learns (the actor's mean and spread stay)."""
    base = "1,0.6,0.35,0.15,0"
    result = train(_config(tmp_path, iterations=2, adagen={"base": base, "critic_warmup": 2}),
                   backend=backend)
    pol = result.policy
    want = torch.tensor([1, 0.6, 0.35, 0.15, 0], dtype=torch.float64)
    assert torch.allclose(pol.default.double(), want)
    assert not pol.mu.weight.detach().any() and not pol.mu.bias.detach().any()
    assert float(pol.std.detach()) == pytest.approx(0.6)
    assert pol.value.weight.detach().any()  # the critic moved
    sched = policy_schedules(pol.eval(), backend, backend.held_out_contexts(4, 1)).double()
    assert torch.allclose(sched, want.expand(4, -1), atol=1e-6)
    moved = train(_config(tmp_path, run_name="moved", iterations=2,
                          adagen={"base": base, "critic_warmup": 1}), backend=backend).policy
    assert moved.mu.weight.detach().any()  # after the warm-up the actor learns
    for bad in ("1,0.5,0", "1,0.6,0.6,0.1,0", "1,0.6,x,0.1,0", "1,0.6,0.3,0.1,0.05"):
        with pytest.raises(ValueError, match="adagen.base"):
            _config(tmp_path, adagen={"base": bad}).validate()
