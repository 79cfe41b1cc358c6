"""Variance simulation of the reward baselines (none / RLOO / XCTX / James-Stein), analytic policy.

Two Monte Carlo experiments, B = 16 contexts, K in {2, 4, 8, 16} rollouts per context, spread of
the context means sd in {0.5, 1, 2}, seeded, common random numbers across baselines (every
baseline sees the very same rewards, so the ratios are precise).

(a) Baseline MSE. Random-effects rewards ``r[c, i] = mu_c + eps``, ``mu_c ~ N(0, spread^2)``,
    ``eps ~ N(0, 1)``. For each baseline, ``MSE = E (b[c, i] - mu_c)^2`` against the TRUE context
    mean. REFERENCE.md's check numbers for JS/RLOO (0.26 / 0.54 / 0.82 at K = 2 and
    0.83 / 0.95 / 0.99 at K = 16) are printed next to ours.

(b) REINFORCE gradient estimator with an analytic policy. Context ``c`` has its own parameter
    ``theta_c`` (set to 0) and a 1-D Gaussian policy ``a ~ N(theta_c, 1)`` (score ``a - theta_c``);
    reward ``r = m_c - 0.5 (a - a*_c)^2 + 0.5 eps`` with offsets ``m_c ~ N(0, spread^2)``,
    optima ``a*_c ~ N(0, 0.5^2)`` and ``eps ~ N(0, 1)`` (within-context reward variance
    ``0.75 + a*_c^2``, about 1 on average, as in (a)). The true gradient is
    ``dE[r_c]/dtheta_c = a*_c - theta_c``. The estimator is
    ``g_c = (1/K) sum_i (r[c, i] - b[c, i]) (a[c, i] - theta_c)`` (the paper's mean over B x K,
    rescaled per context). Nested design: ``--context-sets`` draws of (m, a*), each with
    ``--inner`` repetitions; we report the trace of the covariance of ``g`` divided by B
    (variance per context) averaged over context sets, the squared bias, and the MSE against
    the true gradient (= variance + bias^2). RLOO and XCTX baselines never use ``r[c, i]`` and
    are unbiased; JS is slightly biased because its weight ``a`` uses the whole batch (the bias
    is below the Monte Carlo noise here). An oracle baseline (the true ``E[r_c]``) gives the
    floor: the gradient variance is an irreducible part (reward noise times the score) plus a
    part proportional to the baseline's MSE, so the JS/RLOO ratio of gradient variances is
    diluted toward 1 compared with the baseline-MSE ratio, and bounded below by oracle/RLOO.

(c) Grouped batches (issue 11): ``P`` prompts x ``S`` seeds (B = P S = 16), rewards
    ``r[p, s, i] = m_p + u_{p,s} + eps`` with prompt offsets ``m_p ~ N(0, sd_prompt^2)``, seed
    offsets ``u ~ N(0, sd_seed^2)`` and ``eps ~ N(0, 1)``, optionally heavy-tailed (with
    probability 5% a rollout lands in another mixture component: ``eps - 8``, as on the
    testbed where 5% of rollouts score about 7.7 below the median). For none of the kinds
    is the grouping hidden: every kind sees the same rewards; the grouped ones also get the
    prompt of each context. Baseline MSE against the true context mean (including the
    contamination's expected shift) and the REINFORCE gradient variance of (b) with these
    offsets, for rloo / js / js_winsor / js_rank / js_group / js_group_pooled; each cell names
    the winner.

Targets (the paper's claims): JS below RLOO at every K; JS at most 0.7 x RLOO at K = 2. Both are
checked for each spread and each metric, and the misses are listed.

Run ``python bench/variance_sim.py [--out DIR]``; writes ``DIR/variance_sim.md`` and
``DIR/variance_sim.json`` (default ``bench/results/``), and ``variance_sim_grouped.md``/
``.json`` for (c) (``--grouped-only`` runs (c) alone). About 10 s + 60 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from learned_schedules.training.rl.baselines import compute_baseline

log = logging.getLogger("learned_schedules.bench.variance_sim")

KS = (2, 4, 8, 16)
SPREADS = (0.5, 1.0, 2.0)
B = 16
KINDS = ("none", "rloo", "xctx", "js")
# REFERENCE.md: JS/RLOO baseline-MSE ratio at (K, spread).
REFERENCE_RATIOS = {(2, 0.5): 0.26, (2, 1.0): 0.54, (2, 2.0): 0.82,
                    (16, 0.5): 0.83, (16, 1.0): 0.95, (16, 2.0): 0.99}


def baseline_mse(k: int, spread: float, reps: int, gen: torch.Generator) -> dict[str, Any]:
    """Experiment (a): baseline MSE against the true context mean, random-effects rewards."""
    mu = torch.randn(reps, B, 1, generator=gen, dtype=torch.float64) * spread
    r = mu + torch.randn(reps, B, k, generator=gen, dtype=torch.float64)
    out: dict[str, Any] = {"K": k, "spread": spread}
    for kind in ("rloo", "xctx", "js"):
        res = compute_baseline(r, kind)
        out[f"mse_{kind}"] = float((res.baseline - mu).pow(2).mean())
        if kind == "js":
            out["js_weight_mean"] = float(res.js_weight.mean())
    out["ratio_js_rloo"] = out["mse_js"] / out["mse_rloo"]
    out["reference_ratio"] = REFERENCE_RATIOS.get((k, spread))
    return out


def gradient_variance(k: int, spread: float, sets: int, inner: int,
                      gen: torch.Generator) -> dict[str, Any]:
    """Experiment (b): variance, bias and MSE of the per-context REINFORCE gradient."""
    dt = torch.float64
    m = torch.randn(sets, 1, B, 1, generator=gen, dtype=dt) * spread  # reward offsets
    a_star = torch.randn(sets, 1, B, 1, generator=gen, dtype=dt) * 0.5  # optimal actions
    theta = torch.zeros(sets, 1, B, 1, dtype=dt)
    score = torch.randn(sets, inner, B, k, generator=gen, dtype=dt)  # a - theta
    action = theta + score
    noise = torch.randn(sets, inner, B, k, generator=gen, dtype=dt)
    r = m - 0.5 * (action - a_star).pow(2) + 0.5 * noise
    true_grad = (a_star - theta)[..., 0]  # [sets, 1, B]
    out: dict[str, Any] = {"K": k, "spread": spread}
    # Oracle baseline: the true expected reward of the context, E[r_c] = m_c - 0.5 (a*_c^2 + 1).
    oracle = (m - 0.5 * (a_star.pow(2) + 1.0)).expand_as(r)
    per_set_var: dict[str, torch.Tensor] = {}
    for kind in (*KINDS, "oracle"):
        base = oracle if kind == "oracle" else compute_baseline(r, kind).baseline
        g = ((r - base) * score).mean(-1)  # [sets, inner, B]
        v = g.var(1, correction=1)  # [sets, B]
        per_set_var[kind] = v.mean(-1)  # trace(cov) / B per context set
        # Squared bias of the mean, corrected for its Monte Carlo noise (v / inner).
        bias2 = (g.mean(1) - true_grad[:, 0]).pow(2) - v / inner
        out[f"var_{kind}"] = float(v.mean())
        out[f"bias2_{kind}"] = float(bias2.mean())
        out[f"mse_{kind}"] = float((g - true_grad).pow(2).mean())
    diff = per_set_var["js"] - per_set_var["rloo"]
    out["var_diff_js_rloo"] = float(diff.mean())
    out["var_diff_js_rloo_se"] = float(diff.std(correction=1) / sets**0.5)
    out["var_ratio_js_rloo"] = out["var_js"] / out["var_rloo"]
    out["var_ratio_oracle_rloo"] = out["var_oracle"] / out["var_rloo"]
    # Share of RLOO's reducible excess variance (over the oracle floor) that JS removes.
    out["excess_removed_js"] = (out["var_rloo"] - out["var_js"]) / (out["var_rloo"]
                                                                    - out["var_oracle"])
    out["mse_ratio_js_rloo"] = out["mse_js"] / out["mse_rloo"]
    return out


GROUP_KINDS = ("rloo", "js", "js_winsor", "js_rank", "js_group", "js_group_pooled")
GROUP_SHAPES = ((4, 4), (8, 2), (2, 8))  # (prompts P, seeds S), B = 16
GROUP_SPREADS = ((0.0, 0.5), (1.0, 0.5), (3.0, 0.5), (3.0, 0.1), (3.0, 2.0), (0.5, 0.5))
CONTAMINATION = (0.05, 8.0)  # probability, size of the drop


def _grouped_offsets(sets: int, p: int, s: int, sd_prompt: float, sd_seed: float,
                     gen: torch.Generator) -> torch.Tensor:
    dt = torch.float64
    m = torch.randn(sets, p, 1, generator=gen, dtype=dt) * sd_prompt
    u = torch.randn(sets, p, s, generator=gen, dtype=dt) * sd_seed
    return (m + u).reshape(sets, 1, p * s, 1)  # [sets, 1, B, 1]


def _noise(shape: tuple[int, ...], heavy: bool, gen: torch.Generator) -> torch.Tensor:
    eps = torch.randn(*shape, generator=gen, dtype=torch.float64)
    if heavy:
        prob, drop = CONTAMINATION
        eps = eps - drop * (torch.rand(*shape, generator=gen, dtype=torch.float64) < prob)
    return eps


def grouped_cell(p: int, s: int, k: int, sd_prompt: float, sd_seed: float, heavy: bool,
                 sets: int, inner: int, gen: torch.Generator) -> dict[str, Any]:
    """Experiment (c), one cell: baseline MSE and gradient variance per kind."""
    groups = torch.arange(p).repeat_interleave(s)
    mu = _grouped_offsets(sets, p, s, sd_prompt, sd_seed, gen)
    shift = -CONTAMINATION[0] * CONTAMINATION[1] if heavy else 0.0
    # (a) baseline MSE against the true context mean (its expected reward)
    r = mu + _noise((sets, inner, p * s, k), heavy, gen)
    out: dict[str, Any] = {"P": p, "S": s, "K": k, "sd_prompt": sd_prompt, "sd_seed": sd_seed,
                           "heavy": heavy}
    for kind in GROUP_KINDS:
        res = compute_baseline(r, kind, groups=groups)
        out[f"mse_{kind}"] = float((res.baseline - (mu + shift)).pow(2).mean())
        out[f"weight_{kind}"] = float(res.js_weight.mean())
    # (b)-style gradient variance: per-context Gaussian policy, optimum a*_c ~ N(0, 0.5^2)
    a_star = torch.randn(sets, 1, p * s, 1, generator=gen, dtype=torch.float64) * 0.5
    score = torch.randn(sets, inner, p * s, k, generator=gen, dtype=torch.float64)
    r = mu - 0.5 * (score - a_star).pow(2) + 0.5 * _noise((sets, inner, p * s, k), heavy, gen)
    for kind in GROUP_KINDS:
        base = compute_baseline(r, kind, groups=groups).baseline
        g = ((r - base) * score).mean(-1)  # [sets, inner, B]
        out[f"var_{kind}"] = float(g.var(1, correction=1).mean())
    out["best_mse"] = min(GROUP_KINDS, key=lambda kd: out[f"mse_{kd}"])
    out["best_var"] = min(GROUP_KINDS, key=lambda kd: out[f"var_{kd}"])
    return out


def run_grouped(seed: int = 1, sets: int = 40, inner: int = 100) -> dict[str, Any]:
    """Experiment (c) over every (shape, spreads, K, tails) cell."""
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    rows = [grouped_cell(p, s, k, sp, ss, heavy, sets, inner, gen)
            for heavy in (False, True) for k in (2, 4) for p, s in GROUP_SHAPES
            for sp, ss in GROUP_SPREADS]
    return {"config": {"B": 16, "kinds": list(GROUP_KINDS), "seed": seed, "sets": sets,
                       "inner": inner, "contamination": list(CONTAMINATION)},
            "cells": rows, "seconds": time.perf_counter() - start}


def grouped_markdown(result: dict[str, Any]) -> str:
    """Tables of (c): each metric divided by RLOO's, winner per cell."""
    cfg = result["config"]
    lines = ["# Grouped batches: P prompts x S seeds (B = 16)", "",
             f"Rewards ``m_p + u_ps + eps`` (noise sd 1; heavy: 5% of rollouts drop by "
             f"{cfg['contamination'][1]}); {cfg['sets']} draws of the offsets x {cfg['inner']} "
             f"repetitions per cell, seed {cfg['seed']}. Each kind's value divided by RLOO's "
             f"(below 1: better than RLOO); the winner per cell in bold. Runtime "
             f"{result['seconds']:.0f} s.", ""]
    short = {"js": "JS", "js_winsor": "JS-winsor", "js_rank": "JS-rank", "js_group": "grouped",
             "js_group_pooled": "grouped-pooled"}
    for metric, title in (("mse", "baseline MSE"), ("var", "gradient variance")):
        lines += [f"## {title} ÷ RLOO", "",
                  "| tails | K | P x S | sd prompt | sd seed | " + " | ".join(short.values())
                  + " | winner |", "|" + "---|" * (6 + len(short))]
        for row in result["cells"]:
            best = row[f"best_{metric}"]
            vals = []
            for kind in short:
                q = row[f"{metric}_{kind}"] / row[f"{metric}_rloo"]
                vals.append(f"**{q:.2f}**" if kind == best else f"{q:.2f}")
            lines.append(f"| {'heavy' if row['heavy'] else 'normal'} | {row['K']} | "
                         f"{row['P']} x {row['S']} | {row['sd_prompt']} | {row['sd_seed']} | "
                         + " | ".join(vals) + f" | {short.get(best, best)} |")
        lines.append("")
    wins: dict[str, dict[str, int]] = {}
    for row in result["cells"]:
        for metric in ("mse", "var"):
            wins.setdefault(metric, {}).setdefault(row[f"best_{metric}"], 0)
            wins[metric][row[f"best_{metric}"]] += 1
    lines += ["## Wins (cells)", ""]
    for metric, counts in wins.items():
        lines.append(f"- {metric}: " + ", ".join(f"{short.get(k, k)} {v}"
                                                for k, v in sorted(counts.items(),
                                                                   key=lambda kv: -kv[1])))
    return "\n".join(lines) + "\n"


