"""Sample the digits model through ComfyUI's stock nodes (UNETLoader, CLIPLoader sd3,
VAELoader, CLIPTextEncode, EmptySD3LatentImage, KSampler euler/simple, VAEDecode), write a
sample grid and report classifier accuracy, Fréchet distance and coverage.

    python scripts/digits/sample_grid.py [--steps 30] [--cfg 3] [--per-digit 20]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from digits_lib import DEFAULT_CFG, MODEL_DIR, setup_comfy, stock_models, stock_sample
from PIL import Image

from learned_schedules.training.rewards.digits import (
    DigitMeasures,
    class_coverage,
    frechet_distance,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--cfg", type=float, default=DEFAULT_CFG)
    ap.add_argument("--per-digit", type=int, default=20)
    ap.add_argument("--grid", default=str(MODEL_DIR / "samples.png"))
    args = ap.parse_args()
    t0 = time.time()
    c = setup_comfy()
    model, clip, vae = stock_models(c)
    images = torch.cat([stock_sample(c, model, clip, vae, d, args.per_digit, seed=d,
                                     steps=args.steps, cfg=args.cfg) for d in range(10)])
    labels = torch.arange(10).repeat_interleave(args.per_digit)
    m = DigitMeasures()
    with torch.no_grad():
        feats = m.features(images)
        acc = float((m.model.fc2(feats).argmax(-1) == labels).float().mean())
        real, real_y = m.held_out_features()
        real_acc = float((m.model.fc2(real).argmax(-1) == real_y).float().mean())
    cov = class_coverage(real, real_y, feats, labels)
    info = {"steps": args.steps, "cfg": args.cfg, "n": len(labels), "accuracy": acc,
            "real_held_out_accuracy": real_acc, "fd": frechet_distance(feats, real),
            "coverage": float(cov.nanmean()), "seconds": round(time.time() - t0, 1)}
    print(json.dumps(info), flush=True)
    cols = min(args.per_digit, 10)
    grid = images.reshape(10, args.per_digit, 32, 32, 3)[:, :cols]
    grid = torch.nn.functional.pad(grid.permute(0, 1, 4, 2, 3), (1, 1, 1, 1), value=0.35)
    grid = grid.permute(0, 3, 1, 4, 2).reshape(10 * 34, cols * 34, 3)
    img = Image.fromarray((grid.clamp(0, 1).numpy() * 255).astype(np.uint8))
    img.resize((img.width * 2, img.height * 2), Image.NEAREST).save(args.grid)


if __name__ == "__main__":
    main()
