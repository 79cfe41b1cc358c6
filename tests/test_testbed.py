"""The analytic testbed: exact velocity, Euler convergence, reference accuracy, rewards."""

from __future__ import annotations

import math

import pytest
import torch

from learned_schedules.policies.schedule import uniform_schedule
from learned_schedules.training.testbed.comparators import (
    best_global_schedule,
    fixed_schedules,
    oracle_schedules,
)
from learned_schedules.training.testbed.mixture import DTYPE, Testbed, generate_config


@pytest.fixture(scope="module")
def testbed() -> Testbed:
    return Testbed.default()


@pytest.mark.parametrize("t", [0.02, 0.3, 0.7, 0.98])
def test_velocity_matches_monte_carlo_posterior_mean(testbed, t):
    """v(x, t) = E[eps - x0 | x_t = x], estimated by self-normalised importance sampling."""
    g = torch.Generator().manual_seed(1)
    c = torch.tensor([2])
    # a point that is typical at time t for class 2
    x0 = testbed.means[2, 1] + testbed.std * torch.randn(8, generator=g, dtype=DTYPE)
    x = (1 - t) * x0 + t * torch.randn(8, generator=g, dtype=DTYPE)
    exact = testbed.velocity(x[None], torch.tensor(t, dtype=DTYPE), c)[0]
    # proposal: draw x0 from the class mixture, weight by p(x_t = x | x0)
    n = 400_000
    comp = torch.multinomial(testbed.log_weights[2].exp(), n, replacement=True, generator=g)
    x0s = testbed.means[2][comp] + testbed.std * torch.randn(n, 8, generator=g, dtype=DTYPE)
    logw = -0.5 * ((x - (1 - t) * x0s) ** 2).sum(-1) / t**2
    w = torch.softmax(logw, 0)
    eps = (x - (1 - t) * x0s) / t
    mc = (w[:, None] * (eps - x0s)).sum(0)
    ess = 1.0 / (w**2).sum()
    assert ess > 50, "importance sampling too degenerate for a meaningful check"
    assert torch.allclose(exact, mc, atol=0.05 * max(1.0, float(mc.norm()))), (exact, mc)


def test_velocity_limits_are_finite_and_exact(testbed):
    x = torch.randn(5, 8, dtype=DTYPE)
    c = torch.arange(5) % testbed.num_classes
    v1 = testbed.velocity(x, torch.tensor(1.0, dtype=DTYPE), c)
    prior_mean = (testbed.log_weights[c].exp()[..., None] * testbed.means[c]).sum(1)
    assert torch.allclose(v1, x - prior_mean)
    v0 = testbed.velocity(x, torch.tensor(0.0, dtype=DTYPE), c)
    assert torch.allclose(v0, -x)


def test_velocity_is_the_score_identity(testbed):
    """For rectified flow, v = -(x + (1-t) * ... ); check v against d/dx log p_t by autograd.

    With x_t = (1-t) x0 + t eps: E[eps | x_t] = -t * score, E[x0 | x_t] = (x + t^2 score)/(1-t),
    so v = -t score - (x + t^2 score) / (1 - t).
    """
    t = 0.4
    c = torch.tensor([0, 3])
    x = torch.randn(2, 8, dtype=DTYPE, requires_grad=True)
    s2 = testbed.std**2
    var = (1 - t) ** 2 * s2 + t**2
    diff = x[:, None, :] - (1 - t) * testbed.means[c]
    logp = torch.logsumexp(testbed.log_weights[c] - 0.5 * (diff**2).sum(-1) / var, -1)
    (score,) = torch.autograd.grad(logp.sum(), x)
    expected = -t * score - (x.detach() + t**2 * score) / (1 - t)
    assert torch.allclose(testbed.velocity(x.detach(), torch.tensor(t, dtype=DTYPE), c),
                          expected, atol=1e-10)


def test_euler_converges_to_the_reference(testbed):
    ctx = testbed.contexts_from_seed(64, 3)
    errs = []
    for n in (50, 100, 200, 400):
        grid = torch.linspace(1, 0, n + 1, dtype=DTYPE) ** 2  # refine near t = 0
        errs.append(float(testbed.squared_error(ctx, grid).mean().sqrt()))
    assert errs[-1] < 0.02
    # first order: halving the step roughly halves the error
    for a, b in zip(errs, errs[1:], strict=False):
        assert 1.6 < a / b < 2.6, errs


