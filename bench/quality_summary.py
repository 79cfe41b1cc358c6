"""Summary of the issue-11 benchmark tables (``bench/results/quality_table/*.json``, written by
``bench/testbed_table.py``): gap closed per configuration, budget and method, collapses, and
the iterations JS / grouped JS need to reach RLOO's final held-out reward.

Usage: ``python bench/quality_summary.py [--dir bench/results/quality_table]``; prints
markdown and writes ``summary.md`` in that folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = ["none", "rloo", "xctx", "js", "grouped_js", "grouped_js_pergroup", "ppo"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="bench/results/quality_table")
    args = ap.parse_args()
    folder = Path(args.dir)
    cells: dict[tuple[str, int], dict] = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        cfg = data["config"].get("testbed_config")
        name = Path(cfg).stem if cfg else "default_testbed"
        for L, entry in data["steps"].items():
            cells[(name, int(L))] = entry
    present = {r["name"].removeprefix("policy ") for e in cells.values() for r in e["rows"]}
    order = [m for m in ORDER if m in present]
    lines = ["| config | L | best global -> oracle | " + " | ".join(order)
             + " | collapsed | JS / grouped JS iterations to RLOO's final (ratio) |",
             "|---|---|---|" + "---|" * len(order) + "---|---|"]
    for (name, L), entry in sorted(cells.items()):
        rows = {r["name"]: r for r in entry["rows"]}
        lo, hi = rows["best_global"]["mean"], rows["oracle"]["mean"]
        out, collapsed, runs = [], 0, 0
        for m in order:
            r = rows.get(f"policy {m}")
            if r is None:
                out.append("")
                continue
            seeds = ", ".join(f"{100 * g:.0f}" for g in r["per_seed"])
            out.append(f"**{100 * r['gap']:.0f}%** ({seeds})")
            if m not in ("none", "xctx"):
                collapsed += r["collapsed"]
                runs += len(r["per_seed"])
        reach = entry.get("reach_rloo_final", {})
        rl = entry.get("rloo_iters_to_final")
        text = "; ".join(
            f"{m}: {v['iterations'] if v['iterations'] is not None else 'never'}"
            + (f" ({v['ratio']:.2f})" if v["ratio"] is not None else "") for m, v in reach.items())
        lines.append(f"| {name} | {L} | {lo:.3f} -> {hi:.3f} | " + " | ".join(out)
                     + f" | {collapsed}/{runs} | RLOO {rl}; {text} |")
    text = "\n".join(lines)
    print(text)
    (folder / "summary.md").write_text(
        "Gap closed, mean over 3 training seeds (per seed in brackets); collapsed = held-out "
        "spread < 0.003, counted over RLOO / JS / grouped JS / PPO runs.\n\n" + text + "\n")


if __name__ == "__main__":
    main()
