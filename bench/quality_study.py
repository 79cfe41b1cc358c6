"""The learning-quality study (issue 11): collapse diagnosis, fixes, baselines, features.

Runs named suites of prototype training runs (``bench/prototypes/quality.py``) on the analytic
testbed, several seeds each, with the held-out comparators (best global, multi-start oracle) of
the same 512 contexts, and writes ``bench/results/quality/<suite>.json`` (merged across calls,
keyed by label and seed) plus a markdown summary ``<suite>.md``.

Usage::

    nice -n 10 python bench/quality_study.py --suite collapse --seeds 0 1 2 --workers 2
    python bench/quality_study.py --suite collapse --summary   # re-render only

A run is "collapsed" when the spread across held-out contexts of its mean schedule (the std
over contexts per interior timestep, averaged over timesteps) is below 0.003.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prototypes.quality import Exp, comparators, gap_closed, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "quality"
CFG = ROOT / "training" / "configs"
COLLAPSE = 0.003

MC = {"param": "meanconc", "kappa0": 40.0, "kappa1": 400.0}  # the proposed parameterisation


def suites(iterations: int) -> dict[str, list[tuple[str, Exp]]]:
    """label -> experiment, per suite (seeds are added by the caller)."""
    base = Exp(iterations=iterations)
    out: dict[str, list[tuple[str, Exp]]] = {}
    out["collapse"] = [
        ("alpha rloo", base),
        ("alpha js", replace(base, baseline="js")),
        ("alpha rloo normadv", replace(base, normalize_adv=True)),
        ("alpha rloo lr1e-3", replace(base, lr=1e-3)),
        ("alpha rloo ent0.01", replace(base, entropy_coef=0.01)),
        ("alpha ppo", replace(base, algo="ppo")),
        ("meanconc-sched rloo", replace(base, **MC)),
        ("meanconc-sched js", replace(base, baseline="js", **MC)),
        ("meanconc-learned rloo", replace(base, param="meanconc", kappa_mode="learned")),
        ("meanconc-sched ppo", replace(base, algo="ppo", **MC)),
        ("pathwise (ceiling)", replace(base, algo="pathwise")),
        ("meanconc-sched rloo lr1e-3", replace(base, lr=1e-3, **MC)),
        ("meanconc-sched js_group (4x4)", replace(base, baseline="js_group", group_size=4, **MC)),
        ("meanconc-sched rloo (4x4)", replace(base, group_size=4, **MC)),
        ("meanconc-sched rloo init=best_global", replace(base, init_best_global=True, **MC)),
        ("meanconc-sched js_group_pooled (4x4)", replace(base, baseline="js_group_pooled",
                                                         group_size=4, **MC)),
    ]
    out["kappa"] = [
        ("meanconc 40->40 rloo", replace(base, param="meanconc", kappa0=40.0)),
        ("meanconc 40->1000 rloo", replace(base, param="meanconc", kappa0=40.0, kappa1=1000.0)),
        ("meanconc 100->1000 rloo", replace(base, param="meanconc", kappa0=100.0,
                                           kappa1=1000.0)),
        ("meanconc 20->200 rloo", replace(base, param="meanconc", kappa0=20.0, kappa1=200.0)),
        ("meanconc 40->4000 rloo", replace(base, param="meanconc", kappa0=40.0, kappa1=4000.0)),
        ("meanconc-sched rloo K4 B8", replace(base, rollouts=4, batch=8, **MC)),
    ]
    out["baselines"] = [
        (f"meanconc-sched {b}", replace(base, baseline=b, group_size=g, **MC))
        for b, g in (("rloo", 4), ("js", 4), ("js_winsor", 4), ("js_rank", 4),
                     ("js_group", 4), ("js_group_pooled", 4))
    ]
    out["features"] = [
        ("meanconc-sched rloo look=x0_t1", replace(base, look="x0_t1", **MC)),
        ("meanconc-sched rloo look=x0_look", replace(base, look="x0_look", **MC)),
        ("meanconc-sched rloo h256 d3", replace(base, hidden=256, depth=3, **MC)),
        ("meanconc-sched rloo h64 d1", replace(base, hidden=64, depth=1, **MC)),
        ("meanconc-sched rloo 2x iters", replace(base, iterations=2 * iterations, **MC)),
        ("meanconc-sched rloo 4x iters", replace(base, iterations=4 * iterations, **MC)),
        ("meanconc-sched rloo B64", replace(base, batch=64, **MC)),
        ("meanconc-sched rloo lr1e-2", replace(base, lr=1e-2, **MC)),
    ]
    out["configs"] = []
    for name in ("wide_d16", "sharp_d4", "hetero_prompts"):
        b2 = replace(base, config=str(CFG / f"{name}.json"))
        out["configs"] += [
            (f"{name}: alpha rloo", b2),
            (f"{name}: alpha js", replace(b2, baseline="js")),
            (f"{name}: meanconc-sched rloo", replace(b2, **MC)),
            (f"{name}: meanconc-sched js", replace(b2, baseline="js", **MC)),
            (f"{name}: meanconc-sched rloo (4x4)", replace(b2, group_size=4, **MC)),
            (f"{name}: meanconc-sched js (4x4)", replace(b2, baseline="js", group_size=4, **MC)),
            (f"{name}: meanconc-sched js_group (4x4)", replace(b2, baseline="js_group",
                                                             group_size=4, **MC)),
            (f"{name}: meanconc-sched js_group_pooled (4x4)", replace(
                b2, baseline="js_group_pooled", group_size=4, **MC)),
            (f"{name}: meanconc-sched ppo", replace(b2, algo="ppo", **MC)),
            (f"{name}: meanconc-sched rloo init=best_global", replace(
                b2, init_best_global=True, **MC)),
            (f"{name}: pathwise (ceiling)", replace(b2, algo="pathwise")),
        ]
    out["budget"] = []
    for name in ("wide_d16", "sharp_d4", "hetero_prompts"):
        b2 = replace(base, config=str(CFG / f"{name}.json"), iterations=4 * iterations)
        out["budget"] += [(f"{name}: pathwise 4x iters", replace(b2, algo="pathwise")),
                          (f"{name}: meanconc-sched rloo 4x iters", replace(b2, **MC))]
    out["capacity"] = [
        ("pathwise h256 d3", replace(base, algo="pathwise", hidden=256, depth=3)),
        ("pathwise 4x iters", replace(base, algo="pathwise", iterations=4 * iterations)),
        ("pathwise B64", replace(base, algo="pathwise", batch=64)),
        ("pathwise look=x0_look", replace(base, algo="pathwise", look="x0_look")),
        ("pathwise lr1e-2", replace(base, algo="pathwise", lr=1e-2)),
        ("pathwise look=x0_look t0.4", replace(base, algo="pathwise", look="x0_look",
                                               look_t=0.4)),
    ]
    return out


def _compact(obj):
    """Round floats to 5 significant digits (keeps the result files small)."""
    if isinstance(obj, float):
        return float(f"{obj:.5g}")
    if isinstance(obj, dict):
        return {k: _compact(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_compact(v) for v in obj]
    return obj


def _job(args: tuple[str, Exp]) -> tuple[str, dict]:
    label, exp = args
    return label, _compact(run(exp))


def summarise(suite: str, data: dict) -> str:
    runs = data["runs"]
    lines = [f"# Quality study: suite `{suite}`", ""]
    by_cfg: dict[tuple, list] = {}
    for key, res in runs.items():
        label = key.rsplit("|", 1)[0]
        e = res["exp"]
        by_cfg.setdefault((e["config"], e["steps"]), []).append((label, res))
    for (cfg, steps), items in by_cfg.items():
        comp = comparators(cfg, steps)
        bg = sum(comp["best_global"]) / len(comp["best_global"])
        orc = sum(comp["oracle"]) / len(comp["oracle"])
        lines += [f"## {Path(cfg).stem if cfg else 'default_testbed'}, L = {steps}", "",
                  f"best_global {bg:.3f}, oracle {orc:.3f} (512 held-out contexts; oracle "
                  f"schedule spread {comp['oracle_spread'][0]:.3f})", "",
                  "| method | seeds | held-out reward (mean ± SE over seeds) | gap closed "
                  "(per seed) | spread (min..max) | collapsed | final kappa | mean JS weight "
                  "| s/run |", "|---|---|---|---|---|---|---|---|---|"]
        labels = list(dict.fromkeys(label for label, _ in items))
        for label in labels:
            rs = [r for lab, r in items if lab == label]
            means = [r["mean"] for r in rs]
            m = sum(means) / len(means)
            se = (sum((x - m) ** 2 for x in means) / (len(means) - 1)) ** 0.5 / math.sqrt(
                len(means)) if len(means) > 1 else 0.0
            gaps = ", ".join(f"{100 * gap_closed(x, comp):.0f}" for x in means)
            spreads = [r["spread"] for r in rs]
            coll = sum(s < COLLAPSE for s in spreads)
            kap = [r["diag"][-1].get("diag_concentration", float("nan")) for r in rs]
            jsw = [sum(d.get("js_weight", 0.0) for d in r["diag"]) / len(r["diag"]) for r in rs]
            secs = sum(r["seconds"] for r in rs) / len(rs)
            lines.append(
                f"| {label} | {len(rs)} | {m:.3f} ± {se:.3f} | {100 * gap_closed(m, comp):.0f}% "
                f"({gaps}) | {min(spreads):.4f}..{max(spreads):.4f} | {coll}/{len(rs)} | "
                f"{sum(kap) / len(kap):.0f} | {sum(jsw) / len(jsw):.3f} | {secs:.0f} |")
        lines += _speed_lines(items)
        lines.append("")
    return "\n".join(lines) + "\n"


def _mean_curve(rs: list[dict]) -> list[tuple[int, float]]:
    its = [it for it, _ in rs[0]["curve"]]
    if any([it for it, _ in r["curve"]] != its for r in rs):
        return []
    return [(it, sum(r["curve"][i][1] for r in rs) / len(rs)) for i, it in enumerate(its)]


def _speed_lines(items: list[tuple[str, dict]]) -> list[str]:
    """Iterations each method needs to reach the RLOO reference's final held-out reward
    (seed-averaged curves on 256 held-out contexts, evaluated every 100 iterations)."""
    labels = list(dict.fromkeys(label for label, _ in items))
    out = []
    for ref in [lab for lab in labels if lab.endswith("rloo") or lab.endswith("rloo (4x4)")]:
        ref_curve = _mean_curve([r for lab, r in items if lab == ref])
        if not ref_curve:
            continue
        level = ref_curve[-1][1]
        ref_it = next(it for it, v in ref_curve if v >= level)
        cells = []
        for lab in labels:
            rs = [r for la, r in items if la == lab]
            curve = _mean_curve(rs)
            if lab == ref or not curve or rs[0]["exp"]["algo"] == "pathwise" \
                    or rs[0]["exp"]["param"] != [r for la, r in items if la == ref][0][
                        "exp"]["param"]:
                continue
            it = next((i for i, v in curve if v >= level), None)
            cells.append(f"{lab}: {it if it is not None else 'never'}"
                         + (f" ({it / ref_it:.2f}x)" if it is not None else ""))
        if cells:
            out.append(f"\nIterations to reach `{ref}`'s final held-out reward ({level:.3f}, "
                       f"seed-averaged; `{ref}` itself first reaches it at {ref_it}): "
                       + "; ".join(cells) + ".")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", nargs="*", default=None, help="labels to run (default: all)")
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=None, help="override L")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--summary", action="store_true", help="only re-render the summary")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    name = args.suite if args.steps is None else f"{args.suite}_L{args.steps}"
    path = OUT / f"{name}.json"
    data = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    if not args.summary:
        exps = suites(args.iterations)[args.suite]
        jobs = []
        for label, exp in exps:
            if args.only and label not in args.only:
                continue
            if args.steps is not None:
                exp = replace(exp, steps=args.steps)
            for s in args.seeds:
                jobs.append((label, replace(exp, seed=s)))
        # comparators first (cached; one per config and L)
        for cfg, steps in {(e.config, e.steps) for _, e in jobs}:
            comparators(cfg, steps)
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            for label, res in pool.map(_job, jobs):
                data["runs"][f"{label}|{res['exp']['seed']}"] = res
                path.write_text(json.dumps(data))
                print(f"{label} seed {res['exp']['seed']}: {res['mean']:.3f} spread "
                      f"{res['spread']:.4f} ({res['seconds']:.0f} s)", flush=True)
        print(f"total {time.perf_counter() - t0:.0f} s")
    md = summarise(name, data)
    (OUT / f"{name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
