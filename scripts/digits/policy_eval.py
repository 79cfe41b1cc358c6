"""Measure a digits policy against ComfyUI's default schedules and fixed schedules on held-out
seeds: the main reward (PSNR to the 40-step sample, paired differences ± SE), the Fréchet
distance of classifier features to the 500 held-out real digits (paired bootstrap SE of the
difference), per-class coverage and accuracy. Writes Markdown + JSON.

    python scripts/digits/policy_eval.py models/digits/digits_policy_L4.safetensors \\
        --seeds 20 --out bench/results/digits_policy

(run from the repository root with the package importable, e.g.
``PYTHONPATH=<folder holding learned_schedules> COMFYUI_PATH=<ComfyUI>``.)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from learned_schedules.policies.policy_file import load_policy
from learned_schedules.training.eval import backend_for_policy, policy_schedules
from learned_schedules.training.rewards.digits import (
    DigitMeasures,
    class_coverage,
    frechet_distance,
    prompt_digit,
)

BEST_GLOBAL_L4 = "best_global=1,0.716,0.504,0.217,0"  # bench/results/digits_headroom.json


def mean_se(x: torch.Tensor) -> tuple[float, float]:
    x = x.double()
    return float(x.mean()), float(x.std() / math.sqrt(x.numel()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("policy")
    p.add_argument("--seeds", type=int, default=20, help="held-out seeds per digit")
    p.add_argument("--seed", type=int, default=10_000, help="first held-out seed")
    p.add_argument("--schedulers", default="simple,beta,normal,sgm_uniform")
    p.add_argument("--schedule", action="append", default=None,
                   help=f"NAME=S0,...,0 fixed schedules (default: {BEST_GLOBAL_L4} at L=4)")
    p.add_argument("--ceiling-steps", type=int, default=30)
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--out", default="bench/results/digits_policy")
    args = p.parse_args()
    torch.set_num_threads(1)
    start = time.time()

    from learned_schedules.training.cli import parse_schedule_option

    loaded = load_policy(args.policy)
    backend = backend_for_policy(loaded)
    steps = int(loaded.metadata["steps"])
    specs = args.schedule if args.schedule is not None else (
        [BEST_GLOBAL_L4] if steps == 4 else [])
    n = backend.held_out_count() * args.seeds
    ctx = backend.held_out_contexts(n, args.seed)
    comps = backend.comparators(steps, ctx, schedulers=args.schedulers.split(","),
                                fixed_schedules=dict(parse_schedule_option(s) for s in specs))
    flows = {k: v.expand(n, -1) for k, v in comps.items()}
    flows["learned"] = policy_schedules(loaded, backend, ctx).float()
    sigmas = {k: backend.model_sigmas(v) for k, v in flows.items()}
    sigmas[f"simple_{args.ceiling_steps}"] = backend.default_sigmas(args.ceiling_steps)

    measures = DigitMeasures()
    real_f, real_y = measures.held_out_features()
    labels = torch.tensor([prompt_digit(t) for t in backend.prompt_texts(ctx)])
    psnr, feats, out = {}, {}, {}
    for name, sig in sigmas.items():
        images = backend.images(ctx, sig)
        psnr[name] = backend.score(ctx, images)
        feats[name] = measures.features(images)
        cov = class_coverage(real_f, real_y, feats[name], labels)
        out[name] = {"psnr": mean_se(psnr[name]), "fd": frechet_distance(feats[name], real_f),
                     "coverage": float(cov.nanmean()),
                     "accuracy": float((measures.logits(images).argmax(-1) == labels)
                                       .float().mean())}
        print(f"{name}: PSNR {out[name]['psnr'][0]:.2f} FD {out[name]['fd']:.2f}", flush=True)

    g = torch.Generator().manual_seed(0)
    boots = [torch.randint(n, (n,), generator=g) for _ in range(args.bootstrap)]
    for name in out:
        fd_b = torch.tensor([frechet_distance(feats[name][i], real_f) for i in boots])
        out[name]["fd_se"] = float(fd_b.std())
    pairs = {}
    for ref in [s for s in comps if s in ("simple", "best_global")]:
        d = psnr["learned"] - psnr[ref]
        fd_d = torch.tensor([frechet_distance(feats["learned"][i], real_f)
                             - frechet_distance(feats[ref][i], real_f) for i in boots])
        pairs[ref] = {"psnr_diff": mean_se(d), "psnr_win_rate": float((d > 0).double().mean()),
                      "fd_diff": out["learned"]["fd"] - out[ref]["fd"],
                      "fd_diff_se": float(fd_d.std())}

    ceil = f"simple_{args.ceiling_steps}"
    lines = [f"# Digits model: learned schedule vs ComfyUI's schedules (L = {steps})", "",
             f"Policy `{args.policy}`; held-out seeds {args.seed}.. ({args.seeds} per digit, "
             f"{n} contexts; training seeds are >= 2**30); euler, cfg {backend.cfg}. PSNR (dB) "
             "to the 40-step default sample from the same noise (mean ± SE); FD = Fréchet "
             "distance of classifier features to the 500 held-out real digits (± bootstrap "
             f"SE over contexts, {args.bootstrap} resamples); coverage = mean per-class "
             "coverage; accuracy of the classifier on the prompted digit.", "",
             "| schedule | PSNR | FD | coverage | accuracy |", "|---|---|---|---|---|"]
    for name, r in out.items():
        lines.append(f"| {name} | {r['psnr'][0]:.2f} ± {r['psnr'][1]:.2f} | "
                     f"{r['fd']:.2f} ± {r['fd_se']:.2f} | {r['coverage']:.3f} | "
                     f"{r['accuracy']:.3f} |")
    lines += ["", "Learned minus reference, paired on the same contexts:", "",
              "| reference | PSNR difference | t (diff / SE) | wins | FD difference |",
              "|---|---|---|---|---|"]
    for ref, r in pairs.items():
        (m, se), fd = r["psnr_diff"], r["fd_diff"]
        lines.append(f"| {ref} | {m:+.2f} ± {se:.2f} dB | {m / se:+.1f} | "
                     f"{100 * r['psnr_win_rate']:.0f}% | {fd:+.2f} ± {r['fd_diff_se']:.2f} |")
    if "simple" in out:

        def value(name: str, key: str) -> float:
            return out[name][key][0] if key == "psnr" else out[name][key]

        for what, key in (("PSNR", "psnr"), ("FD", "fd")):
            lo, hi = value("simple", key), value(ceil, key)
            shares = [f"{name} {100 * (value(name, key) - lo) / (hi - lo):.0f}%"
                      for name in ("learned", "best_global") if name in out]
            lines.append(f"\nShare of the default L={steps} -> default {args.ceiling_steps}-"
                         f"step {what} gap closed: " + ", ".join(shares) + ".")
    lines += ["", "First learned schedules (sigmas): "
              + "; ".join(", ".join(f"{v:.3f}" for v in row)
                          for row in sigmas["learned"][:3].tolist()),
              f"\n{time.time() - start:.0f} s."]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".md").write_text(text)
    Path(args.out + ".json").write_text(json.dumps(
        {"policy": args.policy, "steps": steps, "contexts": n, "seed": args.seed,
         "rows": out, "paired": pairs,
         "schedules": {k: v.tolist() for k, v in comps.items()}}, indent=2))


if __name__ == "__main__":
    main()
