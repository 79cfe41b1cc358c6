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
[--workers 2] [--out bench/results]``. Writes ``testbed_table.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.engine import evaluate_policy, train
from learned_schedules.training.testbed.backend import TestbedBackend
from learned_schedules.training.testbed.comparators import comparator_schedules
from learned_schedules.training.testbed.mixture import DTYPE, Testbed

METHODS = {"none": ("reinforce", "none"), "rloo": ("reinforce", "rloo"),
           "xctx": ("reinforce", "xctx"), "js": ("reinforce", "js"), "ppo": ("ppo", "rloo")}
EVAL_SEED = 10_000


def run_one(args: tuple) -> dict:
    method, steps, seed, iterations, hp, contexts = args
    torch.set_num_threads(1)
    algo, baseline = METHODS[method]
    with TemporaryDirectory() as tmp:
        cfg = TrainConfig.from_dict(dict(
            steps=steps, algo=algo, baseline=baseline, seed=seed, iterations=iterations,
            out=tmp, run_name="r", progress=False, checkpoint_every=0,
            eval_every=max(1, iterations // 20), eval_contexts=contexts, eval_seed=EVAL_SEED,
            **hp))
        t0 = time.perf_counter()
        result = train(cfg)
        seconds = time.perf_counter() - t0
        backend = TestbedBackend.from_config(cfg)
        held = backend.held_out_contexts(contexts, EVAL_SEED)
        rewards = evaluate_policy(result.policy, backend, held).double()
    return {"method": method, "steps": steps, "seed": seed, "rewards": rewards.tolist(),
            "curve": result.eval_history, "seconds": seconds}


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
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--init-concentration", type=float, default=40.0)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                    help="policies to train (default: all)")
    ap.add_argument("--testbed-config", default=None,
                    help="testbed JSON (default: the embedded default configuration)")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    hp = {"lr": args.lr, "init_concentration": args.init_concentration,
          "testbed_config": args.testbed_config}
    testbed = Testbed.from_json(args.testbed_config) if args.testbed_config else Testbed.default()
    held = testbed.contexts_from_seed(args.contexts, EVAL_SEED)
    train_ctx = testbed.contexts_from_seed(512, EVAL_SEED + 1)
    jobs = [(m, L, s, args.iterations, hp, args.contexts)
            for L in args.steps for m in args.methods for s in range(args.seeds)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        runs = list(pool.map(run_one, jobs))
    results: dict = {"config": {**vars(args), **hp}, "steps": {}}
    lines = [f"Default testbed, {args.contexts} held-out contexts, B=16, K=2, "
             f"{args.iterations} iterations, {args.seeds} training seeds, lr {args.lr}.\n"]
    for L in args.steps:
        sched = comparator_schedules(testbed, held, train_ctx, L)
        with torch.no_grad():
            rew = {name: testbed.sample_and_score(held, s.to(DTYPE)) for name, s in sched.items()}
        lo, hi = float(rew["best_global"].mean()), float(rew["oracle"].mean())
        rows = []
        for name, r in rew.items():
            rows.append({"name": name, "mean": float(r.mean()),
                         "se": float(r.std() / math.sqrt(r.numel())), "se_contexts": None,
                         "gap": (float(r.mean()) - lo) / (hi - lo)})
        curves = {}
        for m in args.methods:
            mine = [r for r in runs if r["method"] == m and r["steps"] == L]
            per_seed = torch.tensor([torch.tensor(r["rewards"]).mean().item() for r in mine])
            ctx_se = sum(torch.tensor(r["rewards"]).std().item() / math.sqrt(args.contexts)
                         for r in mine) / len(mine)
            se = float(per_seed.std() / math.sqrt(len(mine))) if len(mine) > 1 else 0.0
            rows.append({"name": f"policy {m}", "mean": float(per_seed.mean()), "se": se,
                         "se_contexts": ctx_se, "gap": (float(per_seed.mean()) - lo) / (hi - lo),
                         "seconds": sum(r["seconds"] for r in mine) / len(mine)})
            its = [it for it, _ in mine[0]["curve"]]
            curves[m] = list(zip(its, torch.tensor([[v for _, v in r["curve"]]
                                                    for r in mine]).mean(0).tolist(),
                                 strict=True))
        rloo_final = curves["rloo"][-1][1] if "rloo" in curves else None
        js_it = iterations_to_reach(curves["js"], rloo_final) \
            if "js" in curves and rloo_final is not None else None
        rloo_it = iterations_to_reach(curves["rloo"], rloo_final) if "rloo" in curves else None
        ratio = None if js_it is None or not rloo_it else js_it / rloo_it
        results["steps"][L] = {"rows": rows, "curves": curves, "js_iters_to_rloo_final": js_it,
                               "rloo_iters_to_final": rloo_it, "ratio": ratio}
        lines.append(f"\n### L = {L}\n\n| schedule | held-out reward | gap closed |\n|---|---|---|")
        for r in rows:
            extra = "" if r["se_contexts"] is None else f" (contexts ± {r['se_contexts']:.3f})"
            lines.append(f"| {r['name']} | {r['mean']:.3f} ± {r['se']:.3f}{extra} | "
                         f"{100 * r['gap']:.0f}% |")
        if rloo_final is not None and "js" in curves:
            lines.append(f"\nJS reaches RLOO's final held-out reward ({rloo_final:.3f}) at "
                         f"iteration {js_it}; RLOO first reaches it at {rloo_it} (ratio "
                         f"{'n/a' if ratio is None else f'{ratio:.2f}'}).")
    lines.append(f"\nTotal time {time.perf_counter() - t0:.0f} s.")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "testbed_table.md").write_text(text + "\n")
    (out / "testbed_table.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
