"""Train the shapes diffusion model: ComfyUI's SD3 MMDiT on 16x4x4 latents of the shapes
generator's 32x32 images, conditioned through the digits model's CLIP-L on the 56 shapes
prompts, with prompt dropout (the empty prompt) so that classifier-free guidance works.

    python scripts/shapes/train_mmdit.py   # -> models/shapes/shapes_mmdit.safetensors

Rectified flow in ComfyUI's SD3 parametrisation (x_t = sigma*noise + (1-sigma)*x0, the network
sees 1000*sigma and predicts noise - x0), sigma ~ logit-normal(0, 1), AdamW with warm-up and
cosine decay, EMA of the weights; seeded. Needs models/shapes/shapes_vae_small.safetensors
(train_vae.py); builds the text encoder if missing. The saved file (fp16, no key prefix) is what
the stock ``UNETLoader`` detects as SD3.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from safetensors.torch import save_file
from shapes_lib import (
    MODEL_DIR,
    NEGATIVE,
    UNET_FILE,
    build_mmdit,
    encode,
    fit_mmdit,
    images_of,
    load_clip,
    load_small_vae,
    prompts,
    setup_comfy,
)


def latents_of(per_prompt: int, seed0: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Model-space latents of ``per_prompt`` generator images per prompt, and prompt indices."""
    x, y = images_of(per_prompt, seed0)
    ae = load_small_vae()
    with torch.no_grad():
        z = torch.cat([ae.encode(x[i:i + 500]) for i in range(0, len(x), 500)])
    return z, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--drop", type=float, default=0.1, help="prompt dropout (for CFG)")
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--per-prompt", type=int, default=300, help="training images per prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    ap.add_argument("--out", default=str(UNET_FILE))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    c = setup_comfy()
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    clip = load_clip(c)
    names = prompts()
    ctx, pooled = encode(clip, names + [NEGATIVE])  # [57, 77, 4096], [57, 2048]
    del clip
    ctx = ctx[..., :768].contiguous()
    x0_all, y_all = latents_of(args.per_prompt)
    empty = len(names)
    net = build_mmdit(args.depth, args.seed).train()
    ema, losses = fit_mmdit(net, x0_all, y_all, empty, ctx, pooled, args, g)
    sd = {k: v.detach().half().contiguous() for k, v in ema.state_dict().items()}
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    save_file(sd, args.out)
    n = len(losses)
    info = {"steps": args.steps, "batch": args.batch, "depth": args.depth,
            "parameters": sum(p.numel() for p in net.parameters()),
            "loss_first_50": round(sum(losses[:50]) / 50, 4),
            "loss_last_100": round(sum(losses[n - 100:]) / min(n, 100), 4),
            "seconds": round(time.time() - t0, 1)}
    print(json.dumps(info))


if __name__ == "__main__":
    main()
