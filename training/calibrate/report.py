"""The evaluation table of ``calibrate``: PSNR (dB) of every schedule's few-step result to the
many-step result on held-out contexts, mean ± standard error, and the paired difference of the
calibrated schedule minus each row (± paired SE; > 3 SE is a clear win)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

CALIBRATED = "calibrated"
PER_IMAGE = "calibrated per-image"


def _mean_se(x: torch.Tensor) -> tuple[float, float]:
    x = x.double()
    se = float(x.std() / math.sqrt(len(x))) if len(x) > 1 else float("nan")
    return float(x.mean()), se


def table_rows(psnr: dict[str, torch.Tensor], reference: str = CALIBRATED
               ) -> list[dict[str, Any]]:
    """One row per schedule (sorted by mean PSNR, best first): mean, SE, and the paired
    difference ``reference - row`` with its SE and the share of contexts the reference
    wins."""
    ref = psnr[reference].double()
    rows = []
    for name, values in psnr.items():
        mean, se = _mean_se(values)
        row: dict[str, Any] = {"name": name, "psnr": mean, "se": se}
        if name != reference:
            diff = ref - values.double()
            row["gain"], row["gain_se"] = _mean_se(diff)
            row["wins"] = float((diff > 0).double().mean())
        rows.append(row)
    return sorted(rows, key=lambda r: -r["psnr"])


def markdown(tables: dict[int, list[dict[str, Any]]], contexts: int, header: str) -> str:
    """The tables of every step count in Markdown."""
    lines = [header, ""]
    for steps, rows in tables.items():
        lines += [f"### L = {steps} ({contexts} held-out contexts)", "",
                  "| schedule | PSNR (dB) | calibrated − this (paired) | calibrated wins |",
                  "|---|---|---|---|"]
        for r in rows:
            gain = f"{r['gain']:+.2f} ± {r['gain_se']:.2f}" if "gain" in r else "—"
            wins = f"{100 * r['wins']:.0f}%" if "wins" in r else "—"
            name = f"**{r['name']}**" if r["name"].startswith(CALIBRATED) else r["name"]
            lines.append(f"| {name} | {r['psnr']:.2f} ± {r['se']:.2f} | {gain} | {wins} |")
        lines.append("")
    return "\n".join(lines)


def write_report(out: Path, tables: dict[int, list[dict[str, Any]]], contexts: int,
                 header: str, summary: dict[str, Any]) -> Path:
    """``calibration.md`` and ``calibration.json`` in ``out``; returns the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    md = out / "calibration.md"
    md.write_text(markdown(tables, contexts, header))
    (out / "calibration.json").write_text(json.dumps(
        {"summary": summary, "tables": {str(k): v for k, v in tables.items()}}, indent=1,
        default=str))
    return md


__all__ = ["CALIBRATED", "PER_IMAGE", "table_rows", "markdown", "write_report"]