def check_targets(part_a: list[dict[str, Any]], part_b: list[dict[str, Any]]) -> dict[str, Any]:
    """JS < RLOO at every (K, spread) and JS <= 0.7 RLOO at K = 2, per metric."""
    metrics = {"baseline_mse": [(row, row["ratio_js_rloo"]) for row in part_a],
               "grad_var": [(row, row["var_ratio_js_rloo"]) for row in part_b],
               "grad_mse": [(row, row["mse_ratio_js_rloo"]) for row in part_b]}
    checks: dict[str, Any] = {"grad_var_js_below_rloo_by_2se": all(
        row["var_diff_js_rloo"] + 2 * row["var_diff_js_rloo_se"] < 0 for row in part_b)}
    for name, rows in metrics.items():
        below = [(row["K"], row["spread"]) for row, q in rows if q >= 1.0]
        k2 = [(row["K"], row["spread"]) for row, q in rows if row["K"] == 2 and q > 0.7]
        checks[name] = {"js_below_rloo_everywhere": not below, "not_below": below,
                        "k2_at_most_0.7_everywhere": not k2, "k2_above_0.7": k2}
    return checks


def _fmt(x: float | None, nd: int = 3) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def to_markdown(result: dict[str, Any]) -> str:
    """Render the two tables and the target checks as markdown."""
    cfg = result["config"]
    lines = [
        "# Baseline variance simulation",
        "",
        f"B = {cfg['B']}, noise sd 1, seed {cfg['seed']}; (a) {cfg['reps']} reps per cell; "
        f"(b) {cfg['context_sets']} context sets x {cfg['inner']} reps per cell. "
        f"Runtime {result['seconds']:.1f} s.",
        "",
        "## (a) Baseline MSE against the true context mean (random-effects rewards)",
        "",
        "| K | spread sd | MSE RLOO | MSE XCTX | MSE JS | mean JS weight | JS/RLOO | "
        "REFERENCE JS/RLOO |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["baseline_mse"]:
        lines.append(
            f"| {row['K']} | {row['spread']} | {_fmt(row['mse_rloo'])} | {_fmt(row['mse_xctx'])} "
            f"| {_fmt(row['mse_js'])} | {_fmt(row['js_weight_mean'])} "
            f"| **{_fmt(row['ratio_js_rloo'], 2)}** | {_fmt(row['reference_ratio'], 2)} |")
    lines += [
        "",
        "## (b) REINFORCE gradient estimator, per-context Gaussian policy",
        "",
        "Variance = trace of the covariance of the per-context gradient / B; MSE against the "
        "closed-form gradient; oracle = the true expected reward of the context as baseline "
        "(the floor no baseline can beat, so oracle/RLOO bounds the JS/RLOO ratio); "
        "excess removed = (RLOO - JS) / (RLOO - oracle); bias² corrected for Monte Carlo "
        "noise (RLOO is unbiased: its value shows "
        "the noise level).",
        "",
        "| K | spread sd | var none | var RLOO | var XCTX | var JS | var oracle | JS/RLOO var "
        "| oracle/RLOO var | excess removed by JS | JS-RLOO var (±2SE) | MSE RLOO | MSE JS "
        "| JS/RLOO MSE | bias² RLOO | bias² JS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["gradient"]:
        lines.append(
            f"| {row['K']} | {row['spread']} | {_fmt(row['var_none'])} | {_fmt(row['var_rloo'])} "
            f"| {_fmt(row['var_xctx'])} | {_fmt(row['var_js'])} | {_fmt(row['var_oracle'])} "
            f"| **{_fmt(row['var_ratio_js_rloo'])}** "
            f"| {_fmt(row['var_ratio_oracle_rloo'])} | {row['excess_removed_js']:.0%} "
            f"| {row['var_diff_js_rloo']:+.2e} ± {2 * row['var_diff_js_rloo_se']:.1e} "
            f"| {_fmt(row['mse_rloo'])} | {_fmt(row['mse_js'])} "
            f"| **{_fmt(row['mse_ratio_js_rloo'])}** "
            f"| {row['bias2_rloo']:+.1e} | {row['bias2_js']:+.1e} |")
    lines += ["", "## Targets: JS < RLOO at every K; JS <= 0.7 x RLOO at K = 2", ""]
    for name, c in result["checks"].items():
        if not isinstance(c, dict):
            lines.append(f"- {name}: {'yes' if c else 'NO'}")
            continue
        below = "yes" if c["js_below_rloo_everywhere"] else f"NO at (K, spread) {c['not_below']}"
        k2 = "yes" if c["k2_at_most_0.7_everywhere"] else f"NO at (K, spread) {c['k2_above_0.7']}"
        lines.append(f"- {name}: JS < RLOO everywhere: {below}; K = 2 ratio <= 0.7: {k2}")
    return "\n".join(lines) + "\n"


def run(seed: int = 0, reps: int = 20_000, context_sets: int = 50,
        inner: int = 400) -> dict[str, Any]:
    """Run both experiments and return a JSON-ready result dictionary."""
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    part_a = [baseline_mse(k, s, reps, gen) for k in KS for s in SPREADS]
    part_b = [gradient_variance(k, s, context_sets, inner, gen) for k in KS for s in SPREADS]
    return {
        "config": {"B": B, "Ks": list(KS), "spreads": list(SPREADS), "seed": seed, "reps": reps,
                   "context_sets": context_sets, "inner": inner, "noise_sd": 1.0,
                   "torch": torch.__version__},
        "baseline_mse": part_a,
        "gradient": part_b,
        "checks": check_targets(part_a, part_b),
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                        help="output folder (default: bench/results/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reps", type=int, default=20_000, help="(a) repetitions per cell")
    parser.add_argument("--context-sets", type=int, default=50, help="(b) context draws per cell")
    parser.add_argument("--inner", type=int, default=400, help="(b) repetitions per context draw")
    parser.add_argument("--grouped-only", action="store_true", help="run (c) only")
    parser.add_argument("--skip-grouped", action="store_true", help="run (a) and (b) only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.skip_grouped:
        grouped = run_grouped(args.seed + 1)
        gmd = grouped_markdown(grouped)
        (out / "variance_sim_grouped.md").write_text(gmd)
        (out / "variance_sim_grouped.json").write_text(json.dumps(grouped, indent=1) + "\n")
        print(gmd)
        if args.grouped_only:
            return 0
    result = run(args.seed, args.reps, args.context_sets, args.inner)
    md = to_markdown(result)
    (out / "variance_sim.md").write_text(md)
    (out / "variance_sim.json").write_text(json.dumps(result, indent=2) + "\n")
    print(md)
    log.info("wrote %s and %s", out / "variance_sim.md", out / "variance_sim.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
