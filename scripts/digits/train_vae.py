"""Fit the digits VAE: a linear autoencoder in TAESD's exact shape, saved as a 16-channel TAESD
file that ComfyUI's stock ``VAELoader`` loads (32x32 images <-> 16x4x4 SD3 latents).

    python scripts/digits/train_vae.py   # -> models/digits/digits_vae.safetensors (+ _linear)

Seeded; about a minute on 2 CPU cores. Reports the reconstruction PSNR on held-out digits, both
of the small network and of ComfyUI's VAE loaded from the written file.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from digits_lib import MODEL_DIR, VAE_FILE, LinearAE, linear_ae_to_taesd, progress, setup_comfy
from safetensors.torch import save_file

from learned_schedules.training.rewards.digits import load_digits_split, to_canvas


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10((a - b).pow(2).mean()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--k", type=int, default=16, help="signed channels (<= 32)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    c = setup_comfy()
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    tx, _, vx, _ = load_digits_split()
    train, held = to_canvas(tx)[:, None], to_canvas(vx)[:, None]
    ae = LinearAE(args.k)
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    t0 = time.time()
    bar = progress(range(args.steps), desc="vae")
    for step in bar:
        if step == args.steps - 150:
            ae.norm.eval()  # last steps: the decoder adapts to the frozen latent statistics
        idx = torch.randint(0, len(train), (64,), generator=g)
        loss = F.mse_loss(ae(train[idx]), train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            bar.set_postfix(psnr=f"{-10 * torch.log10(loss).item():.1f}", refresh=False)
    ae.eval()
    with torch.no_grad():
        rec = ae(held).clamp(0, 1)
        z = ae.encode(train)
    linear = {k: v.contiguous() for k, v in ae.state_dict().items()}
    linear["k"] = torch.tensor(args.k)
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    save_file(linear, str(MODEL_DIR / "digits_vae_linear.safetensors"))
    sd = {k: v.half() for k, v in linear_ae_to_taesd(ae).items()}
    save_file(sd, str(VAE_FILE))
    # the written file through ComfyUI's own VAE class (what VAELoader builds)
    vae = c.comfy.sd.VAE(sd=c.comfy.utils.load_torch_file(str(VAE_FILE)))
    img = held[:, 0, :, :, None].expand(-1, -1, -1, 3)
    lat = vae.encode(img)
    dec = vae.decode(lat)[..., 0]
    info = {"held_out_psnr_linear": round(psnr(rec, held), 2),
            "held_out_psnr_comfy_vae": round(psnr(dec, held[:, 0]), 2),
            "latent_shape": list(lat.shape[1:]),
            "model_space_latent_std": round(float(((lat - 0.0609) * 1.5305).std()), 3),
            "norm_latent_std": round(float(z.std()), 3),
            "seconds": round(time.time() - t0, 1)}
    print(json.dumps(info))


if __name__ == "__main__":
    main()
