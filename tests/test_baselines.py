"""Reward baselines: hand-computed values, JS-weight limits, errors, shapes and properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learned_schedules.training.rl.baselines import (
    BASELINE_KINDS,
    BaselineResult,
    advantages,
    compute_baseline,
)

F64 = torch.float64


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


def _close(actual: torch.Tensor, expected: list[list[float]], tol: float = 1e-12) -> None:
    torch.testing.assert_close(actual, _t(expected), rtol=0, atol=tol)


# --- Hand-computed values --------------------------------------------------------------------

R1 = [[1.0, 2.0, 3.0], [4.0, 6.0, 8.0]]  # B = 2, K = 3, batch sum 24, N = 6


def test_none_is_zero():
    res = compute_baseline(_t(R1), "none")
    _close(res.baseline, [[0.0] * 3] * 2)
    assert float(res.js_weight) == 0.0


def test_rloo_hand_values():
    res = compute_baseline(_t(R1), "rloo")
    # Row 1: (2+3)/2, (1+3)/2, (1+2)/2; row 2: (6+8)/2, (4+8)/2, (4+6)/2.
    _close(res.baseline, [[2.5, 2.0, 1.5], [7.0, 6.0, 5.0]])
    assert float(res.js_weight) == 0.0


def test_xctx_hand_values():
    res = compute_baseline(_t(R1), "xctx")
    # (24 - r) / 5.
    _close(res.baseline, [[4.6, 4.4, 4.2], [4.0, 3.6, 3.2]])
    assert float(res.js_weight) == 1.0


def test_js_hand_values():
    # B = 3, K = 2. Within-context unbiased variances: 2, 2, 2 -> s2 = 2.
    # Context means 1, 4, 11; batch mean 16/3; sum of squared deviations 474/9 = 158/3;
    # / (B - 1) -> 79/3; minus s2/K = 1 -> d2 = 76/3.  s2/(K-1) = 2 -> a = 2/(2 + 76/3) = 3/41.
    r = _t([[0.0, 2.0], [3.0, 5.0], [10.0, 12.0]])
    res = compute_baseline(r, "js")
    assert isinstance(res, BaselineResult)
    assert float(res.s2) == pytest.approx(2.0, abs=1e-12)
    assert float(res.d2) == pytest.approx(76.0 / 3.0, abs=1e-12)
    assert float(res.js_weight) == pytest.approx(3.0 / 41.0, abs=1e-12)
    # b_rloo = [[2, 0], [5, 3], [12, 10]]; b_xctx = (32 - r)/5 = [[6.4, 6], [5.8, 5.4], [4.4, 4]];
    # b_js = (38 * b_rloo + 3 * b_xctx) / 41.
    _close(res.baseline, [[95.2 / 41, 18.0 / 41], [207.4 / 41, 130.2 / 41],
                          [469.2 / 41, 392.0 / 41]])
    _close(compute_baseline(r, "rloo").baseline, [[2.0, 0.0], [5.0, 3.0], [12.0, 10.0]])
    _close(compute_baseline(r, "xctx").baseline, [[6.4, 6.0], [5.8, 5.4], [4.4, 4.0]])


def test_js_clipped_d2_gives_full_shrinkage():
    # Means 1, 2, 1: between-context variance 1/3 < s2/K = 2/2 = 1, so d2 = 0 and a = 1.
    r = _t([[0.0, 2.0], [1.0, 3.0], [2.0, 0.0]])
    res = compute_baseline(r, "js")
    assert float(res.d2) == 0.0
    assert float(res.js_weight) == 1.0
    # Batch sum 8, N = 6: b = (8 - r) / 5.
    _close(res.baseline, [[1.6, 1.2], [1.4, 1.0], [1.2, 1.6]])


def test_js_zero_within_variance_gives_rloo():
    # s2 = 0 < d2: a = 0, b_js = b_rloo = the context's own (constant) reward.
    r = _t([[1.0, 1.0], [5.0, 5.0], [9.0, 9.0]])
    res = compute_baseline(r, "js")
    assert float(res.js_weight) == 0.0
    _close(res.baseline, [[1.0, 1.0], [5.0, 5.0], [9.0, 9.0]])


def test_js_all_equal_rewards_no_nan():
    r = torch.full((4, 3), 2.5, dtype=F64)
    for kind in BASELINE_KINDS:
        res = compute_baseline(r, kind)
        assert torch.isfinite(res.baseline).all()
        assert math.isfinite(float(res.js_weight))
    res = compute_baseline(r, "js")
    assert float(res.js_weight) == 1.0  # documented choice for s2 = d2 = 0
    _close(res.baseline, [[2.5] * 3] * 4)


def test_js_single_context_is_rloo():
    r = _t([[1.0, 4.0, 7.0]])
    res = compute_baseline(r, "js")
    assert res.d2 is None
    assert float(res.js_weight) == 0.0
    _close(res.baseline, [[5.5, 4.0, 2.5]])


def test_js_two_contexts_uses_formula():
    # B = 2, K = 2: s2 = (2 + 8)/2 = 5; means 1, 6 -> between variance 12.5; d2 = 12.5 - 2.5 = 10;
    # a = 5 / (5 + 10) = 1/3.
    r = _t([[0.0, 2.0], [4.0, 8.0]])
    res = compute_baseline(r, "js")
    assert float(res.s2) == pytest.approx(5.0)
    assert float(res.d2) == pytest.approx(10.0)
    assert float(res.js_weight) == pytest.approx(1.0 / 3.0)
    # b_rloo = [[2, 0], [8, 4]]; b_xctx = (14 - r)/3 = [[14/3, 4], [10/3, 2]].
    _close(res.baseline, [[(4 + 14 / 3) / 3, (0 + 4) / 3], [(16 + 10 / 3) / 3, (8 + 2) / 3]])


def test_advantages_hand_values():
    r = _t(R1)
    _close(advantages(r, "rloo"), [[-1.5, 0.0, 1.5], [-3.0, 0.0, 3.0]])
    _close(advantages(r, "none"), R1)
    # Batch std of [1, 2, 3, 4, 6, 8]: mean 4, squared deviations 9+4+1+0+4+16 = 34; 34/5 = 6.8.
    std = math.sqrt(6.8)
    expect = [[-1.5 / std, 0.0, 1.5 / std], [-3.0 / std, 0.0, 3.0 / std]]
    _close(advantages(r, "rloo", normalize=True), expect, tol=1e-7)


# --- Independent loop reference ---------------------------------------------------------------


def _loop_reference(rows: list[list[float]], kind: str) -> tuple[list[list[float]], float]:
    """Plain-Python re-implementation of the REFERENCE.md formulas (no torch)."""
    b, k = len(rows), len(rows[0])
    n = b * k
    total = sum(sum(row) for row in rows)
    rloo = [[(sum(row) - row[i]) / (k - 1) if k > 1 else 0.0 for i in range(k)] for row in rows]
    xctx = [[(total - row[i]) / (n - 1) for i in range(k)] for row in rows]
    if kind == "none":
        return [[0.0] * k for _ in rows], 0.0
    if kind == "rloo":
        return rloo, 0.0
    if kind == "xctx":
        return xctx, 1.0
    means = [sum(row) / k for row in rows]
    s2 = sum(sum((x - m) ** 2 for x in row) / (k - 1)
             for row, m in zip(rows, means, strict=True)) / b
    if b == 1:
        a = 0.0
    else:
        grand = total / n
        d2 = max(0.0, sum((m - grand) ** 2 for m in means) / (b - 1) - s2 / k)
        v = s2 / (k - 1)
        a = 1.0 if v + d2 == 0 else v / (v + d2)
    js = [[(1 - a) * rloo[c][i] + a * xctx[c][i] for i in range(k)] for c in range(b)]
    return js, a


@pytest.mark.parametrize("kind", BASELINE_KINDS)
@pytest.mark.parametrize("shape", [(1, 2), (2, 2), (3, 2), (5, 4), (16, 2), (7, 9)])
def test_matches_loop_reference(kind, shape):
    g = torch.Generator().manual_seed(
        10_000 * BASELINE_KINDS.index(kind) + 100 * shape[0] + shape[1])
    means = torch.randn(shape[0], 1, generator=g, dtype=F64) * 2
    r = means + torch.randn(*shape, generator=g, dtype=F64)
    expected, a = _loop_reference(r.tolist(), kind)
    res = compute_baseline(r, kind)
    _close(res.baseline, expected, tol=1e-10)
    assert float(res.js_weight) == pytest.approx(a, abs=1e-12)


# --- JS weight at the limits ------------------------------------------------------------------


def test_js_weight_near_one_for_identical_context_means():
    g = torch.Generator().manual_seed(0)
    r = 3.0 + torch.randn(400, 4, generator=g, dtype=F64)  # one distribution for every context
    a = float(compute_baseline(r, "js").js_weight)
    assert a > 0.9


def test_js_weight_near_zero_for_separated_context_means():
    g = torch.Generator().manual_seed(1)
    means = torch.linspace(-20.0, 20.0, 16, dtype=F64)[:, None]
    r = means + 0.01 * torch.randn(16, 2, generator=g, dtype=F64)
    a = float(compute_baseline(r, "js").js_weight)
    assert 0.0 <= a < 1e-3
    torch.testing.assert_close(compute_baseline(r, "js").baseline,
                               compute_baseline(r, "rloo").baseline, rtol=0, atol=1e-2)


# --- Errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rloo", "js"])
def test_single_rollout_errors(kind):
    with pytest.raises(ValueError, match="K >= 2"):
        compute_baseline(torch.zeros(4, 1), kind)


def test_single_rollout_ok_for_none_and_xctx():
    r = _t([[1.0], [2.0], [6.0]])
    _close(compute_baseline(r, "xctx").baseline, [[4.0], [3.5], [1.5]])
    _close(compute_baseline(r, "none").baseline, [[0.0], [0.0], [0.0]])
    res = compute_baseline(r, "none")
    assert res.s2 is None and res.d2 is None


def test_other_errors():
    with pytest.raises(ValueError, match="at least 2 rewards"):
        compute_baseline(torch.zeros(1, 1), "xctx")
    with pytest.raises(ValueError, match="must be one of"):
        compute_baseline(torch.zeros(2, 2), "ppo")
    with pytest.raises(ValueError, match="shape"):
        compute_baseline(torch.zeros(4), "rloo")
    with pytest.raises(ValueError, match="NaN"):
        compute_baseline(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "js")


# --- Shapes and dtypes ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BASELINE_KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_shapes_and_dtypes(kind, dtype):
    r = torch.randn(16, 2, dtype=dtype)
    res = compute_baseline(r, kind)
    assert res.baseline.shape == (16, 2) and res.baseline.dtype == dtype
    assert res.js_weight.shape == () and res.js_weight.dtype == dtype
    assert advantages(r, kind).shape == (16, 2)
    assert advantages(r, kind, normalize=True).shape == (16, 2)


def test_integer_rewards_are_promoted():
    res = compute_baseline(torch.tensor([[1, 2], [3, 4], [5, 9]]), "js")
    assert res.baseline.is_floating_point()


@pytest.mark.parametrize("kind", BASELINE_KINDS)
def test_leading_dims_match_per_slice(kind):
    r = torch.randn(5, 3, 6, 4, dtype=F64)
    res = compute_baseline(r, kind)
    assert res.baseline.shape == r.shape and res.js_weight.shape == (5, 3)
    for i in range(5):
        for j in range(3):
            one = compute_baseline(r[i, j], kind)
            torch.testing.assert_close(res.baseline[i, j], one.baseline)
            torch.testing.assert_close(res.js_weight[i, j], one.js_weight)
    torch.testing.assert_close(advantages(r, kind, normalize=True)[2, 1],
                               advantages(r[2, 1], kind, normalize=True))


# --- Properties -------------------------------------------------------------------------------

reward_matrices = st.tuples(st.integers(1, 6), st.integers(2, 6)).flatmap(
    lambda bk: st.lists(
        st.lists(st.floats(-100.0, 100.0, allow_nan=False, allow_infinity=False),
                 min_size=bk[1], max_size=bk[1]),
        min_size=bk[0], max_size=bk[0]))


@settings(max_examples=200, deadline=None)
@given(reward_matrices)
def test_js_between_rloo_and_xctx(rows):
    r = _t(rows)
    js = compute_baseline(r, "js")
    a = float(js.js_weight)
    assert 0.0 <= a <= 1.0
    assert torch.isfinite(js.baseline).all()
    rloo = compute_baseline(r, "rloo").baseline
    xctx = compute_baseline(r, "xctx").baseline
    lo, hi = torch.minimum(rloo, xctx), torch.maximum(rloo, xctx)
    tol = 1e-9 * (1.0 + r.abs().max())
    assert bool((js.baseline >= lo - tol).all()) and bool((js.baseline <= hi + tol).all())


@settings(max_examples=200, deadline=None)
@given(reward_matrices)
def test_advantages_sum_to_zero(rows):
    r = _t(rows)
    tol = 1e-9 * (1.0 + r.abs().max()) * r.numel()
    # RLOO advantages sum to zero within every context; XCTX over the whole batch.
    assert advantages(r, "rloo").sum(-1).abs().max() <= tol
    assert advantages(r, "xctx").sum().abs() <= tol


# --- Robust and grouped James-Stein variants (issue 11) ---------------------------------------

from learned_schedules.training.rl.baselines import (  # noqa: E402
    EXTRA_BASELINE_KINDS,
    grouped_js_baseline,
    normal_scores,
    winsorize,
)


def _grouped_loop_reference(rows: list[list[float]], groups: list[int],
                            pooled: bool) -> tuple[list[list[float]], list[float]]:
    """Plain-Python grouped James-Stein: per-context weights and baselines."""
    b, k = len(rows), len(rows[0])
    means = [sum(row) / k for row in rows]
    s2 = sum(sum((x - m) ** 2 for x in row) / (k - 1)
             for row, m in zip(rows, means, strict=True)) / b
    v = s2 / (k - 1)
    members: dict[int, list[int]] = {}
    for c, g in enumerate(groups):
        members.setdefault(g, []).append(c)
    gmean = {g: sum(means[c] for c in cs) / len(cs) for g, cs in members.items()}
    dev = {g: sum((means[c] - gmean[g]) ** 2 for c in cs) for g, cs in members.items()}

    def weight(d2: float) -> float:
        return 1.0 if v + d2 == 0 else v / (v + d2)

    if pooled:
        dof = sum(len(cs) - 1 for cs in members.values())
        a_pool = weight(max(0.0, sum(dev.values()) / dof - s2 / k)) if dof else 0.0
        a_g = {g: a_pool for g in members}
    else:
        a_g = {g: weight(max(0.0, dev[g] / (len(cs) - 1) - s2 / k)) if len(cs) > 1 else 0.0
               for g, cs in members.items()}
    out, weights = [], []
    for c, row in enumerate(rows):
        g = groups[c]
        total = sum(sum(rows[j]) for j in members[g])
        n = len(members[g]) * k
        a = a_g[g]
        weights.append(a)
        out.append([(1 - a) * (sum(row) - row[i]) / (k - 1) + a * (total - row[i]) / (n - 1)
                    for i in range(k)])
    return out, weights


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("groups", [[0, 0, 1, 1], [0, 1, 0, 1, 2, 2, 2, 5], [3, 3, 3, 3, 3, 7],
                                    [0, 1, 2, 3], [0, 0, 0, 1, 1, 2]])
def test_grouped_js_matches_loop_reference(pooled, groups):
    g = torch.Generator().manual_seed(len(groups) * 7 + pooled)
    b = len(groups)
    means = torch.randn(b, 1, generator=g, dtype=F64) * 2
    r = means + torch.randn(b, 3, generator=g, dtype=F64)
    expected, weights = _grouped_loop_reference(r.tolist(), groups, pooled)
    kind = "js_group_pooled" if pooled else "js_group"
    res = compute_baseline(r, kind, groups=torch.tensor(groups))
    _close(res.baseline, expected, tol=1e-10)
    assert float(res.js_weight) == pytest.approx(sum(weights) / b, abs=1e-12)


@pytest.mark.parametrize("kind", ["js_group", "js_group_pooled"])
def test_grouped_js_without_groups_is_js(kind):
    g = torch.Generator().manual_seed(3)
    r = torch.randn(4, 16, 2, generator=g, dtype=F64) + torch.randn(16, 1, generator=g,
                                                                     dtype=F64)
    res, js = compute_baseline(r, kind), compute_baseline(r, "js")
    torch.testing.assert_close(res.baseline, js.baseline, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.js_weight, js.js_weight, rtol=0, atol=1e-12)


def test_grouped_js_shrinks_toward_own_group():
    # Four prompts with very different reward levels; the seeds of one prompt are alike.
    g = torch.Generator().manual_seed(4)
    level = torch.tensor([-10.0, 0.0, 10.0, 20.0], dtype=F64).repeat_interleave(4)[:, None]
    r = level + torch.randn(16, 2, generator=g, dtype=F64)
    groups = torch.arange(4).repeat_interleave(4)
    js = compute_baseline(r, "js")
    grouped = compute_baseline(r, "js_group_pooled", groups=groups)
    assert float(js.js_weight) < 0.05  # across prompts the contexts look unrelated
    assert float(grouped.js_weight) > 0.3  # within a prompt they are alike
    # the grouped baseline is closer to the true context mean (the prompt's level)
    mse_grouped = float((grouped.baseline - level).pow(2).mean())
    mse_rloo = float((compute_baseline(r, "rloo").baseline - level).pow(2).mean())
    assert mse_grouped < mse_rloo


def test_grouped_js_singleton_group_is_rloo_and_groups_checked():
    r = _t([[0.0, 2.0], [3.0, 5.0], [10.0, 12.0]])
    res = compute_baseline(r, "js_group", groups=torch.tensor([0, 0, 1]))
    _close(res.baseline[2:], [[12.0, 10.0]])  # alone in its group: leave-one-out in context
    with pytest.raises(ValueError, match="one group id per context"):
        grouped_js_baseline(r, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="K >= 2"):
        compute_baseline(torch.zeros(4, 1), "js_group", groups=torch.arange(4))
    # the paper's kinds ignore groups
    _close(compute_baseline(r, "js", groups=torch.tensor([0, 0, 1])).baseline,
           compute_baseline(r, "js").baseline.tolist())


def test_winsorize_and_normal_scores():
    r = _t([[1.0, 2.0], [3.0, 4.0], [5.0, 100.0]])
    w = winsorize(r)
    # median 3.5, MAD 1.5 -> half-width 3 * 1.4826 * 1.5 = 6.6717: 100 -> 10.1717
    assert float(w[2, 1]) == pytest.approx(3.5 + 3 * 1.4826 * 1.5)
    _close(w[:, 0:1], [[1.0], [3.0], [5.0]])
    same = torch.full((3, 2), 2.0, dtype=F64)
    _close(winsorize(same), same.tolist())  # MAD 0: nothing clipped
    z = normal_scores(_t([[1.0, 1.0], [2.0, 3.0]]))
    assert float(z[0, 0]) == float(z[0, 1])  # ties share a score
    assert float(z[1, 0]) < float(z[1, 1])
    z = normal_scores(_t([[0.3, -7.0], [2.0, 90.0]]))  # ranks 1, 0, 2, 3 of 4
    q1, q3 = 0.31863936396437514, 1.1503493803760079  # Phi^-1(5/8), Phi^-1(7/8)
    _close(z, [[-q1, -q3], [q1, q3]], tol=1e-12)


def test_js_winsor_equals_js_without_outliers_and_robust_weights_resist_one():
    g = torch.Generator().manual_seed(5)
    r = torch.randn(16, 2, generator=g, dtype=F64) * 0.2 + 5.0  # within 3 MADs
    assert torch.equal(winsorize(r), r)
    _close(compute_baseline(r, "js_winsor").baseline, compute_baseline(r, "js").baseline.tolist())
    # contexts that differ (sd 1) with little within-context noise (sd 0.2): a small weight;
    # one rollout in another mixture component (-50) inflates s2 and drives js's weight to ~1
    r = 5.0 + torch.randn(16, 1, generator=g, dtype=F64) \
        + 0.2 * torch.randn(16, 2, generator=g, dtype=F64)
    clean_a = float(compute_baseline(r, "js").js_weight)
    r_out = r.clone()
    r_out[3, 0] = -50.0
    a_js = float(compute_baseline(r_out, "js").js_weight)
    assert a_js > 0.9 > clean_a + 0.5
    for kind in ("js_winsor", "js_rank"):
        assert float(compute_baseline(r_out, kind).js_weight) < 0.5


def test_js_rank_weight_is_invariant_to_monotone_transforms():
    g = torch.Generator().manual_seed(6)
    r = torch.randn(16, 2, generator=g, dtype=F64) + torch.randn(16, 1, generator=g, dtype=F64)
    a = compute_baseline(r, "js_rank").js_weight
    torch.testing.assert_close(compute_baseline(torch.exp(r), "js_rank").js_weight, a)
    torch.testing.assert_close(compute_baseline(3 * r - 7, "js_rank").js_weight, a)


@pytest.mark.parametrize("kind", EXTRA_BASELINE_KINDS)
def test_extra_kinds_shapes_and_leading_dims(kind):
    r = torch.randn(5, 16, 2, dtype=F64)
    groups = torch.arange(16) // 4
    res = compute_baseline(r, kind, groups=groups)
    assert res.baseline.shape == r.shape and res.js_weight.shape == (5,)
    assert bool(((res.js_weight >= 0) & (res.js_weight <= 1)).all())
    for i in range(5):
        one = compute_baseline(r[i], kind, groups=groups)
        torch.testing.assert_close(res.baseline[i], one.baseline)
    assert advantages(r[0], kind).shape == (16, 2)
