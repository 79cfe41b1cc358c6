"""Pluggable algorithms: registry, nested config sections (with the old flat keys), CLI
flags, metrics columns from the algorithm, the method written into policy files."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch

from learned_schedules.policies.policy_file import load_policy
from learned_schedules.training.cli import parse_train_args
from learned_schedules.training.rl import engine
from learned_schedules.training.rl.algorithms import ALGORITHMS, Batch, make_algorithm
from learned_schedules.training.rl.algorithms.ppo import PPOConfig
from learned_schedules.training.rl.algorithms.reinforce import ReinforceConfig
from learned_schedules.training.rl.backend import policy_features
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.engine import train, train_iteration
from learned_schedules.training.testbed.backend import TestbedBackend


def _config(tmp_path, **kw) -> TrainConfig:
    base = dict(steps=3, rollouts=2, batch=8, iterations=4, lr=3e-3, eval_every=0,
                checkpoint_every=0, out=str(tmp_path), run_name="run", progress=False,
                eval_contexts=32, hidden=16, depth=1, pool_size=256, seed=2)
    base.update(kw)
    return TrainConfig.from_dict(base)


def _header(run: Path) -> list[str]:
    with (run / "metrics.csv").open() as f:
        return next(csv.reader(f))


def _old_flat(config: TrainConfig) -> dict:
    """``config`` in the flat layout run folders were saved in before the sections."""
    data = json.loads(config.to_json())
    del data["config_version"]
    return {**data, **data.pop("comfy"), **data.pop("policy"), "extra": {}}


def test_every_algorithm_has_its_config_section():
    sections = TrainConfig().sections
    assert set(ALGORITHMS) == set(sections)
    saved = json.loads(TrainConfig().to_json())
    for name, cls in ALGORITHMS.items():
        assert cls.name == name and isinstance(sections[name], cls.options_class)
        assert isinstance(getattr(TrainConfig(), name), cls.options_class)
        assert name in saved
    assert make_algorithm(TrainConfig(algo="ppo")).method == "dirichlet-ppo"
    assert make_algorithm(TrainConfig()).method == "dirichlet-reinforce"


def test_old_flat_keys_map_into_the_active_section():
    cfg = TrainConfig.from_dict({"algo": "ppo", "baseline": "rloo", "ppo_epochs": 3,
                                 "ppo_clip": 0.1, "normalize_advantages": True,
                                 "entropy_coef": 0.02})
    assert cfg.ppo == PPOConfig(baseline="rloo", normalize_advantages=True, entropy_coef=0.02,
                                epochs=3, clip=0.1)
    assert cfg.reinforce == ReinforceConfig()  # the inactive section keeps its defaults
    cfg = TrainConfig.from_dict({"baseline": "xctx", "ppo_epochs": 2})
    assert cfg.reinforce.baseline == "xctx" and cfg.ppo.epochs == 2 and cfg.ppo.baseline == "js"


def test_config_json_nests_sections_and_round_trips(tmp_path):
    cfg = TrainConfig.from_dict({"algo": "ppo", "ppo": {"epochs": 2, "baseline": "none"}})
    data = json.loads(cfg.to_json())
    assert data["ppo"]["epochs"] == 2 and "baseline" not in data and "ppo_epochs" not in data
    assert TrainConfig.from_dict(data) == cfg
    path = tmp_path / "config.json"
    path.write_text(cfg.to_json())
    assert TrainConfig.load(path) == cfg
    with pytest.raises(ValueError, match=r"Unknown config fields: ppo\.epoch"):
        TrainConfig.from_dict({"ppo": {"epoch": 2}})


def test_old_run_folder_config_still_loads(tmp_path):
    """A config.json written before the sections (every flat field present)."""
    old = _old_flat(TrainConfig())
    for section in ALGORITHMS:
        old.pop(section)
    old.update(algo="ppo", baseline="rloo", normalize_advantages=False, entropy_coef=0.0,
               ppo_epochs=6, ppo_clip=0.3)
    cfg = TrainConfig.from_dict(old)
    assert cfg.algo == "ppo" and cfg.ppo.epochs == 6 and cfg.ppo.clip == 0.3
    assert cfg.ppo.baseline == "rloo"
    for name in ("sd3_pickscore", "flux_dev_pickscore", "default_testbed"):
        path = Path(__file__).parents[1] / "training" / "configs" / f"{name}.json"
        if name != "default_testbed":  # the testbed file is a testbed config, not a run config
            TrainConfig.load(path).validate()


def test_validation_of_sections():
    with pytest.raises(ValueError, match="ppo.epochs must be >= 1"):
        TrainConfig.from_dict({"algo": "ppo", "ppo_epochs": 0}).validate()
    with pytest.raises(ValueError, match="algo must be one of"):
        TrainConfig(algo="sac").validate()
    # only the active section is checked: PPO with the none baseline and one rollout is fine
    TrainConfig.from_dict({"algo": "ppo", "baseline": "none", "rollouts": 1}).validate()


def test_cli_nested_flags_shorthands_and_help(capsys):
    cfg, _ = parse_train_args(["--algo", "ppo", "--ppo.epochs", "3", "--baseline",
                               "rloo", "--ppo-clip", "0.25", "--reinforce.entropy-coef", "0.5"])
    assert cfg.ppo.epochs == 3 and cfg.ppo.clip == 0.25 and cfg.ppo.baseline == "rloo"
    assert cfg.reinforce.entropy_coef == 0.5 and cfg.reinforce.baseline == "js"
    cfg, _ = parse_train_args(["--normalize-advantages", "--entropy-coef", "0.1"])
    assert cfg.reinforce.normalize_advantages and cfg.reinforce.entropy_coef == 0.1
    with pytest.raises(SystemExit):
        parse_train_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--ppo.epochs" in text and "--reinforce.baseline" in text
    assert "Optimisation epochs over each batch of rollouts" in text
    # an inherited field's docstring shows in the subclass section too
    assert re.search(r"--ppo\.baseline \S+ Reward baseline", text)


def test_metrics_columns_come_from_the_algorithm(tmp_path):
    reinforce = train(_config(tmp_path / "r"))
    ppo = train(_config(tmp_path / "p", algo="ppo", ppo_epochs=2, baseline="rloo"))
    head_r, head_p = _header(reinforce.run_dir), _header(ppo.run_dir)
    assert head_r[:2] == ["iteration", "lr"] and head_r[-2:] == ["eval_reward", "seconds"]
    assert "approx_kl" in head_p and "clip_frac" in head_p
    assert "approx_kl" not in head_r and "js_weight" in head_r
    with (ppo.run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["approx_kl"]) >= 0 and 0 <= float(r["clip_frac"]) <= 1 for r in rows)
    assert any(float(r["approx_kl"]) > 0 for r in rows)  # epoch 2 moved away from pi_old
    # the policy file's method comes from the algorithm
    assert load_policy(reinforce.run_dir / "policy.safetensors").metadata["method"] == \
        "dirichlet-reinforce"
    assert load_policy(ppo.run_dir / "policy.safetensors").metadata["method"] == "dirichlet-ppo"


def test_resume_keeps_the_existing_header(tmp_path):
    cfg = _config(tmp_path, algo="ppo", baseline="rloo", iterations=4)

    def stop(it, _metrics):
        if it == 2:
            raise KeyboardInterrupt

    part = train(cfg, callback=stop)
    path = part.run_dir / "metrics.csv"
    lines = path.read_text().splitlines()
    custom = lines[0].replace("clip_frac", "clip_frac_old")  # a header from another version
    path.write_text("\n".join([custom, *lines[1:]]) + "\n")
    train(cfg, resume=part.run_dir)
    text = path.read_text().splitlines()
    assert text[0] == custom and len(text) == 5
    assert text[3].count(",") == custom.count(",")


def test_ppo_first_epoch_is_the_reinforce_step(tmp_path):
    """At the first epoch the ratio is exactly 1, so PPO's gradient is REINFORCE's."""
    out = {}
    for algo in ("reinforce", "ppo"):
        cfg = _config(tmp_path, algo=algo, baseline="rloo", ppo_epochs=1)
        backend = TestbedBackend.from_config(cfg)
        torch.manual_seed(0)
        algorithm = make_algorithm(cfg)
        policy = algorithm.build_policy(cfg, backend)
        opt = torch.optim.AdamW(policy.parameters(), lr=1e-2)
        contexts = backend.draw_contexts(8, torch.Generator().manual_seed(1))
        metrics = train_iteration(policy, opt, backend, contexts, cfg)
        out[algo] = (policy.state_dict(), metrics)
    (sd_r, m_r), (sd_p, m_p) = out["reinforce"], out["ppo"]
    for k in sd_r:
        torch.testing.assert_close(sd_r[k], sd_p[k], rtol=1e-6, atol=1e-7)
    assert m_p["approx_kl"] == 0.0 and m_p["clip_frac"] == 0.0
    assert m_r["grad_norm"] == pytest.approx(m_p["grad_norm"], rel=1e-6)


ONE_BATCH_OPTIONS = {"art": {"art": {"grid": 10, "width": 16, "features": False}},
                     "adagen": {"reward": "likelihood"}}
"""What each algorithm needs beyond ``_config`` to collect on the testbed quickly."""


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_collects_the_one_batch_type(tmp_path, name):
    """``collect`` returns a :class:`Batch` (features, this rank's slice, its share, stats)
    for every algorithm, and ``update`` takes it."""
    from learned_schedules.training.rl.distributed import Dist

    cfg = _config(tmp_path, algo=name, **ONE_BATCH_OPTIONS.get(name, {}))
    backend = TestbedBackend.from_config(cfg)
    torch.manual_seed(0)
    algorithm = make_algorithm(cfg)
    policy = algorithm.build_policy(cfg, backend)
    optimizer = algorithm.build_optimizer(policy)
    algorithm.setup(policy, backend)
    contexts = backend.draw_contexts(4, torch.Generator().manual_seed(1))
    batch = algorithm.collect(policy, backend, contexts, Dist())
    assert isinstance(batch, Batch)
    assert set(batch.features) and batch.share == 1.0
    assert torch.equal(batch.mine, torch.arange(4))
    metrics = algorithm.update(policy, optimizer, batch, Dist())
    assert metrics and all(isinstance(v, float) for v in metrics.values())


def test_the_default_collect_asks_for_a_trainable_distribution(tmp_path):
    """A deployed-only kind (ART's distilled clock) has no distribution: a plain TypeError,
    not an AttributeError deep in the rollout."""
    from learned_schedules.policies.art import ARTGlobalClock
    from learned_schedules.training.rl.distributed import Dist

    cfg = _config(tmp_path)
    backend = TestbedBackend.from_config(cfg)
    contexts = backend.draw_contexts(4, torch.Generator().manual_seed(1))
    with pytest.raises(TypeError, match="no sampling distribution"):
        make_algorithm(cfg).collect(ARTGlobalClock(cfg.steps), backend, contexts, Dist())


def test_global_schedule_in_the_policy_file(tmp_path):
    cfg = _config(tmp_path)
    result = train(cfg)
    meta = load_policy(result.run_dir / "policy.safetensors").metadata
    g = torch.tensor(meta["global_schedule"], dtype=torch.float64)
    assert g.shape == (cfg.steps + 1,) and g[0] == 1 and g[-1] == 0 and (g.diff() < 0).all()
    backend = TestbedBackend.from_config(cfg)
    held = backend.held_out_contexts(cfg.eval_contexts, cfg.eval_seed)
    with torch.no_grad():
        mean = result.policy.schedule(policy_features(result.policy, backend, held))
    torch.testing.assert_close(g, mean.double().mean(0), rtol=0, atol=1e-6)


def test_the_engine_names_no_method_or_policy():
    text = Path(engine.__file__).read_text().lower()
    for word in ("dirichlet", "alpha", "concentration", "min_segment", "reinforce", "ppo",
                 "baseline"):
        assert word not in text, word


def test_algorithm_extra_state_survives_a_resume(tmp_path, monkeypatch):
    """An algorithm's own state (a critic, a discriminator and its optimiser) is saved in every
    checkpoint and restored on resume, so resuming equals an uninterrupted run."""
    from learned_schedules.training.rl.algorithms.reinforce import Reinforce
    from learned_schedules.training.rl.checkpoint import load_optimizer, optimizer_tensors

    class WithCritic(Reinforce):
        def setup(self, policy, backend):
            torch.manual_seed(123)
            self.critic = torch.nn.Linear(3, 1)
            self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=1e-2)

        def update(self, policy, optimizer, batch, dist):
            metrics = super().update(policy, optimizer, batch, dist)
            self.critic_opt.zero_grad()
            loss = (self.critic(batch.schedules[:, 0, :3].float()).squeeze(-1)
                    - batch.rewards.mean(1)).pow(2).mean()
            loss.backward()
            self.critic_opt.step()
            return {**metrics, "critic_loss": float(loss.detach())}

        def extra_state(self):
            tensors, groups = optimizer_tensors(self.critic_opt, "critic_opt")
            tensors.update({f"critic.{k}": v for k, v in self.critic.state_dict().items()})
            return tensors, {"critic_opt_groups": groups}

        def load_extra_state(self, tensors, meta):
            self.critic.load_state_dict({k[len("critic."):]: v for k, v in tensors.items()
                                         if k.startswith("critic.")})
            load_optimizer(self.critic_opt, tensors, "critic_opt", meta["critic_opt_groups"])

    monkeypatch.setitem(ALGORITHMS, "reinforce", WithCritic)
    critics = {}

    def keep(name):
        def callback(it, _metrics):
            if name == "part" and it == 2:
                raise KeyboardInterrupt
        return callback

    full = train(_config(tmp_path / "full", iterations=4), callback=keep("full"))
    cfg = _config(tmp_path / "part", iterations=4)
    train(cfg, callback=keep("part"))
    resumed = train(cfg, resume=tmp_path / "part" / "run")
    for name, run in (("full", full), ("resumed", resumed)):
        with (run.run_dir / "metrics.csv").open() as f:
            critics[name] = [r["critic_loss"] for r in csv.DictReader(f)]
    assert critics["full"] == critics["resumed"]
    assert len(set(critics["full"])) > 1
