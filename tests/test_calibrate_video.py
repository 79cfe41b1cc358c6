"""``calibrate`` on the tiny video models (``tests/tiny_families.py``, 5-D latents
``[N, C, T, h, w]``, ``--frames``): on the tiny Wan 2.1 the calibrated 4-step schedule beats
Wan's default (``simple``) on held-out prompts x seeds by more than 3 paired standard errors
(PSNR of the latents to the 16-step latents: the table's space on video, no VAE decode) and
its file deploys as a named scheduler; on LTX-Video the command, with a per-image policy
reading the video noise, runs end to end."""

from __future__ import annotations

import json

import pytest
import torch
from test_family_trainer import PROMPTS, family_args

from learned_schedules.policies.policy_file import load_policy
from learned_schedules.training.cli import main

FRAMES = 9
"""Video frames (3 latent frames at Wan's 4x, 2 at LTX-Video's 8x)."""
TRAIN_ONLY = {"held_out", "reward", "reference_steps", "steps", "batch", "rollouts",
              "iterations", "eval_every", "eval_contexts", "checkpoint_every", "sample_every",
              "out", "pool_size", "hidden", "run_name", "encoder_preset"}
"""``family_args``'s ``train`` flags that ``calibrate`` does not take."""


@pytest.fixture(scope="module")
def env(tiny_family_models, tmp_path_factory):
    cui, paths = tiny_family_models
    tmp = tmp_path_factory.mktemp("video_calibrate")
    (tmp / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return {"cui": cui, "paths": paths, "tmp": tmp, "models": cui.base / "models"}


def calibrate(env, key, monkeypatch, capsys, *flags: str) -> tuple[dict, dict]:
    """Run ``calibrate`` on the tiny model ``key`` (its model flags as the trainer's tests
    give them); the paths printed and ``calibration.json``."""
    train = family_args(env, key, monkeypatch, frames=FRAMES)[2:]
    model_flags = [x for flag, value in zip(train[::2], train[1::2], strict=True)
                   if flag[2:].replace("-", "_") not in TRAIN_ONLY for x in (flag, value)]
    out = env["tmp"] / key
    assert main(["calibrate", *model_flags, "--out", str(out), "--threads", "1",
                 "--teacher-cache", str(env["tmp"] / "teacher"), *flags]) == 0
    paths = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return paths, json.loads((out / "calibration.json").read_text())


def test_calibrated_schedule_beats_the_default_on_the_tiny_wan(env, monkeypatch, capsys):
    from learned_schedules.nodes.named_schedulers import discover

    paths, report = calibrate(env, "wan", monkeypatch, capsys, "--steps", "4",
                              "--teacher-steps", "16", "--budget", "120", "--iterations", "10",
                              "--contexts", "8", "--eval-contexts", "16")
    assert report["summary"]["psnr_space"] == "latents"
    rows = {r["name"]: r for r in report["tables"]["4"]}
    default = rows["simple"]  # Wan's default scheduler
    assert default["gain"] > 3 * default["gain_se"] > 0, rows
    loaded = load_policy(paths["policy"])
    assert loaded.metadata["model_family"] == "wan"
    flow = loaded.policy.schedule({}, steps=4)[0].double()
    assert flow[0] == 1 and flow[-1] == 0 and bool((flow[1:] < flow[:-1]).all())
    named = discover([("calibrated_wan.safetensors", paths["policy"])])
    assert torch.allclose(named["learned:calibrated_wan"], flow)


def test_calibrate_with_a_per_image_policy_runs_on_ltx_video(env, monkeypatch, capsys):
    paths, report = calibrate(env, "ltxv", monkeypatch, capsys, "--steps", "3",
                              "--teacher-steps", "8", "--budget", "40", "--iterations", "2",
                              "--contexts", "4", "--eval-contexts", "4", "--per-image",
                              "--per-image-iterations", "2", "--width", "64", "--height", "64")
    assert load_policy(paths["policy"]).metadata["model_family"] == "ltxv"
    per_image = load_policy(paths["per_image"][0])
    assert per_image.metadata["feature_dims"]["noise"][0] == 128  # LTX-Video's channels
    names = {r["name"] for r in report["tables"]["3"]}
    assert {"calibrated", "calibrated per-image"} <= names
    assert all(torch.isfinite(torch.tensor(r["psnr"])) for r in report["tables"]["3"])
