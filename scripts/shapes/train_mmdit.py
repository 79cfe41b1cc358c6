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
import copy
import json
import math
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from shapes_lib import (
    MODEL_DIR,
    NEGATIVE,
    UNET_FILE,
    build_mmdit,
    embed_context,
    encode,
    images_of,
    load_clip,
    load_small_vae,
    progress,
    prompts,
    setup_comfy,
    velocity,
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
    ema = copy.deepcopy(net).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    warm = 100
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    losses = []
    bar = progress(range(args.steps), desc="mmdit")
    for step in bar:
        idx = torch.randint(0, len(y_all), (args.batch,), generator=g)
        x0 = x0_all[idx]
        cls = y_all[idx].clone()
        cls[torch.rand(args.batch, generator=g) < args.drop] = empty
        sigma = torch.sigmoid(torch.randn(args.batch, generator=g))
        noise = torch.randn(x0.shape, generator=g)
        s = sigma[:, None, None, None]
        xt = s * noise + (1 - s) * x0
        ctx_emb = embed_context(net, ctx)
        out = velocity(net, xt, sigma, ctx_emb[cls], pooled[cls])
        loss = F.mse_loss(out, noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}", refresh=False)
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
