"""The policy roles and the registry of policy kinds: every registered kind plays exactly its
roles, follows each role's contract and round-trips through a policy file."""

from __future__ import annotations

import pytest
import torch

from learned_schedules.policies.contract import (
    POLICY_KINDS,
    DeployablePolicy,
    OneShotPolicy,
    StepwisePolicy,
    TrainableDistribution,
    TrainableSteps,
    has_schedule,
    is_stepwise,
    is_trainable,
    policy_from_config,
    policy_roles,
    register_policy,
)
from learned_schedules.policies.encoders import VectorEncoder
from learned_schedules.policies.latent_encoder import LatentTextEncoder
from learned_schedules.policies.policy_file import load_policy, save_policy
from learned_schedules.policies.schedule import resample_schedule, validate_schedule

KINDS = sorted(POLICY_KINDS)  # filled by policies.kinds, which policy_file imports
ONE_SHOT = [k for k in KINDS if has_schedule(POLICY_KINDS[k])]
STEPWISE = [k for k in KINDS if is_stepwise(POLICY_KINDS[k])]
TRAINABLE = [k for k in KINDS if is_trainable(POLICY_KINDS[k])]
ROLES = {"dirichlet": {"schedule", "distribution"},
         "art-clock": {"schedule"},  # trained by ART's own actor-critic, deployed one-shot
         "art-global": {"schedule"},  # ART's distilled clock: deployed only
         "stored-schedules": {"schedule"},  # calibrate: stored schedules per step count
         "adagen-step": {"actor", "steps"}}
"""The roles each kind claims (a new kind adds its row)."""


