"""Train the shapes VAE: TAESD's encoder / decoder at width 32, saved as a stock 16-channel
TAESD file (the extra width zero) that ComfyUI's ``VAELoader`` loads (32x32 RGB <-> 16x4x4 SD3
latents), plus the narrow network itself for the scripts.

    python scripts/shapes/train_vae.py   # -> models/shapes/shapes_vae{,_small}.safetensors

Data: the shapes generator (training/datasets/shapes.py), 56 prompts x --per-prompt images
(seeds 0...), held out: 56 x 5 other seeds (1,000,000...). MSE, Adam with cosine decay, a
little Gaussian noise on the normalised latent (so slightly-off latents decode to clean
images); the last 15% of steps freeze the latent statistics. Seeded. Reports held-out PSNR of
the narrow network and of ComfyUI's VAE loaded from the written file, per prompt group.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from shapes_lib import (
    MODEL_DIR,
    VAE_FILE,
    VAE_SMALL_FILE,
    SmallTAESD,
    data,
    images_of,
    progress,
    psnr,
    setup_comfy,
    small_to_taesd,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=1, help="residual blocks per level (<= 3)")
    ap.add_argument("--per-prompt", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--latent-noise", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(VAE_FILE))
    args = ap.parse_args()
    c = setup_comfy()
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    train, _ = images_of(args.per_prompt, 0)
    held, held_y = images_of(5, 1_000_000)
    ae = SmallTAESD(args.width, blocks=args.blocks)
    opt = torch.optim.Adam(ae.parameters(), lr=args.lr)
    warm = 100
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + torch.cos(
            torch.tensor(torch.pi * s / args.steps)).item()) + 0.02)
    losses = []
    bar = progress(range(args.steps), desc="vae")
    for step in bar:
        if step == int(0.85 * args.steps):
            ae.norm.eval()  # the decoder adapts to the frozen latent statistics
        idx = torch.randint(0, len(train), (args.batch,), generator=g)
        x = train[idx]
        z = ae.encode(x)
        z = z + args.latent_noise * torch.randn(z.shape, generator=g)
        loss = F.mse_loss(ae.decode(z), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 25 == 0:
            recent = sum(losses[-25:]) / len(losses[-25:])
            bar.set_postfix(psnr=f"{-10 * torch.log10(torch.tensor(recent)):.1f}", refresh=False)
    ae.eval()
    with torch.no_grad():
        rec = ae(held).clamp(0, 1)
        z = torch.cat([ae.encode(train[i:i + 500]) for i in range(0, len(train), 500)])
    small = {k: v.contiguous() for k, v in ae.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    small["w"] = torch.tensor(args.width)
    small["blocks"] = torch.tensor(args.blocks)
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    save_file(small, str(VAE_SMALL_FILE))
    sd = {k: v.half() for k, v in small_to_taesd(ae).items()}
    save_file(sd, args.out)
    # the written file through ComfyUI's own VAE class (what VAELoader builds)
    vae = c.comfy.sd.VAE(sd=c.comfy.utils.load_torch_file(args.out))
    img = held.permute(0, 2, 3, 1)
    lat = vae.encode(img)
    dec = vae.decode(lat).reshape(img.shape)
    with torch.no_grad():
        p_small, p_comfy = psnr(rec, held), psnr(dec, img)
    groups = [data.TRAINING_SPECS[int(i)].group for i in held_y]
    by_group = {gr: round(float(p_comfy.detach()[[x == gr for x in groups]].mean()), 2)
                for gr in data.GROUPS}
    info = {"held_out_psnr_small": round(float(p_small.mean()), 2),
            "held_out_psnr_comfy_vae": round(float(p_comfy.mean()), 2),
            "held_out_psnr_by_group": by_group,
            "latent_shape": list(lat.shape[1:]),
            "model_space_latent_std": round(float(((lat - 0.0609) * 1.5305).std()), 3),
            "norm_latent_std": round(float(z.std()), 3),
            "loss_last_100": round(sum(losses[-100:]) / 100, 5),
            "seconds": round(time.time() - t0, 1)}
    print(json.dumps(info))


if __name__ == "__main__":
    main()