def test_reference_matches_a_finer_solve(testbed):
    ctx = testbed.contexts_from_seed(128, 4, with_target=False)
    coarse = testbed.reference(ctx.noise, ctx.classes)
    fine = testbed.reference(ctx.noise, ctx.classes, steps=800)
    assert float(((coarse - fine) ** 2).sum(-1).max()) < 1e-8


def test_rewards(testbed):
    ctx = testbed.contexts_from_seed(16, 5)
    sched = uniform_schedule(5, DTYPE)
    x = testbed.euler(ctx.noise, ctx.classes, sched)
    fid = testbed.sample_and_score(ctx, sched)
    assert torch.allclose(fid, -torch.log(1e-6 + ((x - ctx.target) ** 2).sum(-1)))
    lik = Testbed.default(reward="likelihood")
    got = lik.sample_and_score(ctx, sched)
    # direct mixture density, component by component
    for i in range(4):
        c = int(ctx.classes[i])
        dens = 0.0
        for m in range(lik.means.shape[1]):
            w = math.exp(float(lik.log_weights[c, m]))
            d2 = float(((x[i] - lik.means[c, m]) ** 2).sum())
            dens += w * math.exp(-0.5 * d2 / lik.std**2) / (2 * math.pi * lik.std**2) ** 4
        expected = max(math.log(dens) if dens > 0 else -math.inf, lik.likelihood_floor)
        assert math.isclose(float(got[i]), expected, rel_tol=1e-6, abs_tol=1e-6)


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.pop("std"), "missing 'std'"),
    (lambda c: c.update(std=-1.0), "std must be positive"),
    (lambda c: c["classes"][0].update(weights=[1.0, -1.0, 1.0, 1.0]), "weight must be positive"),
    (lambda c: c["classes"][1].update(means=[[0.0] * 3]), "8-dimensional"),
    (lambda c: c.update(embeddings=[[1.0, 0.0]]), "embeddings must have shape"),
    (lambda c: c.update(reward="clip"), "Unknown testbed reward"),
    (lambda c: c.update(classes=[]), "non-empty"),
])
def test_config_validation(mutate, message):
    cfg = generate_config()
    mutate(cfg)
    with pytest.raises(ValueError, match=message):
        Testbed.from_dict(cfg)


