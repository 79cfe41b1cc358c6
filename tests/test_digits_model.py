"""The shipped digits model (models/digits/) through ComfyUI's stock loaders and nodes: it is
detected as SD3, its VAE and text encoder load, and 30-step samples are recognisable digits;
plus the digits measures (training/rewards/digits.py) on those samples."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from comfy_env import import_comfy
from learned_schedules.training.rewards.digits import (
    DigitMeasures,
    DigitReward,
    DigitSetMeasures,
    RealismReward,
    class_coverage,
    frechet_distance,
    load_digits_split,
    prompt_digit,
    to_canvas,
)

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "digits"
PER_DIGIT = 6


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    import_comfy(tmp_path_factory.mktemp("comfy_base"))
    sys.path.insert(0, str(SCRIPTS))
    import digits_lib

    c = digits_lib.setup_comfy()
    model, clip, vae = digits_lib.stock_models(c)
    images = torch.cat([digits_lib.stock_sample(c, model, clip, vae, d, PER_DIGIT, seed=100 + d)
                        for d in range(10)])
    labels = torch.arange(10).repeat_interleave(PER_DIGIT)
    return {"lib": digits_lib, "c": c, "model": model, "clip": clip, "vae": vae,
            "images": images, "labels": labels}


def test_stock_loaders_detect_the_model(digits):
    model, clip, vae, lib = digits["model"], digits["clip"], digits["vae"], digits["lib"]
    assert type(model.model.model_config).__name__ == "SD3"
    assert vae.latent_channels == 16 and vae.downscale_ratio == 8
    ctx = [digits["c"].nodes.CLIPTextEncode().encode(clip, p)[0][0][0] for p in lib.prompts()]
    assert ctx[0].shape == (1, 77, 4096)
    dist = torch.stack([torch.stack([(a - b).norm() for b in ctx]) for a in ctx])
    off = dist[~torch.eye(10, dtype=torch.bool)]
    assert off.min() > 0.05 * ctx[0].norm()  # ten clearly different conditionings


def test_thirty_step_samples_are_recognisable_digits(digits):
    m = DigitMeasures()
    real, real_y = m.held_out_features()
    with torch.no_grad():
        real_acc = float((m.model.fc2(real).argmax(-1) == real_y).float().mean())
    acc = m.accuracy(digits["images"], digits["labels"])
    assert real_acc > 0.95
    assert acc >= 0.9 * real_acc, (acc, real_acc)


def test_digit_and_realism_rewards_on_samples(digits):
    images, labels, lib = digits["images"], digits["labels"], digits["lib"]
    prompts = [lib.PROMPT.format(int(d)) for d in labels]
    wrong = [lib.PROMPT.format(int(d + 1) % 10) for d in labels]
    assert [prompt_digit(p) for p in prompts] == labels.tolist()
    digit = DigitReward()
    assert digit(images, prompts).mean() > digit(images, wrong).mean() + 2.0
    # collapsing every sample of a digit onto the digit's mean image does not pay
    means = images.reshape(10, PER_DIGIT, *images.shape[1:]).mean(1)
    collapsed = means.repeat_interleave(PER_DIGIT, 0)
    realism = RealismReward()
    assert realism(images, prompts).mean() > realism(collapsed, prompts).mean()
    m = DigitMeasures()
    real, _ = m.held_out_features()
    noise = torch.rand_like(images)
    assert frechet_distance(m.features(images), real) < frechet_distance(m.features(noise), real)


def test_set_measures_match_the_plain_measures_and_pair_their_errors():
    """DigitSetMeasures: values equal frechet_distance / class_coverage / accuracy on the whole
    set; replicates of the same set pair to a zero SE; a degraded set is measured worse, by more
    than 3 paired SEs."""
    x, y, _, _ = load_digits_split()  # training digits: not the Fréchet reference itself
    x, y = x[:120], y[:120]
    clean = to_canvas(x)
    g = torch.Generator().manual_seed(0)
    noisy = (clean + 0.6 * torch.rand(clean.shape, generator=g)).clamp(0, 1)
    prompts = [f"a handwritten digit {int(d)}" for d in y]
    sm = DigitSetMeasures(resamples=50)
    out = sm({"clean": clean, "same": clean.clone(), "noisy": noisy}, prompts)
    m = sm.measures
    real, real_y = m.held_out_features()
    feats = m.features(clean)
    assert abs(out["clean"]["fd"][0] - frechet_distance(feats, real)) < 1e-6
    cov = float(class_coverage(real, real_y, feats, y).nanmean())
    assert abs(out["clean"]["coverage"][0] - cov) < 1e-6
    assert abs(out["clean"]["accuracy"][0] - m.accuracy(clean, y)) < 1e-6
    assert out["clean"]["fd"][1].shape == (50,) and float(out["clean"]["fd"][1].std()) > 0
    assert torch.equal(out["clean"]["fd"][1], out["same"]["fd"][1])  # the same resamples
    diff = out["noisy"]["fd"][1] - out["clean"]["fd"][1]
    assert out["noisy"]["fd"][0] - out["clean"]["fd"][0] > 3 * float(diff.std())
