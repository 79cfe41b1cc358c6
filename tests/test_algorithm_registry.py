"""A fourth algorithm is its own module plus a registry line: this file defines one (a plain
policy gradient with its own options), registers it, and trains it through the CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from learned_schedules.policies.fields import check_values, option
from learned_schedules.policies.policy_file import load_policy
from learned_schedules.training.cli import main as cli_main
from learned_schedules.training.rl.algorithms import ALGORITHMS, register_algorithm
from learned_schedules.training.rl.algorithms.base import Algorithm, RolloutBatch
from learned_schedules.training.rl.algorithms.registry import resolve_algorithm
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.distributed import Dist


@dataclass
class DummyOptions:
    """The dummy algorithm's options."""

    some_option: float = option(1.0, gt=0, le=10)
    """Scale of the policy-gradient loss."""

    def check(self, prefix: str) -> None:
        check_values(self, prefix)


class Dummy(Algorithm):
    """REINFORCE with the per-context mean reward as its baseline."""

    name = "dummy"
    aliases = ("dummy-alias",)
    method = "dummy-pg"
    policy_kind = "dirichlet"
    options_class = DummyOptions

    def update(self, policy, optimizer: torch.optim.Optimizer, batch: RolloutBatch,
               dist: Dist) -> dict[str, float]:
        adv = (batch.rewards - batch.rewards.mean(1, keepdim=True))[batch.mine]
        features, actions = batch.local()
        optimizer.zero_grad(set_to_none=True)
        logp, _ = policy.evaluate_actions(features, actions)
        loss = -(adv * logp).mean() * self.options.some_option
        grad_norm = self.gradient_step(policy, optimizer, loss, batch.share, dist)
        return {"reward_mean": float(batch.rewards.mean()), "grad_norm": grad_norm}


@pytest.fixture
def dummy():
    register_algorithm(Dummy)
    yield Dummy
    ALGORITHMS.pop("dummy")


SMALL = ["--steps", "3", "--iterations", "3", "--batch", "4", "--hidden", "8", "--depth", "1",
         "--eval-contexts", "8", "--pool-size", "32", "--no-progress", "--eval-every", "0"]


def test_a_registered_algorithm_trains_through_the_cli(dummy, tmp_path):
    assert resolve_algorithm("dummy-alias") == resolve_algorithm("dummy-pg") == "dummy"
    assert isinstance(TrainConfig().dummy, DummyOptions)
    rc = cli_main(["train", "--algo", "dummy", "--dummy.some-option", "0.5", *SMALL,
                   "--out", str(tmp_path), "--run-name", "r"])
    assert rc == 0
    run = tmp_path / "r"
    assert load_policy(run / "policy.safetensors").metadata["method"] == "dummy-pg"
    saved = json.loads((run / "config.json").read_text())
    assert saved["algo"] == "dummy" and saved["dummy"] == {"some_option": 0.5}
    assert TrainConfig.load(run / "config.json").section == DummyOptions(some_option=0.5)
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 1 + 3


def test_its_options_are_checked_and_its_names_taken(dummy, tmp_path, caplog):
    assert cli_main(["train", "--method", "dummy-alias", "--dummy.some-option", "0", *SMALL,
                     "--out", str(tmp_path)]) == 2
    assert "dummy.some_option must be a finite number > 0" in caplog.text
    assert not any(tmp_path.iterdir())

    class Clash(Dummy):
        name = "other"
        aliases = ("dummy-pg",)

    with pytest.raises(ValueError, match="already registered"):
        register_algorithm(Clash)
