"""Reward hacking on the digits model: AdaGen on the ``digit`` reward alone vs on the
adversarial reward (a discriminator against real training digits of the prompted class), with
the default schedule beside them, on held-out seeds of the ten prompts.

    OMP_NUM_THREADS=1 nice python bench/adagen_digits.py --steps 3 --iterations 60

Columns: accuracy (the classifier recognises the prompted digit: quality), FD (Fréchet
distance of classifier features to the 500 held-out real digits; real floor ~4.5), coverage
(mean per-class coverage of the held-out real digits; real ~0.80), the digit reward.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "digits_reference.json"


def measure(backend, contexts, images) -> dict[str, float]:
    from learned_schedules.training.rewards.digits import (
        DigitMeasures,
        class_coverage,
        frechet_distance,
        prompt_digit,
    )

    m = DigitMeasures()
    labels = torch.tensor([prompt_digit(p) for p in backend.prompt_texts(contexts)])
    real, real_y = m.held_out_features()
    feats = m.features(images)
    logp = torch.log_softmax(m.logits(images), -1)[torch.arange(len(labels)), labels]
    return {"accuracy": m.accuracy(images, labels), "fd": frechet_distance(feats, real),
            "coverage": float(class_coverage(real, real_y, feats, labels).nanmean()),
            "digit": float(logp.mean())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=20, help="held-out seeds per digit")
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from learned_schedules.training.rl.backend import make_backend
    from learned_schedules.training.rl.config import TrainConfig
    from learned_schedules.training.rl.engine import train
    from learned_schedules.training.rl.stepwise import policy_rollout

    base = json.loads(CONFIG.read_text())
    for key in ("diffusion_model", "text_encoders", "vae", "prompts"):
        base[key] = str(REPO / base[key])
    tmp = tempfile.mkdtemp()
    base.update(steps=args.steps, iterations=args.iterations, algo="adagen", reward="digit",
                out=tmp, eval_every=0, checkpoint_every=0, batch=16, rollouts=2, lr=1e-3,
                progress=False, comfyui_base=str(Path(tmp) / "base"), hidden=64,
                cache_dir=str(Path(tmp) / "cond"))
    base.pop("baseline", None)
    backend = make_backend(TrainConfig.from_dict(base))
    ctx = backend.held_out_contexts(10 * args.seeds, 10_000)
    rows = {"default (simple)": measure(backend, ctx, backend.images(
        ctx, backend.default_sigmas(args.steps)))}
    for name, adagen in (("adagen digit reward only", {"adversarial": 0.0, "task": 1.0}),
                         ("adagen adversarial (real digits)",
                          {"adversarial": 1.0, "task": 0.0, "reference": "digits"})):
        cfg = TrainConfig.from_dict({**base, "run_name": name.split()[1], "adagen": adagen})
        t0 = time.perf_counter()
        policy = train(cfg, backend=backend).policy
        secs = time.perf_counter() - t0
        final = policy_rollout(policy, backend, ctx).final
        rows[name] = {**measure(backend, ctx, backend.decode(final)), "train_s": secs}
    print(f"digits model, L={args.steps}, {args.iterations} iterations, "
          f"{len(ctx)} held-out contexts")
    print("| sampler | accuracy | FD | coverage | digit reward | train s |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['accuracy']:.3f} | {r['fd']:.1f} | {r['coverage']:.3f} | "
              f"{r['digit']:.3f} | {r.get('train_s', 0):.0f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    sys.exit(main())
