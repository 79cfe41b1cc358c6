"""Collapse diagnosis: per-iteration concentration, schedule spread and JS variance components.

Reads the runs of ``bench/quality_study.py`` (``bench/results/quality/<suite>.json``; each run
logs every 20 iterations the total Dirichlet concentration ``sum(alpha)`` and the spread across
64 held-out contexts of the mean schedule, plus the batch's ``s2``, ``d2`` and JS weight) and
writes ``bench/results/quality/collapse_diagnosis.md``: trajectories, the iteration at which
the schedules first differ across contexts (spread > 0.01), and the concentration then.

Usage: ``python bench/collapse_diagnosis.py [--suites collapse configs]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "quality"
CHECKPOINTS = (1, 100, 200, 400, 800, 1200, 1600, 2000)


def first_spread(diag: list[dict], level: float = 0.01) -> tuple[int | None, float | None]:
    """The first logged iteration from which the spread stays above ``level`` to the end."""
    found = None
    for row in reversed(diag):
        if row["spread"] <= level:
            break
        found = row
    if found is None:
        return None, None
    return found["iteration"], found.get("diag_concentration")


def render(suites: list[str]) -> str:
    lines = ["# Collapse diagnosis", "",
             "Per run: concentration sum(alpha) / spread of the mean schedule across 64 held-out "
             "contexts (std over contexts, mean over interior timesteps) at iterations "
             f"{', '.join(map(str, CHECKPOINTS))}; s2 (within-context reward variance of the "
             "batch, averaged over the run's logged iterations after 100), the JS weight "
             "s2/(s2 + d2) it implies at K = 2, and the iteration from which the spread "
             "stays above 0.01 to the end.", ""]
    for suite in suites:
        path = OUT / f"{suite}.json"
        if not path.exists():
            continue
        runs = json.loads(path.read_text())["runs"]
        lines += [f"## suite `{suite}`", "",
                  "| run | kappa at checkpoints | spread at checkpoints | mean s2 | mean d2 "
                  "| implied JS weight | spread > 0.01 for good from (kappa then) | final spread |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, res in runs.items():
            diag = res["diag"]
            if res["exp"]["algo"] == "pathwise":
                continue
            at = {row["iteration"]: row for row in diag}
            kap = " / ".join(f"{at[c]['diag_concentration']:.0f}" for c in CHECKPOINTS if c in at)
            spr = " / ".join(f"{at[c]['spread']:.3f}" for c in CHECKPOINTS if c in at)
            late = [row for row in diag if row["iteration"] > 100]
            s2 = sum(row["s2"] for row in late) / max(1, len(late))
            d2 = sum(row["d2"] for row in late) / max(1, len(late))
            it, k = first_spread(diag)
            when = "never" if it is None else f"{it} ({k:.0f})"
            lines.append(f"| {key} | {kap} | {spr} | {s2:.3f} | {d2:.2f} | "
                         f"{s2 / (s2 + d2):.3f} | {when} | {res['spread']:.4f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suites", nargs="+", default=["collapse", "configs"])
    args = ap.parse_args()
    text = render(args.suites)
    (OUT / "collapse_diagnosis.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
