"""Per-instance headroom against the guidance scale: at L steps, the per-sample oracle's PSNR
gain over the best global schedule (fitted on other seeds), for each CFG scale.

    python scripts/digits/oracle_cfg.py [--cfg 4.5 2.0] [--steps 3]
    # -> bench/results/digits_oracle_cfg.md (or --out)

Smaller than headroom.py (10 digits x 4 seeds, global fit 40 Adam steps, oracle 60).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from headroom import OUT, Setting, batched, default_sigmas, evaluate, fit, noise_for, schedule


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cfg", type=float, nargs="+", default=[4.5, 2.0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--per-digit", type=int, default=4)
    ap.add_argument("--out", default=str(OUT.parent / "digits_oracle_cfg.md"))
    args = ap.parse_args()
    torch.manual_seed(0)
    st = Setting(args.cfg[0])
    n = 10 * args.per_digit

    def inst(seed0: int):
        cls = torch.arange(10).repeat_interleave(args.per_digit)
        noise = noise_for([seed0 + i for i in range(len(cls))])
        with torch.no_grad():
            ref = batched(lambda s: st.sample(cls[s], noise[s], default_sigmas(st.patcher, 40)),
                          len(cls))
        return cls, noise, ref

    lines = [f"# Digits: per-sample oracle vs best global schedule by CFG (L={args.steps}, "
             f"{n} held-out instances, PSNR dB to the 40-step sample)", "",
             "| cfg | default | best global | oracle | oracle - global | oracle sigma_1 range |",
             "|---|---|---|---|---|---|"]
    for cfg in args.cfg:
        st.cfg = cfg
        fi, ev = inst(20_000), inst(10_000)
        d = default_sigmas(st.patcher, args.steps)
        g = schedule(fit(st, *fi, d, torch.zeros(n, dtype=torch.long), 40, desc="global"))[0]
        o = schedule(fit(st, *ev, g, torch.arange(n), 60, desc="oracle"))
        rg, ro, rd = evaluate(st, *ev, g), evaluate(st, *ev, o), evaluate(st, *ev, d)
        diff = ro["psnr_each"] - rg["psnr_each"]
        lines.append(f"| {cfg} | {rd['psnr']:.2f} | {rg['psnr']:.2f} | {ro['psnr']:.2f} | "
                     f"{diff.mean():+.2f} ± {diff.std() / math.sqrt(n):.2f} | "
                     f"{o[:, 1].min():.2f}-{o[:, 1].max():.2f} |")
        print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
