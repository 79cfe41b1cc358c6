"""Reward hacking, measured on the digits model (ComfyUI back-end, 3 steps, 100 held-out seeds:
10 per digit).

AdaGen trained on the ``digit`` reward alone (the classifier's log-probability of the prompted
digit) raises that reward while the samples collapse: the Fréchet distance of classifier
features to the 500 held-out real digits rises and the per-class coverage of them falls, both
by more than 3 paired bootstrap standard errors against the model's default schedule. Trained
on the adversarial reward instead (a discriminator against real training digits of the
prompted class, no digit reward), with the same budget and seed, it is better than the
digit-only run on both measures by more than 2 paired standard errors.

Small budget (15 iterations of batch 8, one training seed; ~80 s on 1 thread) so the module
fits a CI suite. At this budget the digit-only collapse held on 3 of 3 training seeds (FD
+6.5 to +9.9, coverage -0.09 to -0.12, each over 8 paired SE), and the adversarial run beat
the digit-only one on both measures on 3 of 3; but "the adversarial run is at least as good as
the default schedule" held on only 1 of 3 seeds (the discriminator is still weak after 15 to 30
iterations), so it is not asserted here: ``bench/adagen_digits.py`` shows it at 60 iterations
(docs/adagen.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from comfy_env import digits_clip
from learned_schedules.training.rewards.digits import (
    DigitMeasures,
    class_coverage,
    frechet_distance,
)
from learned_schedules.training.rl.backend import make_backend
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.engine import train
from learned_schedules.training.rl.stepwise import policy_rollout

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "models" / "digits"
STEPS, CONTEXTS, BOOTSTRAP = 3, 100, 100


def _measures(real, real_y, feats, labels) -> tuple[float, float]:
    return (frechet_distance(feats, real),
            float(class_coverage(real, real_y, feats, labels).nanmean()))


def _compare(measured: dict, name: str, against: str = "default") -> dict[str, float]:
    """FD and coverage of ``name`` and of ``against`` on the same held-out contexts, their
    differences and the paired bootstrap standard errors of those differences."""
    real, real_y, labels = measured["real"], measured["real_y"], measured["labels"]
    got, ref = measured[name], measured[against]
    fd, cov = _measures(real, real_y, got, labels)
    fd0, cov0 = _measures(real, real_y, ref, labels)
    g = torch.Generator().manual_seed(0)
    diffs = []
    for _ in range(BOOTSTRAP):
        i = torch.randint(0, len(labels), (len(labels),), generator=g)
        a, b = _measures(real, real_y, got[i], labels[i]), _measures(real, real_y, ref[i],
                                                                     labels[i])
        diffs.append((a[0] - b[0], a[1] - b[1]))
    se = torch.tensor(diffs).std(0)
    return {"fd": fd, "fd_ref": fd0, "fd_diff": fd - fd0, "fd_se": float(se[0]),
            "cov": cov, "cov_ref": cov0, "cov_diff": cov - cov0, "cov_se": float(se[1])}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("adagen_digits")
    digits_clip()
    base = json.loads((REPO / "training" / "configs" / "digits_reference.json").read_text())
    for key in ("diffusion_model", "text_encoders", "vae", "prompts"):
        base[key] = str(REPO / base[key])
    base.pop("baseline", None)
    base.update(steps=STEPS, iterations=15, batch=8, rollouts=2, lr=3e-3, hidden=64, seed=0,
                algo="adagen", reward="digit", out=str(tmp), eval_every=0,
                checkpoint_every=0, sample_every=0, progress=False, threads=1,
                comfyui_base=str(tmp / "base"), cache_dir=str(tmp / "cond"))
    backend = make_backend(TrainConfig.from_dict(base))  # one loaded model for every run
    ctx = backend.held_out_contexts(CONTEXTS, 10_000)
    m = DigitMeasures()
    real, real_y = m.held_out_features()
    out = {"real": real, "real_y": real_y, "labels": ctx.prompt_ids % 10, "digit": {}}

    def record(name: str, images: torch.Tensor) -> None:
        out[name] = m.features(images)
        labels = out["labels"]
        out["digit"][name] = float(torch.log_softmax(m.logits(images), -1)[
            torch.arange(len(labels)), labels].mean())

    record("default", backend.images(ctx, backend.default_sigmas(STEPS)))
    for name, adagen in (("digit_only", {"adversarial": 0.0, "task": 1.0}),
                         ("adversarial", {"adversarial": 1.0, "task": 0.0,
                                          "reference": "digits"})):
        policy = train(TrainConfig.from_dict({**base, "run_name": name, "adagen": adagen}),
                       backend=backend).policy
        record(name, backend.decode(policy_rollout(policy, backend, ctx).final))
    return out


def test_prompts_are_the_ten_digits_in_turn(measured):
    from learned_schedules.training.rewards.digits import prompt_digit

    assert measured["labels"].tolist() == [i % 10 for i in range(CONTEXTS)]
    assert prompt_digit("a handwritten digit 7") == 7


def test_digit_reward_alone_is_hacked(measured):
    c, digit = _compare(measured, "digit_only"), measured["digit"]
    assert digit["digit_only"] > digit["default"], digit  # the reward it was trained on rises
    assert c["fd_diff"] > 3 * c["fd_se"], c  # ... while the samples move away from real digits
    assert c["cov_diff"] < -3 * c["cov_se"], c  # ... and cover fewer of them


def test_adversarial_reward_collapses_less(measured):
    c, digit = _compare(measured, "adversarial", against="digit_only"), measured["digit"]
    assert c["fd_diff"] < -2 * c["fd_se"], c  # closer to the real digits than digit-only
    assert c["cov_diff"] > 2 * c["cov_se"], c  # and covers more of them
    assert digit["adversarial"] < digit["digit_only"], digit  # it did not chase the reward