def _features(kind: str, b: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    if kind == "vector":
        return {"noise": torch.randn(b, 8, generator=g), "cond": torch.randn(b, 6, generator=g)}
    return {"noise": torch.randn(b, 16, 8, 8, generator=g),
            "tokens": torch.randn(b, 5, 32, generator=g), "pooled": torch.randn(b, 16, generator=g)}


def _encoder(kind: str):
    return VectorEncoder(8, 6, hidden=16, depth=1) if kind == "vector" \
        else LatentTextEncoder.for_family("tiny")


def _policy(policy_kind: str, encoder_kind: str, steps: int = 4):
    torch.manual_seed(0)
    pol = POLICY_KINDS[policy_kind].for_training(_encoder(encoder_kind), steps, hidden=16)
    with torch.no_grad():  # move away from the initial (uniform) mean
        for p in pol.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return pol.eval()


def test_dirichlet_is_registered():
    assert "dirichlet" in POLICY_KINDS


@pytest.mark.parametrize("encoder_kind", ["vector", "latent"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_round_trips_through_a_policy_file(tmp_path, kind, encoder_kind):
    pol = _policy(kind, encoder_kind)
    path = tmp_path / f"{kind}.safetensors"
    save_policy(path, pol, method="dirichlet-reinforce", model_family="testbed")
    loaded = load_policy(path)
    assert type(loaded.policy) is POLICY_KINDS[kind]
    assert loaded.policy.config() == pol.config()
    assert loaded.metadata["architecture"]["policy"] == kind
    feats = _features(encoder_kind)
    rebuilt = policy_from_config(pol.config())
    rebuilt.load_state_dict(pol.state_dict())
    if is_stepwise(pol):  # no schedule before sampling: compare the first decisions
        first = [_first_step(p, feats) for p in (pol, loaded.policy, rebuilt.eval())]
        assert torch.equal(first[0], first[1]) and torch.equal(first[0], first[2])
        return
    for steps in (None, 9):
        assert torch.equal(loaded.policy.schedule(feats, steps=steps), pol.schedule(feats, steps))
    assert torch.equal(rebuilt.eval().schedule(feats), pol.schedule(feats))


def _first_step(pol, feats: dict[str, torch.Tensor]) -> torch.Tensor:
    """A step-wise policy's first next sigma for ``feats`` (the state: the initial noise)."""
    from learned_schedules.policies.actors import StepState

    x = feats["noise"]
    n = x.shape[0]
    with torch.no_grad():
        return pol.actor(feats).next_sigma(StepState(0, pol.steps, x, torch.ones(n),
                                                     0.5 * x)).sigma_next


@pytest.mark.parametrize("kind", STEPWISE)
def test_every_stepwise_kind_follows_its_contract(kind):
    """Step-wise kinds: an actor per batch whose choices are valid next sigmas, the recorded
    steps re-evaluated differentiably, and no schedule before sampling (a plain error from the
    service that asks for one)."""
    from learned_schedules.comfy_bridge.service import policy_flow
    from learned_schedules.policies.actors import StepState, TrajectoryRecorder, check_decision

    pol = _policy(kind, "vector", steps=4)
    assert isinstance(pol, StepwisePolicy) and isinstance(pol, TrainableSteps)
    assert pol.kind == kind and pol.steps == 4
    feats = _features("vector", b=3)
    actor = pol.actor(feats, mode="sample")
    x, sigma = feats["noise"], torch.ones(3)
    recorder = TrajectoryRecorder(sigma)
    for step in range(4):
        state = StepState(step, 4, x, sigma, 0.5 * x)
        decision = actor.next_sigma(state)
        sigma = check_decision(decision.sigma_next, state)
        recorder.add(decision)
        x = x * 0.9
    traj = recorder.finish(x)
    assert (traj.sigmas[:, -1] == 0).all() and (traj.sigmas[:, :-1] > traj.sigmas[:, 1:]).all()
    logp, entropy, value = pol.evaluate_steps(feats, traj.info)
    assert logp.shape == entropy.shape == value.shape == (3, 4)
    assert logp.requires_grad
    assert not hasattr(pol, "schedule") and not has_schedule(pol)
    with pytest.raises(ValueError, match="step-wise"):
        policy_flow(pol, feats)
    assert isinstance(pol.diagnostics(feats), dict)


@pytest.mark.parametrize("kind", TRAINABLE)
def test_every_trainable_kind_follows_its_contract(kind):
    pol = _policy(kind, "vector", steps=4)
    assert isinstance(pol, TrainableDistribution) and pol.kind == kind and pol.steps == 4
    feats = _features("vector", b=3)
    torch.manual_seed(1)
    actions, logp = pol.sample(feats, 5)
    assert actions.shape[:2] == (3, 5) and logp.shape == (3, 5)
    torch.testing.assert_close(pol.log_prob(feats, actions), logp)
    logp2, entropy = pol.evaluate_actions(feats, actions)
    torch.testing.assert_close(logp2, logp)
    assert entropy.shape == (3,) and torch.equal(entropy, pol.entropy(feats))
    schedules = pol.actions_to_schedules(actions)
    assert schedules.shape == (3, 5, 5)
    for row in schedules.reshape(-1, 5):
        validate_schedule(row.detach())
    assert isinstance(pol.diagnostics(feats), dict)


@pytest.mark.parametrize("kind", ONE_SHOT)
def test_every_one_shot_kind_follows_its_contract(kind):
    pol = _policy(kind, "vector", steps=4)
    assert isinstance(pol, OneShotPolicy) and pol.kind == kind and pol.steps == 4
    feats = _features("vector", b=3)
    # schedule() discretises to any step count itself (a kind may bring its own rule)
    mean = pol.schedule(feats)
    assert mean.shape == (3, 5)
    resample = getattr(pol, "resample", resample_schedule)
    for steps in (2, 4, 11):
        out = pol.schedule(feats, steps=steps)
        assert out.shape == (3, steps + 1)
        torch.testing.assert_close(out, resample(mean, steps))
        for row in out:
            validate_schedule(row.detach())
    assert pol.schedule(feats, mode="sample").shape == (3, 5)
    with pytest.raises(ValueError, match="mode"):
        pol.schedule(feats, mode="median")


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_plays_exactly_the_roles_it_claims(kind):
    """The roles of the class and of an instance are the kind's row in ROLES; every kind is
    deployable, one-shot or step-wise, never both."""
    assert kind in ROLES, f"add {kind!r} and its roles to ROLES"
    pol = _policy(kind, "vector")
    assert policy_roles(POLICY_KINDS[kind]) == ROLES[kind]
    assert policy_roles(pol) == ROLES[kind]
    assert isinstance(pol, DeployablePolicy)
    assert has_schedule(pol) != is_stepwise(pol)


def test_deployed_only_kinds_have_no_distribution_and_stepwise_ones_no_schedule():
    for kind in ("art-global", "art-clock"):
        pol = _policy(kind, "vector")
        for name in ("sample", "log_prob", "entropy", "evaluate_actions",
                     "actions_to_schedules"):
            assert not hasattr(pol, name), (kind, name)
        assert not isinstance(pol, TrainableDistribution)
    assert not hasattr(_policy("adagen-step", "vector"), "schedule")


def test_a_kind_with_no_deployable_role_is_refused():
    class Undeployable:
        kind = "undeployable"

        def sample(self, features, k):
            raise NotImplementedError

    with pytest.raises(ValueError, match="neither one-shot"):
        register_policy(Undeployable)
    assert "undeployable" not in POLICY_KINDS


def test_gradients_flow_through_log_prob():
    pol = _policy("dirichlet", "vector").train()
    feats = _features("vector")
    actions, _ = pol.sample(feats, 2)
    pol.log_prob(feats, actions).sum().backward()
    assert all(p.grad is not None for p in pol.head.parameters())


def test_old_keyword_call_style_still_works():
    """``schedule(mode=..., **features)`` (the nodes' call before the contract)."""
    pol = _policy("dirichlet", "latent")
    feats = _features("latent")
    assert torch.equal(pol.schedule(mode="mean", **feats), pol.schedule(feats))
    assert torch.equal(pol.schedule(**feats), pol.schedule(feats, mode="mean"))
    torch.manual_seed(3)
    a = pol.schedule("sample", **feats)
    torch.manual_seed(3)
    assert torch.equal(a, pol.schedule(feats, mode="sample"))
    with pytest.raises(TypeError, match="one dict"):
        pol.schedule(feats, noise=feats["noise"])


def test_registry_errors():
    with pytest.raises(ValueError, match="Unknown policy kind 'nope'"):
        policy_from_config({"policy": "nope", "steps": 3})

    class Clash:
        kind = "dirichlet"

    with pytest.raises(ValueError, match="already registered"):
        register_policy(Clash)

    class Nameless:
        kind = ""

    with pytest.raises(ValueError, match="non-empty"):
        register_policy(Nameless)
    assert POLICY_KINDS["dirichlet"].__name__ == "DirichletPolicy"
