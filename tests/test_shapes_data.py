"""The shapes data set (training/datasets/shapes.py) and its exact rewards
(training/rewards/shapes.py): images are a pure function of (prompt, seed), the ground truth
matches the pixels (every check passes on the generator's own images), perturbed images fail
the check they break, and the glyph classifier reads held-out glyphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learned_schedules.training.datasets import shapes as data
from learned_schedules.training.rewards import load_reward
from learned_schedules.training.rewards.shapes import (
    DEFAULT_CLASSIFIER,
    SCORES,
    GlyphClassifier,
    ShapesChecks,
    ShapesScores,
    ShapesSetMeasures,
)

needs_classifier = pytest.mark.skipif(not DEFAULT_CLASSIFIER.is_file(),
                                      reason="the shipped glyph classifier is missing")


def test_prompts_parse_back_and_images_are_seeded():
    assert len(data.PROMPTS) == len(set(data.PROMPTS)) == 56
    for spec in data.TRAINING_SPECS:
        assert data.spec_of(spec.prompt) == spec
        assert data.spec_of(spec.prompt.upper()) == spec  # case and spacing do not matter
    a, ta = data.sample(data.PROMPTS[20], [3, 4])
    b, tb = data.sample(data.PROMPTS[20], [3, 4])
    assert a.shape == (2, 32, 32, 3) and a.dtype == np.float32
    assert np.array_equal(a, b) and ta == tb
    assert not np.array_equal(a[0], a[1])
    with pytest.raises(ValueError, match="not one the shapes data set can draw"):
        data.spec_of("a photo of a cat")
    with pytest.raises(ValueError, match="glyph"):
        data.spec_of("the letter Q")


def test_ground_truth_matches_the_pixels():
    """Every check of every training prompt passes on its generator images (5 seeds each),
    and the recorded truth agrees with what the pixels show."""
    for spec in data.TRAINING_SPECS:
        imgs, truths = data.sample(spec.prompt, range(100, 105))
        for img, truth in zip(imgs, truths, strict=True):
            res = data.checks(img, spec, spec.glyph or None)
            assert res and all(res.values()), (spec.prompt, res)
            for obj in truth["objects"]:
                if "shape" in obj:  # the pixel at a shape's centre has its colour
                    x, y = (int(v) for v in obj["centre"])
                    assert data.colour_name(img[y, x]) == obj["colour"], spec.prompt


def _perturbed(spec: data.Spec, img: np.ndarray) -> tuple[np.ndarray, str] | None:
    """An image that breaks one check of ``spec``, and that check's name."""
    if spec.kind == "relation":
        flipped = img[:, ::-1] if spec.relation == "left of" else img[::-1]
        return flipped.copy(), "position"
    if spec.kind in ("shape", "count", "glow"):
        return img[..., [2, 0, 1]].copy(), "colour"  # rotate the channels: another colour
    if spec.kind in ("stripes", "checker"):
        if spec.kind == "checker":
            return np.repeat(img[:, :1], 32, 1), "texture"  # stripes, not a checkerboard
        return img.transpose(1, 0, 2).copy(), "texture"
    if spec.kind == "gradient":
        return (img[:, ::-1] if spec.direction == "horizontal" else img[::-1]).copy(), "colour"
    return None


def test_perturbed_images_fail_the_check_they_break():
    failed = 0
    for spec in data.TRAINING_SPECS:
        imgs, _ = data.sample(spec.prompt, range(200, 203))
        for img in imgs:
            out = _perturbed(spec, img)
            if out is None:
                continue
            bad, check = out
            assert not data.checks(bad, spec)[check], (spec.prompt, check)
            failed += 1
    assert failed > 80
    # a count one short: paint one of three objects black
    spec = data.spec_of("three blue squares")
    img, truth = data.sample(spec, [7])
    img = img[0].copy()
    x, y = (int(v) for v in truth[0]["objects"][0]["centre"])
    img[max(0, y - 7):y + 8, max(0, x - 7):x + 8] = 0
    assert not data.checks(img, spec)["count"]


