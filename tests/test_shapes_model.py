"""The shipped shapes model (models/shapes/) through ComfyUI's stock loaders and nodes: it is
detected as SD3, its VAE (a stock TAESD file) reproduces the generator's images, the text
encoder (the digits model's CLIP-L) gives every prompt its own conditioning, and 30-step samples
pass the exact prompt checks (training/rewards/shapes.py) far more often than chance."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from comfy_env import import_comfy
from learned_schedules.training.datasets import shapes as data
from learned_schedules.training.rewards.shapes import ShapesChecks

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "shapes"
# one or two prompts of every group and kind
PROMPTS = ["a smooth gradient from red to blue, left to right", "a soft green glow",
           "a red circle", "a red circle left of a blue square", "three blue squares",
           "the digit 7", "the letter K", "vertical stripes 5 pixels wide",
           "a checkerboard with 8-pixel squares", "a red circle on vertical stripes",
           "the letter A on a red to yellow gradient", "a blue square above a red triangle"]
SEEDS = 2


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    import_comfy(tmp_path_factory.mktemp("comfy_base"))
    sys.path.insert(0, str(SCRIPTS))
    import shapes_lib

    c = shapes_lib.setup_comfy()
    model, clip, vae = shapes_lib.stock_models(c)
    images = torch.cat([shapes_lib.stock_sample(c, model, clip, vae, p, SEEDS, seed=300 + i)
                        for i, p in enumerate(PROMPTS)])
    return {"lib": shapes_lib, "c": c, "model": model, "clip": clip, "vae": vae,
            "images": images}


def test_stock_loaders_detect_the_model(shapes):
    model, clip, vae = shapes["model"], shapes["clip"], shapes["vae"]
    assert type(model.model.model_config).__name__ == "SD3"
    assert vae.latent_channels == 16 and vae.downscale_ratio == 8
    ctx = [shapes["c"].nodes.CLIPTextEncode().encode(clip, p)[0][0][0] for p in PROMPTS]
    dist = torch.stack([torch.stack([(a - b).norm() for b in ctx]) for a in ctx])
    assert dist[~torch.eye(len(ctx), dtype=torch.bool)].min() > 0.02 * ctx[0].norm()


def test_vae_reproduces_the_generator(shapes):
    """Stock VAE encode -> decode of held-out generator images: >= 20 dB on average."""
    imgs = torch.from_numpy(np.concatenate([data.sample(p, [77])[0] for p in PROMPTS]))
    vae = shapes["vae"]
    rec = vae.decode(vae.encode(imgs)).reshape(imgs.shape)
    psnr = -10 * torch.log10((rec - imgs).pow(2).flatten(1).mean(1))
    assert psnr.mean() > 20, psnr


def test_thirty_step_samples_follow_their_prompts(shapes):
    """The exact checks pass on most 30-step samples; the same images scored against a shifted
    prompt list (each image judged by another prompt's checks) pass far less."""
    images = shapes["images"]
    labels = [p for p in PROMPTS for _ in range(SEEDS)]
    checks = ShapesChecks()
    right = float(checks.score(images, labels).mean())
    shifted = labels[SEEDS:] + labels[:SEEDS]
    wrong = float(checks.score(images, shifted).mean())
    assert right >= 0.7, right
    assert right > wrong + 0.3, (right, wrong)