def test_config_file_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        Testbed.from_json(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Testbed.from_json(bad)


def test_default_config_has_headroom(testbed):
    """Oracle error about half the best global one at L=5; best global beats uniform."""
    held = testbed.contexts_from_seed(128, 10_000)
    train = testbed.contexts_from_seed(256, 10_001)
    bg = best_global_schedule(testbed, train, 5, iters=150, starts=("uniform",))
    oracle = oracle_schedules(testbed, held, 5, init=bg, iters=100)
    r_bg = testbed.sample_and_score(held, bg).mean()
    r_or = testbed.sample_and_score(held, oracle).mean()
    r_un = testbed.sample_and_score(held, fixed_schedules(5)["uniform"]).mean()
    # fidelity = -log(error): a reward gap of log 2 means half the (geometric mean) error
    assert float(r_or - r_bg) > math.log(1 / 0.6), (float(r_or), float(r_bg))
    assert float(r_bg) > float(r_un)


def test_multi_start_oracle_is_never_below_a_single_start(testbed):
    """The oracle keeps, per context, the best of its starts: never below any one of them."""
    held = testbed.contexts_from_seed(48, seed=321)
    train = testbed.contexts_from_seed(48, seed=322)
    bg = best_global_schedule(testbed, train, 4, iters=60)
    single = {name: oracle_schedules(testbed, held, 4, starts=(start,), iters=60)
              for name, start in {"best_global": bg, "uniform": uniform_schedule(4)}.items()}
    multi = oracle_schedules(testbed, held, 4, init=bg, iters=60)
    r_multi = testbed.sample_and_score(held, multi)
    for name, sched in single.items():
        r_single = testbed.sample_and_score(held, sched)
        assert (r_multi >= r_single - 1e-9).all(), name
    r_bg = testbed.sample_and_score(held, bg)
    assert (r_multi >= r_bg - 1e-9).all()
    # the two starts really disagree somewhere, so keeping the best of both matters
    r_a, r_b = (testbed.sample_and_score(held, s) for s in single.values())
    assert float((r_a - r_b).abs().max()) > 1e-3


# -- the step-wise seam ---------------------------------------------------------------------
def _backend(reward: str):
    from learned_schedules.training.testbed.backend import TestbedBackend

    return TestbedBackend(Testbed.default(reward=reward), pool_size=64)


@pytest.mark.parametrize("reward", ["fidelity", "likelihood"])
def test_fixed_schedule_rollout_equals_the_rewards_path(reward):
    """A fixed schedule rolled out step by step gives exactly the rewards(...) path's result."""
    from learned_schedules.policies.actors import FixedScheduleActor
    from learned_schedules.policies.dirichlet import to_schedule

    backend = _backend(reward)
    contexts = backend.held_out_contexts(24, seed=77)
    torch.manual_seed(3)
    tau = torch.distributions.Dirichlet(torch.full((5,), 2.0)).sample((24,))
    schedules = to_schedule(tau)  # float32 [24, 5], as a policy gives them
    schedules[:4] = uniform_schedule(4)  # four rows on the shared uniform schedule
    old = backend.rewards(contexts, schedules[:, None, :])[:, 0]
    traj = backend.rollout(contexts, FixedScheduleActor(schedules), steps=4)
    assert traj.reward.dtype == old.dtype and torch.equal(traj.reward, old)
    assert torch.equal(traj.sigmas, schedules.double())
    assert torch.equal(traj.final, backend.testbed.euler(contexts.noise, contexts.classes,
                                                         schedules.double()))
    shared = backend.rollout(contexts, FixedScheduleActor(uniform_schedule(4)), steps=4)
    assert torch.equal(shared.reward[:4], old[:4])


def test_rollout_shows_the_actor_the_denoised_estimate_and_records_its_info():
    from learned_schedules.policies.actors import ActorStep

    backend = _backend("fidelity")
    tb = backend.testbed
    contexts = backend.held_out_contexts(6, seed=5)
    seen = []

    class Halving:
        def next_sigma(self, state):
            seen.append(state)
            nxt = torch.zeros_like(state.sigma) if state.step == state.steps - 1 \
                else state.sigma / 2
            return ActorStep(nxt, {"step": torch.full_like(state.sigma, float(state.step))})

    traj = backend.rollout(contexts, Halving(), steps=3)
    assert [s.step for s in seen] == [0, 1, 2] and all(s.steps == 3 for s in seen)
    # at t = 1 the exact x0 estimate is the class's mean of component means
    class_mean = (tb.log_weights.exp()[..., None] * tb.means).sum(1)[contexts.classes]
    torch.testing.assert_close(seen[0].denoised, class_mean, rtol=0, atol=1e-12)
    # later: x - t v with the exact velocity, E[x0 | x_t]
    s = seen[2]
    torch.testing.assert_close(s.denoised, s.x - s.sigma[:, None] * tb.velocity(
        s.x, s.sigma, contexts.classes))
    expected = torch.tensor([1.0, 0.5, 0.25, 0.0], dtype=DTYPE).expand(6, -1)
    assert torch.equal(traj.sigmas, expected)
    assert torch.equal(traj.info["step"], torch.tensor([0.0, 1.0, 2.0]).expand(6, -1).to(DTYPE))
    assert torch.equal(traj.reward, backend.rewards(contexts, expected[:, None].float())[:, 0])


def test_rollout_rejects_an_actor_that_goes_backwards():
    from learned_schedules.policies.actors import ActorStep

    class Backwards:
        def next_sigma(self, state):
            return ActorStep(state.sigma + 0.1)

    backend = _backend("likelihood")
    with pytest.raises(ValueError, match="does not decrease"):
        backend.rollout(backend.held_out_contexts(2, seed=1), Backwards(), steps=3)
