"""Train the glyph classifier of the shapes rewards (``glyph`` and the glyph check of
``shapes``): a small CNN reading which of the 16 glyphs (0-9, A E K R S X) a 32x32 image shows.

    python scripts/shapes/train_glyph_classifier.py
    # -> models/shapes/shapes_glyph_classifier.safetensors

Training images: the generator's glyphs (white on black, and on every dark two-colour gradient
direction the templates allow, so all 16 glyphs on both backgrounds), seeds 0..., seen the way
generated images are: half of them through the shapes VAE (encode, Gaussian noise of random
size on the latent, decode), plus random blur and pixel noise. Held out: other seeds
(5,000,000...), clean and through the VAE with latent noise 0.3. Seeded.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from shapes_lib import VAE_SMALL_FILE, data, load_small_vae, progress

from learned_schedules.training.rewards.shapes import GlyphClassifier, GlyphNet


def glyph_prompts() -> list[str]:
    """Every glyph alone and on gradients of a few colour pairs."""
    pairs = [("blue", "green"), ("red", "yellow"), ("magenta", "cyan"), ("green", "blue"),
             ("yellow", "red"), ("cyan", "magenta")]
    out = []
    for g in data.GLYPHS:
        word = "digit" if g.isdigit() else "letter"
        out.append(f"the {word} {g}")
        out += [f"the {word} {g} on a {a} to {b} gradient" for a, b in pairs]
    return out


def glyph_images(per_prompt: int, seed0: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for p in glyph_prompts():
        x, _ = data.sample(p, range(seed0, seed0 + per_prompt))
        xs.append(torch.from_numpy(x).permute(0, 3, 1, 2))
        ys.append(torch.full((per_prompt,), data.GLYPHS.index(data.spec_of(p).glyph)))
    return torch.cat(xs), torch.cat(ys)


def blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur (3x3 kernel, ``sigma`` per image; 0 leaves it unchanged)."""
    r = torch.tensor([-1.0, 0.0, 1.0])
    w = torch.exp(-r[None] ** 2 / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    w = w / w.sum(1, keepdim=True)
    k = (w[:, :, None] * w[:, None, :])  # [N, 3, 3]
    n, c = x.shape[:2]
    out = F.conv2d(F.pad(x.reshape(1, n * c, 32, 32), (1, 1, 1, 1), mode="replicate"),
                   k.repeat_interleave(c, 0)[:, None], groups=n * c)
    return out.reshape(x.shape)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--per-prompt", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    x, y = glyph_images(args.per_prompt, 0)
    hx, hy = glyph_images(6, 5_000_000)
    vae = load_small_vae(VAE_SMALL_FILE) if VAE_SMALL_FILE.is_file() else None
    net = GlyphNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    for _ in progress(range(args.steps), desc="glyphs"):
        idx = torch.randint(0, len(y), (args.batch,), generator=g)
        xb = x[idx]
        if vae is not None:
            half = args.batch // 2
            with torch.no_grad():
                z = vae.encode(xb[:half])
                z = z + torch.rand(half, 1, 1, 1, generator=g) * 0.4 * torch.randn(
                    z.shape, generator=g)
                xb = torch.cat([vae.decode(z).clamp(0, 1), xb[half:]])
        xb = blur(xb, torch.rand(args.batch, generator=g) * 0.8)
        xb = (xb + 0.04 * torch.rand(args.batch, 1, 1, 1, generator=g)
              * torch.randn(xb.shape, generator=g)).clamp(0, 1)
        loss = F.cross_entropy(net(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    clf = GlyphClassifier(net)
    clf.save()
    to_image = lambda t: t.permute(0, 2, 3, 1)  # noqa: E731
    info = {"held_out_accuracy": float(np.mean([a == data.GLYPHS[int(b)] for a, b in zip(
        clf.read(to_image(hx)), hy, strict=True)]))}
    if vae is not None:
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            z = vae.encode(hx)
            rt = vae.decode(z + 0.3 * torch.randn(z.shape, generator=gen)).clamp(0, 1)
        info["held_out_accuracy_vae_noise0.3"] = float(np.mean([a == data.GLYPHS[int(b)] for a, b
                                                               in zip(clf.read(to_image(rt)), hy,
                                                                      strict=True)]))
    info["train_images"] = len(y)
    info["held_out_images"] = len(hy)
    info["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
