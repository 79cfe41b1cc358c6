"""The Dirichlet policy's ``scheduled`` concentration: the parameterisation, the progress the
algorithm passes to it, and the loading default that keeps older policy files unchanged."""

from __future__ import annotations

import json

import pytest
import torch

from learned_schedules.policies.dirichlet import ALPHA_FLOOR, DirichletPolicy, schedule_spread
from learned_schedules.policies.encoders import VectorEncoder
from learned_schedules.policies.policy_file import load_policy, save_policy
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.engine import train


def _features(b: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {"noise": torch.randn(b, 8, generator=g), "cond": torch.randn(b, 6, generator=g)}


def _policy(**kw) -> DirichletPolicy:
    torch.manual_seed(0)
    return DirichletPolicy(VectorEncoder(8, 6, hidden=16, depth=1), 4, head_hidden=16, **kw)


def test_scheduled_alpha_is_kappa_times_the_mean_and_follows_the_progress():
    pol = _policy(concentration="scheduled", kappa_start=20.0, kappa_end=500.0)
    feats = _features()
    with torch.no_grad():
        for p in pol.head.parameters():  # a context-dependent mean
            p.add_(0.5 * torch.randn_like(p))
    for frac, kappa in ((0.0, 20.0), (0.5, (20.0 * 500.0) ** 0.5), (1.0, 500.0)):
        pol.set_progress(frac)
        alpha = pol.alpha(feats)
        torch.testing.assert_close(alpha.sum(-1), torch.full((5,), kappa + 5 * ALPHA_FLOOR))
        mean = torch.softmax(pol.head(pol.encoder(**feats)), -1)
        torch.testing.assert_close(alpha, kappa * mean + ALPHA_FLOOR)
    # the mean schedule does not depend on kappa
    pol.set_progress(0.0)
    low = pol.schedule(feats)
    pol.set_progress(1.0)
    torch.testing.assert_close(pol.schedule(feats), low, atol=0, rtol=0)
    diag = pol.diagnostics(feats)
    assert diag["concentration"] == pytest.approx(500.0, rel=1e-3)
    assert diag["schedule_spread"] > 1e-3


def test_scheduled_policy_starts_at_the_given_mean():
    pol = _policy(concentration="scheduled")
    seg = torch.tensor([0.1, 0.2, 0.3, 0.15, 0.25])
    pol.init_mean(seg)
    tau = pol.alpha(_features()) / pol.alpha(_features()).sum(-1, keepdim=True)
    torch.testing.assert_close(tau, seg.expand(5, -1), atol=2e-3, rtol=0)
    assert pol.kappa.item() == 40.0 and pol.kappa_end == 400.0


def test_softplus_is_the_loading_default_and_its_config_is_unchanged():
    pol = _policy(init_concentration=30.0)
    cfg = pol.config()
    assert "concentration" not in cfg and "kappa_start" not in cfg  # as older files wrote it
    rebuilt = DirichletPolicy.from_config(cfg)
    assert rebuilt.concentration == "softplus"
    feats = _features()
    alpha = pol.alpha(feats)
    h = pol.head(pol.encoder(**feats))
    torch.testing.assert_close(alpha, torch.nn.functional.softplus(h) + ALPHA_FLOOR)
    before = pol.schedule(feats)
    pol.set_progress(1.0)  # nothing to schedule
    torch.testing.assert_close(pol.schedule(feats), before, rtol=0, atol=0)


def test_scheduled_policy_file_keeps_its_form_and_last_kappa(tmp_path):
    pol = _policy(concentration="scheduled", kappa_start=40.0, kappa_end=400.0)
    pol.set_progress(0.75)
    path = tmp_path / "p.safetensors"
    save_policy(path, pol, method="dirichlet-reinforce", model_family="testbed")
    loaded = load_policy(path).policy
    assert loaded.config() == pol.config() and loaded.concentration == "scheduled"
    assert loaded.kappa.item() == pytest.approx(pol.kappa.item())
    feats = _features()
    torch.testing.assert_close(loaded.alpha(feats), pol.alpha(feats), rtol=0, atol=0)


@pytest.mark.parametrize("bad", [{"concentration": "learned"}, {"kappa_start": 0.0},
                                 {"kappa_end": float("nan")}])
def test_bad_concentration_options_are_refused(bad):
    with pytest.raises(ValueError):
        _policy(**bad)


@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
def test_the_algorithm_schedules_the_concentration_over_the_run(tmp_path, algo):
    cfg = TrainConfig.from_dict(dict(
        steps=3, algo=algo, baseline="rloo", iterations=5, batch=4, hidden=16, depth=1,
        eval_every=0, checkpoint_every=0, eval_contexts=8, pool_size=64, out=str(tmp_path),
        run_name="r", progress=False, init_concentration=10.0, final_concentration=160.0))
    seen = []
    result = train(cfg, callback=lambda it, m: seen.append(m["concentration"]))
    # geometric: 10 * 16 ** ((it - 1) / 4) at iterations 1..5, logged at collection time
    torch.testing.assert_close(torch.tensor(seen), torch.tensor(
        [10.0, 20.0, 40.0, 80.0, 160.0]) + 4 * ALPHA_FLOOR, rtol=1e-4, atol=0)
    assert result.policy.kappa.item() == pytest.approx(160.0)
    text = (result.run_dir / "metrics.csv").read_text().splitlines()[0]
    assert "schedule_spread" in text.split(",") and "concentration" in text.split(",")


def test_softplus_training_is_still_available(tmp_path):
    cfg = TrainConfig.from_dict(dict(
        steps=3, baseline="rloo", iterations=3, batch=4, hidden=16, depth=1, eval_every=0,
        checkpoint_every=0, eval_contexts=8, pool_size=64, out=str(tmp_path), run_name="r",
        progress=False, concentration="softplus"))
    pol = train(cfg).policy
    assert pol.concentration == "softplus" and not hasattr(pol, "kappa")
    with pytest.raises(ValueError, match="concentration"):
        TrainConfig.from_dict({"concentration": "learned"}).validate()


def test_schedule_spread():
    s = torch.tensor([[1.0, 0.6, 0.2, 0.0], [1.0, 0.4, 0.2, 0.0]])
    assert schedule_spread(s) == pytest.approx(float(torch.tensor([0.6, 0.4]).std()) / 2)
    assert schedule_spread(s[:1]) == 0.0


def _old_flat(config: TrainConfig) -> dict:
    """``config`` as an older version wrote ``config.json`` (flat, with ``extra``)."""
    data = json.loads(config.to_json())
    del data["config_version"]
    return {**data, **data.pop("comfy"), **data.pop("policy"), "extra": {}}


def test_a_config_saved_before_the_option_keeps_the_softplus_form(tmp_path):
    saved = _old_flat(TrainConfig())
    assert saved["concentration"] == "scheduled"  # the default for new runs
    del saved["concentration"]
    assert TrainConfig.from_dict(saved).policy.concentration == "softplus"
    assert TrainConfig.from_dict({"steps": 4}).policy.concentration == "scheduled"
    cfg = TrainConfig.from_dict(dict(steps=3, iterations=4, batch=4, hidden=16, depth=1,
                                     eval_every=0, checkpoint_every=2, eval_contexts=8,
                                     pool_size=64, out=str(tmp_path), run_name="old",
                                     progress=False, concentration="softplus"))

    def stop(it, metrics):
        if it == 2:
            raise KeyboardInterrupt

    assert train(cfg, callback=stop).interrupted
    old = _old_flat(cfg)
    del old["concentration"]  # as an older version wrote config.json
    (tmp_path / "old" / "config.json").write_text(json.dumps(old))
    resumed = TrainConfig.load(tmp_path / "old" / "config.json")
    assert train(resumed, resume=tmp_path / "old").iterations_done == 4
