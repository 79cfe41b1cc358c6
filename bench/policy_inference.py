"""Policy inference time for a Flux-sized 1024x1024 latent and an SD3/Flux-sized prompt.

Times one single-shot policy call (features -> Dirichlet mean -> schedule) with the ``flux``
and ``sd3`` encoder presets on a 1x16x128x128 noise latent and 512 T5 tokens of width 4096
(plus the pooled embedding), under ``torch.inference_mode``. The baseline measured in the
same process is one 3x3 convolution 16->16 channels over the same latent (a fixed, tiny unit
of work), so the ratio is comparable across machines; absolute milliseconds are given too.

Usage: ``python bench/policy_inference.py [--device cpu|cuda] [--runs 10] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from learned_schedules.policies.dirichlet import DirichletPolicy, parameter_count
from learned_schedules.policies.latent_encoder import PRESETS, LatentTextEncoder
from timing import median_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    dev = args.device
    torch.manual_seed(0)
    noise = torch.randn(1, 16, 128, 128, device=dev)
    conv = torch.nn.Conv2d(16, 16, 3, padding=1).to(dev)
    rows = []
    with torch.inference_mode():
        base_ms = median_ms(lambda: conv(noise), args.runs, dev)
        for family in ("flux", "sd3"):
            pol = DirichletPolicy(LatentTextEncoder.for_family(family), args.steps,
                                  head_hidden=256).to(dev).eval()
            tokens = torch.randn(1, 512, 4096, device=dev)
            pooled = torch.randn(1, PRESETS[family]["pooled_dim"], device=dev)
            ms = median_ms(lambda p=pol, t=tokens, q=pooled: p.schedule(
                {"noise": noise, "tokens": t, "pooled": q}), args.runs, dev)
            rows.append({"family": family, "params_M": parameter_count(pol) / 1e6, "ms": ms,
                         "ratio_to_conv": ms / base_ms})
    lines = [f"Device: {dev} ({torch.get_num_threads()} threads), latent 1x16x128x128, "
             f"512 tokens x 4096, L={args.steps}; baseline conv3x3 16->16: {base_ms:.2f} ms\n",
             "| preset | params | policy call (ms) | ÷ baseline conv |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['family']} | {r['params_M']:.2f} M | {r['ms']:.1f} | "
                     f"{r['ratio_to_conv']:.1f}x |")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"policy_inference_{dev}.md").write_text(text + "\n")
    (out / f"policy_inference_{dev}.json").write_text(json.dumps(
        {"device": dev, "baseline_ms": base_ms, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
