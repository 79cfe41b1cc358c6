"""Learning quality (issue 11): on a testbed whose prompts differ a lot, the trained policy's
schedules depend on the context and beat the best single (global) schedule on held-out
contexts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from learned_schedules.policies.dirichlet import schedule_spread
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.engine import evaluate_policy, policy_features, train
from learned_schedules.training.testbed.backend import TestbedBackend
from learned_schedules.training.testbed.comparators import best_global_schedule

HETERO = Path(__file__).resolve().parents[1] / "training" / "configs" / "hetero_prompts.json"


@pytest.mark.slow
def test_policy_schedules_differ_across_contexts_and_beat_the_best_global_one(tmp_path):
    """Spread (std across held-out contexts of the mean schedule, averaged over the interior
    timesteps) well above a collapse, and the held-out reward above the best global schedule's
    (fitted on training-stream contexts) by more than 3 paired standard errors."""
    torch.manual_seed(0)
    cfg = TrainConfig.from_dict(dict(
        testbed_config=str(HETERO), steps=5, baseline="rloo", iterations=400, batch=16,
        rollouts=2, eval_every=0, checkpoint_every=0, eval_contexts=64, out=str(tmp_path),
        run_name="run", progress=False, pool_size=4096, seed=0, threads=1))
    result = train(cfg)
    backend = TestbedBackend.from_config(cfg)
    held = backend.held_out_contexts(256, seed=4242)  # not the engine's eval contexts
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            sched = result.policy.schedule(policy_features(result.policy, backend, held))
        learned = evaluate_policy(result.policy, backend, held).double()
        fit_on = backend.testbed.contexts_from_seed(256, 777)  # training-like, not held out
        best = best_global_schedule(backend.testbed, fit_on, cfg.steps, iters=200)
        n = len(held)
        ref = backend.rewards(held, best.expand(n, 1, -1).to(torch.float64))[:, 0].double()
    finally:
        torch.set_num_threads(before)
    spread = schedule_spread(sched)
    assert spread > 0.03, spread  # a collapsed policy is below 0.003 (the criterion)
    diff = learned - ref
    se = float(diff.std() / math.sqrt(n))
    assert float(diff.mean()) > 3 * se, (float(diff.mean()), se, float(learned.mean()),
                                         float(ref.mean()))
