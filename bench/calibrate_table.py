"""Benchmark of ``calibrate`` (docs/calibrate.md): calibrated schedules (teacher matching by
grid search, gradients or both; per-image; ART's direct solver) against the schedules that
apply, at L = 4, 6, 8, 10: PSNR to the many-step result on held-out contexts (mean ± SE;
paired differences in the per-run tables), model calls and wall time of each calibration.

    OMP_NUM_THREADS=1 python bench/calibrate_table.py --testbed     # seconds-minutes
    OMP_NUM_THREADS=1 python bench/calibrate_table.py --digits      # ~15 min on 1 busy core
    OMP_NUM_THREADS=1 python bench/calibrate_table.py --families sd3,flux-dev,sdxl

Results go to bench/results/calibrate_<part>.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO.parent))
sys.path.insert(0, str(REPO / "tests"))
RESULTS = REPO / "bench" / "results"
STEPS = (4, 6, 8, 10)
log = logging.getLogger("bench")


def cell(values: torch.Tensor) -> str:
    v = values.double()
    return f"{float(v.mean()):.2f} ± {float(v.std() / math.sqrt(len(v))):.2f}"


def write(part: str, rows: dict[str, dict[int, torch.Tensor]], costs: list[dict], note: str):
    lines = [f"# calibrate benchmark: {part}", "", note, "",
             "| schedule | " + " | ".join(f"L = {s}" for s in STEPS) + " |",
             "|---|" + "---|" * len(STEPS)]
    for name, by_steps in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(by_steps[s]) if s in by_steps else "—"
                                                 for s in STEPS) + " |")
    lines += ["", "| calibration | L | batched calls | contexts | per-sample forwards | wall s |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {c['method']} | {c['steps'] or 'all'} | {c['calls']:.0f} | {c['contexts']} | "
              f"{c['calls'] * c['contexts']:.0f} | {c['seconds']:.1f} |" for c in costs]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"calibrate_{part}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"calibrate_{part}.json").write_text(json.dumps(
        {"rows": {n: {s: v.tolist() for s, v in r.items()} for n, r in rows.items()},
         "costs": costs}, indent=1))
    print("\n".join(lines))


def testbed(args) -> None:
    from learned_schedules.calibration.fit import fit_per_image, per_image_policy
    from learned_schedules.calibration.problem import Meter
    from learned_schedules.calibration.run import CalibrationOptions, calibrate_global
    from learned_schedules.policies.encoders import VectorEncoder
    from learned_schedules.training.calibrate.args import CalibrateArgs
    from learned_schedules.training.calibrate.run import art_schedule
    from learned_schedules.training.testbed.calibration import (
        calibration_grid,
        calibration_problem,
    )
    from learned_schedules.training.testbed.comparators import (
        best_global_schedule,
        fixed_schedules,
    )
    from learned_schedules.training.testbed.mixture import Testbed

    tb = Testbed.default()
    ctx = tb.contexts_from_seed(args.contexts, 0, with_target=False)
    held = tb.contexts_from_seed(512, 10_000)
    train = tb.contexts_from_seed(512, 1)
    problem = calibration_problem(tb, ctx)
    grid = calibration_grid(64)
    rows: dict[str, dict[int, torch.Tensor]] = {}
    costs = []

    def score(name: str, steps: int, flow: torch.Tensor) -> None:
        err = tb.squared_error(held, flow.double()) / tb.dim
        rows.setdefault(name, {})[steps] = -10 * torch.log10(err)

    for steps in STEPS:
        for name, flow in fixed_schedules(steps).items():
            score(name, steps, flow)
        t0 = time.monotonic()
        score("best global (fitted on exact references)", steps,
              best_global_schedule(tb, train, steps))
        costs.append(dict(method="best global fit (exact gradients)", steps=steps, calls=0,
                          contexts=512, seconds=time.monotonic() - t0))
        flows = {}
        for search in ("dp", "gradient", "dp+gradient"):
            t0 = time.monotonic()
            res = calibrate_global(problem, grid, CalibrationOptions(
                steps=(steps,), search=search, budget=args.budget))
            flows[search] = res.schedules[steps].flow
            score(f"teacher {search}", steps, flows[search])
            costs.append(dict(method=f"teacher {search}", steps=steps, calls=res.calls,
                              contexts=len(ctx), seconds=time.monotonic() - t0))
        t0 = time.monotonic()
        torch.manual_seed(0)
        pol = per_image_policy(VectorEncoder(tb.dim, tb.cond_dim, hidden=32, depth=1),
                               flows["dp+gradient"])
        meter = Meter()
        pol, _ = fit_per_image(problem, res.teacher, pol, meter, iterations=300, lr=1e-2,
                               checkpointing=False)
        with torch.no_grad():
            sched = pol.schedule({"noise": held.noise.float(), "cond": held.cond.float()})
        score("teacher per-image", steps, sched)
        costs.append(dict(method="teacher per-image (after dp+gradient)", steps=steps,
                          calls=meter.calls, contexts=len(ctx),
                          seconds=time.monotonic() - t0))
        cargs = CalibrateArgs(backend="testbed", steps=(steps,), method="art")
        flow, seconds, forwards = art_schedule(cargs, steps, Path(args.out) / "art")
        score("ART direct", steps, flow)
        costs.append(dict(method="ART direct (trainer, 16 x 16 trajectories)", steps=steps,
                          calls=forwards, contexts=1, seconds=seconds))
    write("testbed", rows, costs, f"Default testbed, {len(ctx)} calibration contexts, 512 "
          f"held-out; PSNR (dB) of the few-step Euler result to the exact ODE solution; "
          f"{torch.get_num_threads()} thread(s).")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--testbed", action="store_true")
    ap.add_argument("--digits", action="store_true")
    ap.add_argument("--families", default="")
    ap.add_argument("--contexts", type=int, default=256)
    ap.add_argument("--budget", type=float, default=800)
    ap.add_argument("--out", default="/tmp/calibrate_bench")
    ap.add_argument("--no-art", dest="art", action="store_false",
                    help="digits: skip ART direct (slow on a CPU: minutes per iteration)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    if args.testbed:
        testbed(args)
    if args.digits or args.families:
        from calibrate_comfy_bench import digits, families

        if args.digits:
            digits(args, write)
        if args.families:
            families(args, write, args.families.split(","))


if __name__ == "__main__":
    main()