@needs_classifier
def test_exact_rewards_and_glyph_classifier():
    """``shapes`` scores the generator's images 1 and perturbed ones lower; ``glyph`` prefers
    the prompted glyph; the classifier reads held-out glyphs (seeds it was not trained on)
    with >= 98% accuracy."""
    prompts = list(data.PROMPTS)
    imgs = np.concatenate([data.sample(p, [300])[0] for p in prompts])
    x = torch.from_numpy(imgs)
    shapes = load_reward("shapes")
    score = shapes(x, prompts)
    assert score.shape == (56,) and torch.all(score == 1.0), score
    flipped = torch.flip(x, dims=[2, 1])  # mirror both ways: positions, gradients, glyphs break
    assert shapes(flipped, prompts).mean() < score.mean() - 0.1
    glyph = load_reward("glyph")
    gp = [p for p in prompts if data.spec_of(p).glyph]
    gi = torch.stack([x[prompts.index(p)] for p in gp])
    wrong = [gp[(i + 1) % len(gp)] for i in range(len(gp))]
    assert glyph(gi, gp).mean() > glyph(gi, wrong).mean() + 3.0
    assert torch.all(glyph(x[:2], prompts[:2]) == 0)  # no glyph asked: 0
    clf = GlyphClassifier.load()
    held = [(g, data.sample(f"the {'digit' if g.isdigit() else 'letter'} {g}",
                            range(9_000_000, 9_000_010))[0]) for g in data.GLYPHS]
    reads = [r for g, im in held for r in clf.read(torch.from_numpy(im))]
    truth = [g for g, im in held for _ in im]
    acc = float(np.mean([a == b for a, b in zip(reads, truth, strict=True)]))
    assert acc >= 0.98, acc
    per = ShapesChecks()(x, prompts)
    assert set(per) >= {"colour", "shape", "position", "count", "texture", "glyph"}
    assert np.nanmin(np.stack(list(per.values()))) == 1.0


def test_graded_scores_are_perfect_on_the_generator_and_worse_on_blurred_images():
    """The graded exact scores: the generator's images pass every check, have colour error
    ~0, glyph log-probability ~0 and texture strength ~1; a 3x3 box blur (what a too-coarse
    schedule does to edges) raises the colour error and weakens textures; eval's ``shapes``
    set measures give the means with paired bootstrap replicates."""
    prompts = list(data.PROMPTS)
    x = torch.from_numpy(np.concatenate([data.sample(p, [301])[0] for p in prompts]))
    blur = torch.nn.functional.avg_pool2d(x.permute(0, 3, 1, 2), 3, 1, 1,
                                          count_include_pad=False).permute(0, 2, 3, 1)
    scores = ShapesScores()
    own, blurred = scores(x, prompts), scores(blur, prompts)
    assert set(own) == set(SCORES)
    assert np.all(own["checks"] == 1.0)
    assert np.nanmax(own["colour_error"]) < 0.02 and np.nanmin(own["glyph_logp"]) > -0.05
    tex = own["texture_strength"][np.isfinite(own["texture_strength"])]
    assert len(tex) == 12 and 0.7 < tex.min() and tex.max() < 1.1
    assert np.nanmean(blurred["colour_error"]) > np.nanmean(own["colour_error"]) + 0.02
    assert np.nanmean(blurred["texture_strength"]) < np.nanmean(tex) - 0.1
    assert np.isnan(own["glyph_logp"][0]) and np.isnan(own["texture_strength"][0])
    sets = ShapesSetMeasures(resamples=20)({"own": x, "blur": blur}, prompts)
    value, reps = sets["blur"]["colour_error"]
    assert value == pytest.approx(float(np.nanmean(blurred["colour_error"])))
    assert reps.shape == (20,) and float((reps - sets["own"]["colour_error"][1]).min()) > 0
