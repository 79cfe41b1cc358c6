"""Train the digits diffusion model: ComfyUI's SD3 MMDiT on 16x4x4 latents of 32x32 digits,
conditioned through the CLIP-L text encoder on "a handwritten digit N", with 15% prompt dropout
(the empty prompt) so that classifier-free guidance works at sampling.

    python scripts/digits/train_mmdit.py   # -> models/digits/digits_mmdit.safetensors

Rectified flow in ComfyUI's SD3 parametrisation (x_t = sigma*noise + (1-sigma)*x0, the network
sees 1000*sigma and predicts noise - x0), sigma ~ logit-normal(0, 1), AdamW, EMA of the weights;
seeded. The saved file (fp16, no key prefix) is what the stock ``UNETLoader`` detects as SD3.
Needs models/digits/digits_vae_linear.safetensors (train_vae.py) and builds the text encoder
(build_text_encoder.py) if missing.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from digits_lib import (
    MODEL_DIR,
    NEGATIVE,
    UNET_FILE,
    build_mmdit,
    encode,
    fit_mmdit,
    load_clip,
    prompts,
    setup_comfy,
)
from safetensors.torch import load_file, save_file

from learned_schedules.training.rewards.digits import load_digits_split, to_canvas


def latents_of(x8: torch.Tensor) -> torch.Tensor:
    """Model-space latents (SD3 ``process_in`` of the VAE's) of 8x8 digits: the linear VAE's
    normalised latent, which is exactly that (see digits_lib.linear_ae_to_taesd)."""
    from digits_lib import LinearAE

    sd = load_file(str(MODEL_DIR / "digits_vae_linear.safetensors"))
    ae = LinearAE(int(sd.pop("k")))
    ae.load_state_dict(sd)
    with torch.no_grad():
        return ae.eval().encode(to_canvas(x8)[:, None])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--drop", type=float, default=0.15, help="prompt dropout (for CFG)")
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(UNET_FILE))
    args = ap.parse_args()
    c = setup_comfy()
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    clip = load_clip(c)
    ctx, pooled = encode(clip, prompts() + [NEGATIVE])  # [11, 77, 4096], [11, 2048]
    del clip
    ctx = ctx[..., :768].contiguous()
    tx, ty, _, _ = load_digits_split()
    x0_all = latents_of(tx)
    net = build_mmdit(args.depth, args.seed).train()
    ema, losses = fit_mmdit(net, x0_all, ty, 10, ctx, pooled, args, g)
    sd = {k: v.detach().half().contiguous() for k, v in ema.state_dict().items()}
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    save_file(sd, args.out)
    n = len(losses)
    info = {"steps": args.steps, "batch": args.batch, "depth": args.depth,
            "parameters": sum(p.numel() for p in net.parameters()),
            "loss_first_50": round(sum(losses[:50]) / 50, 4),
            "loss_last_100": round(sum(losses[n - 100:]) / 100, 4),
            "seconds": round(time.time() - t0, 1)}
    print(json.dumps(info))


if __name__ == "__main__":
    main()
