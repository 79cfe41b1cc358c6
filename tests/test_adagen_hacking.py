"""Reward hacking, measured on the testbed (3 steps, held-out contexts).

AdaGen trained on the likelihood reward alone pushes the likelihood of its samples above that
of *true* samples while the mixture components it reaches drift from the true weights (total
variation distance up) and the samples' distribution moves away from the data (Fréchet
distance up). Trained on the adversarial reward instead (a discriminator against true mixture
samples, no likelihood), it keeps the component frequencies close to the default schedule's
and to the data's, with a clearly better likelihood (quality) than the default schedule. All
asserted on measured numbers of 1024 held-out contexts; each run is 250 iterations on 1 thread.
"""

from __future__ import annotations

import pytest
import torch

from learned_schedules.policies.actors import FixedScheduleActor
from learned_schedules.policies.schedule import uniform_schedule
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.engine import train
from learned_schedules.training.rl.stepwise import policy_rollout
from learned_schedules.training.testbed.backend import TestbedBackend
from learned_schedules.training.testbed.diversity import mixture_measures
from learned_schedules.training.testbed.mixture import Testbed

STEPS = 3


def _train(tmp_path, name: str, adversarial: float, task: float):
    cfg = TrainConfig.from_dict(dict(
        algo="adagen", steps=STEPS, batch=32, rollouts=2, iterations=250, eval_every=0,
        eval_contexts=32, pool_size=4096, out=str(tmp_path), run_name=name, progress=False,
        hidden=64, reward="likelihood", lr=1e-3, seed=0, checkpoint_every=0, sample_every=0,
        threads=1))
    cfg.adagen.adversarial, cfg.adagen.task = adversarial, task
    return train(cfg)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hacking")
    backend = TestbedBackend(Testbed.default(reward="likelihood"))
    ctx = backend.held_out_contexts(1024, 10_000)
    tb = backend.testbed
    default = backend.rollout(ctx, FixedScheduleActor(uniform_schedule(STEPS, torch.float64)),
                              STEPS).final
    true, _ = tb.sample_data(ctx.classes, torch.Generator().manual_seed(3))
    out = {"default": mixture_measures(tb, ctx, default), "data": mixture_measures(tb, ctx, true)}
    for name, adv, task in (("likelihood", 0.0, 1.0), ("adversarial", 1.0, 0.0)):
        run = _train(tmp, name, adv, task)
        out[name] = mixture_measures(tb, ctx, policy_rollout(run.policy, backend, ctx).final)
        out[f"{name}_run"] = run
    out["backend"], out["contexts"] = backend, ctx
    return out


def test_likelihood_reward_alone_is_hacked(measured):
    lik, default, data = measured["likelihood"], measured["default"], measured["data"]
    assert lik["loglik"] > data["loglik"] > default["loglik"]  # "better" than the data itself
    assert lik["tv"] > default["tv"] + 0.025, (lik, default)  # components drift
    assert lik["fd"] > 1.3 * default["fd"], (lik, default)  # the distribution moves away


def test_adversarial_reward_keeps_diversity_with_better_quality(measured):
    adv, lik, default = measured["adversarial"], measured["likelihood"], measured["default"]
    assert adv["tv"] < lik["tv"] - 0.02, (adv, lik)
    assert adv["tv"] < default["tv"] + 0.025, (adv, default)  # close to the default's
    assert adv["fd"] < lik["fd"], (adv, lik)
    assert adv["loglik"] > default["loglik"] + 5.0, (adv, default)  # better quality


def test_best_of_n_with_the_discriminator_improves_fidelity_and_diversity(measured):
    """Inference-time refinement: of 8 sampled rollouts per context keep the one the trained
    discriminator (read back from the run's checkpoint) finds most data-like; against one
    sampled rollout per context, the likelihood rises and TV and FD do not get worse."""
    from learned_schedules.training.rl.algorithms.adagen import best_of_n, load_discriminator

    run, backend, ctx = measured["adversarial_run"], measured["backend"], measured["contexts"]
    state = sorted((run.run_dir / "checkpoints").glob("state_*.safetensors"))[-1]
    disc = load_discriminator(state)
    got = {}
    for n in (1, 8):
        torch.manual_seed(0)
        final, sigmas, _ = best_of_n(run.policy, disc, backend, ctx, n)
        assert (sigmas[:, :-1] > sigmas[:, 1:]).all() and (sigmas[:, -1] == 0).all()
        got[n] = mixture_measures(backend.testbed, ctx, final)
    assert got[8]["loglik"] > got[1]["loglik"] + 3.0, got
    assert got[8]["fd"] <= got[1]["fd"] and got[8]["tv"] <= got[1]["tv"] + 0.005, got


def test_residual_scale_moves_between_the_default_and_the_policy(measured):
    """The fidelity-diversity knob: scale 0 is the default schedule, 1 the trained policy;
    the likelihood moves monotonically between them (mean actions)."""
    run, backend, ctx = measured["adversarial_run"], measured["backend"], measured["contexts"]
    ll = [mixture_measures(backend.testbed, ctx,
                           policy_rollout(run.policy, backend, ctx, scale=s).final)["loglik"]
          for s in (0.0, 0.5, 1.0)]
    assert ll[0] == pytest.approx(measured["default"]["loglik"], abs=1e-3)
    assert ll[0] < ll[1] < ll[2], ll
