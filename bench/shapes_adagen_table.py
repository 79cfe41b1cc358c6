"""AdaGen on the shapes model read against its ceilings, per prompt group: the default
schedule, the best global schedule, ONE fixed schedule at the policy's mean (``learned_mean``),
the AdaGen sampler and the REINFORCE per-image policy, PSNR (dB) to the 30-step sample with
paired standard errors, from two ``eval`` runs on the same held-out contexts (same prompts,
seeds and noise: ``--seeds 3``, the default held-out seed 10 000):

    python -m learned_schedules.training eval <adagen run or file> --seeds 3 --set-metrics shapes \\
        --schedulers simple --schedule best_global=1,0.75,0.5,0.25,0 --out <adagen eval>
    python bench/shapes_adagen_table.py <adagen eval> bench/results/shapes_eval_L4 \\
        --out bench/results/shapes_adagen_L4.md

The per-prompt and per-sample oracles come from ``scripts/shapes/headroom.py`` (other seeds, its
21 candidates): hindsight ceilings, quoted, not re-measured on these contexts.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO.parent) not in sys.path:  # run as a script from the repository
    sys.path.insert(0, str(REPO.parent))

from learned_schedules.training.datasets.shapes import GROUPS, spec_of  # noqa: E402

ROWS = (("simple", "default (`simple`)"), ("best_global", "best global (1, 0.75, 0.5, 0.25, 0)"),
        ("learned_mean", "fixed at the AdaGen policy's mean"), ("adagen", "AdaGen"),
        ("reinforce", "REINFORCE per-image policy (shipped)"))


def read_rewards(folder: Path, column: str, rename: str) -> dict[tuple[str, str], dict]:
    """(prompt, seed) -> {name: PSNR} of an eval's ``per_prompt.csv`` (``column`` renamed)."""
    out = {}
    with (folder / "per_prompt.csv").open() as f:
        for row in csv.DictReader(f):
            values = {k: float(v) for k, v in row.items() if k not in ("prompt", "seed")}
            values[rename] = values.pop(column)
            out[(row["prompt"], row["seed"])] = values
    return out


def mean_se(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    var = sum((x - m) ** 2 for x in xs) / max(1, len(xs) - 1)
    return m, math.sqrt(var / len(xs))


def table(rows: list[dict], group: str) -> list[str]:
    if group != "all":
        rows = [r for r in rows if r["group"] == group]
    lines = []
    for key, label in ROWS:
        m, se = mean_se([r[key] for r in rows])
        d, dse = mean_se([r[key] - r["best_global"] for r in rows])
        vs = mean_se([r["adagen"] - r[key] for r in rows])
        win = sum(r[key] > r["best_global"] for r in rows) / len(rows)
        lines.append(f"| {group} | {len(rows)} | {label} | {m:.2f} ± {se:.2f} "
                     f"| {d:+.2f} ± {dse:.2f} | {win:.0%} | {vs[0]:+.2f} ± {vs[1]:.2f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("adagen", type=Path, help="eval folder of the AdaGen policy")
    ap.add_argument("reinforce", type=Path, help="eval folder of the REINFORCE policy")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    ada = read_rewards(a.adagen, "learned", "adagen")
    rei = read_rewards(a.reinforce, "learned", "reinforce")
    if set(ada) != set(rei):
        raise SystemExit("the two evals are not on the same held-out contexts")
    rows = [{**ada[k], "reinforce": rei[k]["reinforce"], "group": spec_of(k[0]).group}
            for k in ada]
    for k in ada:  # the same contexts and noise: the shared comparators must agree
        if abs(ada[k]["best_global"] - rei[k]["best_global"]) > 0.05:
            raise SystemExit(f"best_global differs between the evals at {k}")
    report = json.loads((a.adagen / "eval.json").read_text())
    lines = [f"# AdaGen on the shapes model against its ceilings (L = {report['steps']})", "",
             f"{len(rows)} held-out contexts (56 prompts x {len(rows) // 56} seeds, eval seed "
             f"{report['seed']}); PSNR (dB) to the 30-step sample from the same noise; "
             "± standard error; differences paired per context.", "",
             "| group | n | schedule | PSNR | − best global | beats best global | AdaGen − it |",
             "|---|---|---|---|---|---|---|"]
    for group in ("all", *GROUPS):
        lines += table(rows, group)
    spread = report["spread"]
    lines += ["", "AdaGen's schedules: mean (" + ", ".join(f"{v:.3f}" for v in spread["mean"])
              + f"), max |deviation| {spread['max_dev']:.3f}, mean {spread['mean_dev']:.4f} "
              "(flow time)."]
    lines += ["", "Hindsight ceilings on other seeds (`scripts/shapes/headroom.py`, "
              f"`bench/results/shapes_headroom_L{report['steps']}.md`): per-prompt and "
              "per-sample oracles over its 21 candidate schedules."]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
