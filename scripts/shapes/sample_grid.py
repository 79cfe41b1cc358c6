"""Samples of the shapes model through ComfyUI's stock nodes, and its quality numbers.

    python scripts/shapes/sample_grid.py   # -> models/shapes/samples.png + JSON on stdout

CLIPTextEncode -> EmptySD3LatentImage 32x32 -> KSampler (euler, simple, cfg 2, 30 steps) ->
VAEDecode for every prompt, --seeds seeds each (batch of one prompt; seed 100 + prompt index).
Reports the exact checks (training/rewards/shapes.py) per prompt group and per category,
and the glyph classifier's accuracy on the glyph prompts' samples.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from PIL import Image
from shapes_lib import (
    DEFAULT_CFG,
    MODEL_DIR,
    data,
    progress,
    prompts,
    setup_comfy,
    stock_models,
    stock_sample,
)

from learned_schedules.training.rewards.shapes import ShapesChecks


def grid(images: torch.Tensor, per_prompt: int, prompts_per_row: int = 4, scale: int = 2
         ) -> Image.Image:
    """One block of ``per_prompt`` samples per prompt, ``prompts_per_row`` blocks a row."""
    x = (images.clamp(0, 1).numpy() * 255).astype(np.uint8)
    blocks = [np.concatenate(list(x[i:i + per_prompt]), 1)
              for i in range(0, len(x), per_prompt)]
    pad = np.full((32, 2, 3), 255, np.uint8)
    rows = []
    for i in range(0, len(blocks), prompts_per_row):
        row = [np.concatenate([b, pad], 1) for b in blocks[i:i + prompts_per_row]]
        rows.append(np.concatenate(row, 1))
    img = Image.fromarray(np.concatenate(rows, 0))
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--cfg", type=float, default=DEFAULT_CFG)
    ap.add_argument("--out", default=str(MODEL_DIR / "samples.png"))
    args = ap.parse_args()
    t0 = time.time()
    c = setup_comfy()
    model, clip, vae = stock_models(c)
    names = prompts()
    imgs = torch.cat([stock_sample(c, model, clip, vae, p, args.seeds, seed=100 + i,
                                   steps=args.steps, cfg=args.cfg)
                      for i, p in enumerate(progress(names, desc="prompts"))])
    grid(imgs, args.seeds).save(args.out)
    labels = [p for p in names for _ in range(args.seeds)]
    res = ShapesChecks()(imgs, labels)
    score = np.nanmean(np.stack(list(res.values())), 0)
    groups = np.array([data.spec_of(p).group for p in labels])
    info = {"checks_all": round(float(score.mean()), 3),
            "checks_by_group": {g: round(float(score[groups == g].mean()), 3)
                                for g in data.GROUPS},
            "checks_by_category": {k: round(float(np.nanmean(v)), 3) for k, v in res.items()
                                   if not np.isnan(v).all()},
            "images": len(labels), "steps": args.steps, "cfg": args.cfg,
            "seconds": round(time.time() - t0, 1)}
    print(json.dumps(info))


if __name__ == "__main__":
    main()
