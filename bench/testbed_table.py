"""The testbed table: comparators vs policies trained with every baseline, at L in {3, 5, 8}.

For each budget L, on the default analytic testbed:

* comparators (uniform, SD3 shift 3, Flux shift, best global, per-instance oracle) on the same
  held-out contexts;
* policies trained with none / RLOO / XCTX / JS (REINFORCE) and TPDM-style PPO (RLOO
  advantages, clipped ratio, 4 epochs) at equal rollout budgets (same B, K, iterations), for
  several training seeds; evaluated in mean mode on the held-out contexts;
* mean ± standard error over held-out contexts (comparators) and over training seeds
  (policies; the context-level standard error is given too), the share of the
  best-global -> oracle gap each closes, and the iterations JS needs to reach RLOO's final
  held-out reward (from the learning curves, averaged over seeds).

Usage: ``python bench/testbed_table.py [--steps 3 5 8] [--seeds 3] [--iterations N]
[--workers 1] [--methods ...] [--testbed-config FILE] [--concentration scheduled|softplus]
[--name STEM] [--out bench/results]``. Writes ``STEM.md``, ``STEM.json`` and (one worker)
``STEM.runs.jsonl`` with every run as it finishes. Comparators come from the cache of
``bench/quality_study.py`` when it holds the same held-out contexts.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from learned_schedules.policies.dirichlet import schedule_spread
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.engine import evaluate_policy, policy_features, train
from learned_schedules.training.testbed.backend import TestbedBackend
from learned_schedules.training.testbed.comparators import comparator_schedules
from learned_schedules.training.testbed.mixture import DTYPE, Testbed

METHODS = {"none": ("reinforce", "none"), "rloo": ("reinforce", "rloo"),
           "xctx": ("reinforce", "xctx"), "js": ("reinforce", "js"),
           "grouped_js": ("reinforce", "js_group_pooled"),
           "grouped_js_pergroup": ("reinforce", "js_group"), "ppo": ("ppo", "rloo")}
"""Method -> (algo, baseline). ``grouped_js``: James-Stein shrunk toward each context's own
prompt (class), one weight pooled over the prompts, batches of 4 prompts x 4 seeds."""
EVAL_SEED = 10_000
COLLAPSE_SPREAD = 0.003
"""A policy whose held-out schedules differ by less than this (spread) has collapsed."""
CACHE = Path(__file__).resolve().parent / "results" / "quality_cache"


def run_one(args: tuple) -> dict:
    method, steps, seed, iterations, hp, contexts = args
    torch.set_num_threads(1)
    algo, baseline = METHODS[method]
    with TemporaryDirectory() as tmp:
        cfg = TrainConfig.from_dict(dict(
            steps=steps, algo=algo, baseline=baseline, seed=seed, iterations=iterations,
            out=tmp, run_name="r", progress=False, checkpoint_every=0,
            eval_every=max(1, iterations // 20), eval_contexts=min(contexts, 256),
            eval_seed=EVAL_SEED, **hp))
        t0 = time.perf_counter()
        result = train(cfg)
        seconds = time.perf_counter() - t0
        backend = TestbedBackend.from_config(cfg)
        held = backend.held_out_contexts(contexts, EVAL_SEED)
        rewards = evaluate_policy(result.policy, backend, held).double()
        with torch.no_grad():
            feats = policy_features(result.policy, backend, held)
            spread = schedule_spread(result.policy.schedule(feats))
            concentration = result.policy.diagnostics(feats).get("concentration")
        metrics = list(csv.DictReader((Path(tmp) / "r" / "metrics.csv").open()))
        js_w = [float(m["js_weight"]) for m in metrics if m.get("js_weight")]
        weights = hashlib.sha256()
        for name, t in sorted(result.policy.state_dict().items()):
            weights.update(name.encode() + t.detach().cpu().reshape(-1).numpy().tobytes())
    return {"method": method, "steps": steps, "seed": seed, "rewards": rewards.tolist(),
            "weights_sha256": weights.hexdigest(),
            "curve": result.eval_history, "seconds": seconds, "spread": spread,
            "concentration": concentration,
            "js_weight_mean": sum(js_w) / len(js_w) if js_w else None}


def comparator_rewards(testbed: Testbed, config: str | None, held, train_ctx, steps: int,
                       n: int) -> dict[str, torch.Tensor]:
    """Held-out rewards of every comparator (best global, multi-start oracle...), from the
    cache of bench/quality_study.py when it holds these contexts, else computed."""
    name = Path(config).stem if config else "default_testbed"
    path = CACHE / f"comparators_{name}_L{steps}_n{n}.json"
    if path.exists():
        data = json.loads(path.read_text())
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in data.items()
                if isinstance(v, list) and len(v) == n and not isinstance(v[0], list)}
    sched = comparator_schedules(testbed, held, train_ctx, steps)
    with torch.no_grad():
        return {name: testbed.sample_and_score(held, s.to(DTYPE)) for name, s in sched.items()}


def iterations_to_reach(curve: list[tuple[int, float]], level: float) -> int | None:
    for it, value in curve:
        if value >= level:
            return it
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[3, 5, 8])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--contexts", type=int, default=512)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--init-concentration", type=float, default=40.0)
    ap.add_argument("--concentration", default="scheduled", choices=["scheduled", "softplus"],
                    help="the Dirichlet policy's parameterisation (softplus: the old form)")
    ap.add_argument("--final-concentration", type=float, default=None,
                    help="scheduled form: concentration at the last iteration (default 10x)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                    help="policies to train (default: all)")
    ap.add_argument("--testbed-config", default=None,
                    help="testbed JSON (default: the embedded default configuration)")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--name", default="testbed_table", help="output file stem")
    args = ap.parse_args()
    hp = {"lr": args.lr, "init_concentration": args.init_concentration,
          "testbed_config": args.testbed_config, "concentration": args.concentration,
          "final_concentration": args.final_concentration}
    testbed = Testbed.from_json(args.testbed_config) if args.testbed_config else Testbed.default()
    held = testbed.contexts_from_seed(args.contexts, EVAL_SEED)
    train_ctx = testbed.contexts_from_seed(512, EVAL_SEED + 1)
    jobs = [(m, L, s, args.iterations, hp, args.contexts)
            for L in args.steps for m in args.methods for s in range(args.seeds)]
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f"{args.name}.runs.jsonl"  # every finished run, as it finishes
    if args.workers > 1:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            runs = list(pool.map(run_one, jobs))
    else:
        runs = []
        for job in jobs:
            runs.append(run_one(job))
            with partial.open("a") as f:
                f.write(json.dumps(runs[-1]) + "\n")
    results: dict = {"config": {**vars(args), **hp}, "steps": {}}
    where = Path(args.testbed_config).stem if args.testbed_config else "default_testbed"
    lines = [f"Testbed {where}, {args.contexts} held-out contexts, B=16, K=2, "
             f"{args.iterations} iterations, {args.seeds} training seeds, lr {args.lr}, "
             f"concentration {args.concentration}. Policies: mean ± SE over training seeds "
             "(context-level SE in brackets); gap closed = (policy - best global) / (oracle - "
             "best global); spread = std across held-out contexts of the mean schedule; "
             f"collapsed = spread < {COLLAPSE_SPREAD}.\n"]
    for L in args.steps:
        rew = comparator_rewards(testbed, args.testbed_config, held, train_ctx, L,
                                 args.contexts)
        lo, hi = float(rew["best_global"].mean()), float(rew["oracle"].mean())
        rows = []
        for name, r in rew.items():
            rows.append({"name": name, "mean": float(r.mean()),
                         "se": float(r.std() / math.sqrt(r.numel())), "se_contexts": None,
                         "gap": (float(r.mean()) - lo) / (hi - lo), "per_seed": None})
        curves = {}
        for m in args.methods:
            mine = [r for r in runs if r["method"] == m and r["steps"] == L]
            if not mine:
                continue
            per_seed = torch.tensor([torch.tensor(r["rewards"]).mean().item() for r in mine])
            ctx_se = sum(torch.tensor(r["rewards"]).std().item() / math.sqrt(args.contexts)
                         for r in mine) / len(mine)
            se = float(per_seed.std() / math.sqrt(len(mine))) if len(mine) > 1 else 0.0
            rows.append({"name": f"policy {m}", "mean": float(per_seed.mean()), "se": se,
                         "se_contexts": ctx_se, "gap": (float(per_seed.mean()) - lo) / (hi - lo),
                         "seconds": sum(r["seconds"] for r in mine) / len(mine),
                         "per_seed": [(float(p) - lo) / (hi - lo) for p in per_seed],
                         "spread": [r["spread"] for r in mine],
                         "collapsed": sum(r["spread"] < COLLAPSE_SPREAD for r in mine),
                         "concentration": [r["concentration"] for r in mine],
                         "js_weight": [r["js_weight_mean"] for r in mine]})
            its = [it for it, _ in mine[0]["curve"]]
            curves[m] = list(zip(its, torch.tensor([[v for _, v in r["curve"]]
                                                    for r in mine]).mean(0).tolist(),
                                 strict=True))
        rloo_final = curves["rloo"][-1][1] if "rloo" in curves else None
        rloo_it = iterations_to_reach(curves["rloo"], rloo_final) if "rloo" in curves else None
        reach = {}
        for m in ("js", "grouped_js", "grouped_js_pergroup"):
            if m in curves and rloo_final is not None:
                it = iterations_to_reach(curves[m], rloo_final)
                reach[m] = {"iterations": it,
                            "ratio": None if it is None or not rloo_it else it / rloo_it}
        results["steps"][L] = {"rows": rows, "curves": curves, "rloo_iters_to_final": rloo_it,
                               "reach_rloo_final": reach}
        lines.append(f"\n### L = {L}\n\n| schedule | held-out reward | gap closed | per seed | "
                     "spread | collapsed | final concentration | mean JS weight |\n"
                     "|---|---|---|---|---|---|---|---|")
        for r in rows:
            extra = "" if r["se_contexts"] is None else f" ({r['se_contexts']:.3f})"
            if r["per_seed"] is None:
                lines.append(f"| {r['name']} | {r['mean']:.3f} ± {r['se']:.3f} | "
                             f"{100 * r['gap']:.0f}% | | | | | |")
                continue
            seeds = ", ".join(f"{100 * g:.0f}" for g in r["per_seed"])
            spread = ", ".join(f"{v:.3f}" for v in r["spread"])
            conc = ", ".join(f"{v:.0f}" for v in r["concentration"])
            jsw = [w for w in r["js_weight"] if w is not None]
            jsw_text = f"{sum(jsw) / len(jsw):.2f}" if jsw else ""
            lines.append(f"| {r['name']} | {r['mean']:.3f} ± {r['se']:.3f}{extra} | "
                         f"{100 * r['gap']:.0f}% | {seeds} | {spread} | "
                         f"{r['collapsed']}/{len(r['per_seed'])} | {conc} | {jsw_text} |")
        for m, v in reach.items():
            ratio = v["ratio"]
            lines.append(f"\n{m} reaches RLOO's final held-out reward ({rloo_final:.3f}, 256 "
                         f"contexts, seed-averaged curves) at iteration {v['iterations']}; RLOO "
                         f"first reaches it at {rloo_it} (ratio "
                         f"{'n/a' if ratio is None else f'{ratio:.2f}'}).")
    lines.append(f"\nTotal time {time.perf_counter() - t0:.0f} s.")
    text = "\n".join(lines)
    print(text)
    (out / f"{args.name}.md").write_text(text + "\n")
    (out / f"{args.name}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
