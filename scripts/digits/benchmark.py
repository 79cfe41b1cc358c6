"""The digits benchmark table: for each step count L, ``eval`` (the trainer's own report) of a
learned policy against ComfyUI's schedulers, the uniform and the best global schedule (fitted by
headroom.py) and the default at 30 steps (the ceiling), with the Fréchet distance and coverage
of every row; then one table: share of the default (L) -> default (30 steps) gap closed by the
best global schedule and by the policy, on the main reward and on the Fréchet distance, the
policy's gain over the default and, separately, over the best global schedule, and the
per-instance headroom (per-sample oracle - best global, from headroom.py).

    python scripts/digits/benchmark.py L=POLICY [L=POLICY ...] --seeds 20 \\
        --headroom bench/results/digits_headroom.json bench/results/digits_headroom_L2_L6.json
    # -> bench/results/digits_benchmark.{md,json}, eval reports in bench/results/digits_eval_L*/

(run from the repository root with the package importable, e.g.
``PYTHONPATH=<folder holding learned_schedules> COMFYUI_PATH=<ComfyUI>``.)
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from learned_schedules.policies.policy_file import load_policy
from learned_schedules.training.eval import backend_for_policy, evaluate_policy_file

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("policies", nargs="+",
                    help="L=PATH or L:TAG=PATH (policy files; TAG labels a second policy at L)")
    ap.add_argument("--reuse", action="store_true",
                    help="read an existing bench/results/digits_eval_L*/eval.json of the same "
                         "policy instead of evaluating again")
    ap.add_argument("--seeds", type=int, default=20, help="held-out seeds per digit")
    ap.add_argument("--seed", type=int, default=10_000)
    ap.add_argument("--schedulers", default="simple,beta,normal,sgm_uniform")
    ap.add_argument("--ceiling-steps", type=int, default=30)
    ap.add_argument("--headroom", nargs="*", type=Path,
                    default=[RESULTS / "digits_headroom.json",
                             RESULTS / "digits_headroom_L2_L6.json"])
    ap.add_argument("--out", type=Path, default=RESULTS / "digits_benchmark")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    start = time.time()
    headroom: dict[int, dict] = {}
    for path in args.headroom:
        if path.is_file():
            headroom.update({int(k): v for k, v in json.loads(path.read_text())["by_steps"]
                             .items()})
    backend = None
    table, raw = [], {}
    for item in args.policies:
        label, path = item.split("=", 1)
        steps = int(label.split(":")[0])
        tag = label.split(":")[1] if ":" in label else ""
        loaded = load_policy(path)
        if int(loaded.metadata["steps"]) != steps:
            raise ValueError(f"{path} is a {loaded.metadata['steps']}-step policy, not {steps}.")
        fixed = {"uniform": torch.linspace(1, 0, steps + 1).tolist()}
        h = headroom.get(steps)
        if h is not None:  # the fit's float noise: exactly 0 at the end, never increasing
            best = torch.tensor(h["schedules"]["best_global"], dtype=torch.float64)
            best = torch.cummin(best.clamp(0, 1), 0).values
            best[-1] = 0.0
            fixed["best_global"] = [round(float(v), 6) for v in best]
        out = args.out.parent / f"digits_eval_L{steps}{'_' + tag if tag else ''}"
        old = json.loads((out / "eval.json").read_text()) if (out / "eval.json").is_file() \
            else None
        if args.reuse and old is not None and old["policy"] == str(path):
            rows = {r["name"]: r for r in old["rows"]}
            ceiling = old.get("ceiling")
        else:
            backend = backend or backend_for_policy(loaded)  # one back-end: references cached
            report = evaluate_policy_file(
                path, seeds=args.seeds, seed=args.seed, backend=backend,
                options={"schedulers": tuple(args.schedulers.split(",")),
                         "fixed_schedules": fixed},
                out=out, ceiling_steps=args.ceiling_steps)
            rows, ceiling = {r["name"]: r for r in report.rows}, report.ceiling
            print(report.markdown(), flush=True)
        name = f"{steps}" + (f" ({tag})" if tag else "")
        raw[name] = {"rows": rows, "fixed": fixed, "policy": str(path),
                     "headroom": None if h is None else {
                         "oracle_minus_global": h["oracle_minus_global_psnr"],
                         "se": h["oracle_minus_global_se"]}}
        table.append((name, rows, h, ceiling))

    def pct(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:.0f}%"

    lines = [
        "# Digits benchmark: learned schedule vs ComfyUI's default and the best global schedule",
        "",
        f"`eval` on 10 digits x {args.seeds} held-out seeds ({args.seed}..), euler, cfg 2, "
        "reward `reference` = PSNR (dB) to the 40-step default sample from the same noise; FD = "
        "Fréchet distance of classifier features to the 500 held-out real digits (± paired "
        "bootstrap SE over contexts); gap closed = share of the default (`simple`, L steps) -> "
        f"default {args.ceiling_steps}-step gap. Best global = the headroom study's schedule "
        "fitted on other seeds; oracle - best global = per-sample oracle vs best global on 60 "
        "held-out instances (headroom.py).", "",
        "| L | default PSNR / FD | best global | learned | learned − default | "
        "learned − best global | gap closed: best global (PSNR / FD) | gap closed: learned "
        "(PSNR / FD) | headroom: oracle − best global |",
        "|---|---|---|---|---|---|---|---|---|"]
    for steps, rows, h, _ceiling in table:
        d, lr = rows["simple"], rows["learned"]
        bg = rows.get("best_global")

        cells = [str(steps), f"{d['reward_mean']:.2f} / {d['fd']:.1f}",
                 "—" if bg is None else f"{bg['reward_mean']:.2f} / {bg['fd']:.1f}",
                 f"{lr['reward_mean']:.2f} / {lr['fd']:.1f}",
                 f"{lr['default_diff_mean']:+.2f} ± {lr['default_diff_se']:.2f} dB, FD "
                 f"{lr['fd_minus_simple']:+.1f} ± {lr['fd_minus_simple_se']:.1f}"]
        if bg is not None:
            cells.append(f"{lr['diff_mean']:+.2f} ± {lr['diff_se']:.2f} dB, FD "
                         f"{lr['fd_minus_best_global']:+.2f} ± "
                         f"{lr['fd_minus_best_global_se']:.2f}")
            cells.append(f"{pct(bg['reward_gap_closed_to_ceiling'])} / "
                         f"{pct(bg['fd_gap_closed_to_ceiling'])}")
        else:
            cells += ["—", "—"]
        cells.append(f"{pct(lr['reward_gap_closed_to_ceiling'])} / "
                     f"{pct(lr['fd_gap_closed_to_ceiling'])}")
        cells.append("—" if h is None else f"{h['oracle_minus_global_psnr']:+.2f} ± "
                     f"{h['oracle_minus_global_se']:.2f} dB")
        lines.append("| " + " | ".join(cells) + " |")
    ceil_row = table[0][1][table[0][3]] if table and table[0][3] else None
    if ceil_row is not None:
        lines += ["", f"Ceiling (`{table[0][3]}`): PSNR {ceil_row['reward_mean']:.2f} dB, FD "
                  f"{ceil_row['fd']:.2f} ± {ceil_row['fd_se']:.2f}, coverage "
                  f"{ceil_row['coverage']:.3f}."]
    lines += ["", "Full reports (every scheduler, uniform, coverage, accuracy): "
              + "`bench/results/digits_eval_L*/eval.md`.",
              "", f"{time.time() - start:.0f} s."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(
        {str(k): v for k, v in raw.items()}, indent=1, default=float))


if __name__ == "__main__":
    main()
