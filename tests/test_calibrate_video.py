"""``calibrate`` on the tiny video models (``tests/tiny_families.py``, 5-D latents
``[N, C, T, h, w]``, ``--frames``): on the tiny Wan 2.1 the calibrated 4-step schedule beats
Wan's default (``simple``) on held-out prompts x seeds by more than 3 paired standard errors
(PSNR of the latents to the 16-step latents: the table's space on video, no VAE decode) and
its file deploys as a named scheduler; through Wan 2.2 A14B's two experts (tiny) it does the
same with a step exactly on the boundary, and its samples are the trainer's two-expert
rollouts; image-to-video conditioning reaches it unchanged; on LTX-Video the command, with a
per-image policy reading the video noise, runs end to end."""

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


def model_flags(env, key, monkeypatch) -> list[str]:
    """The tiny model ``key``'s flags as the trainer's tests give them, less the trainer's
    own."""
    train = family_args(env, key, monkeypatch, frames=FRAMES)[2:]
    return [x for flag, value in zip(train[::2], train[1::2], strict=True)
            if flag[2:].replace("-", "_") not in TRAIN_ONLY for x in (flag, value)]


def calibrate(env, key, monkeypatch, capsys, *flags: str, out: str = "") -> tuple[dict, dict]:
    """Run ``calibrate`` on the tiny model ``key`` into the folder ``out`` (default
    ``key``); the paths printed and ``calibration.json``."""
    out = env["tmp"] / (out or key)
    assert main(["calibrate", *model_flags(env, key, monkeypatch), "--out", str(out),
                 "--threads", "1", "--teacher-cache", str(env["tmp"] / "teacher"),
                 *flags]) == 0
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


def test_calibrate_through_two_experts_puts_a_step_on_the_boundary(env, monkeypatch, capsys):
    """Wan 2.2 A14B's layout (tiny): the high-noise expert above sigma 0.875, the low-noise
    one below; the calibrated schedule has a step exactly on the boundary (what the split node
    keeps) and beats the default, both run through the two experts."""
    from tiny_families import TINY_FAMILIES, load_tiny

    from learned_schedules.comfy_bridge.sigmas import flow_to_model, sampling_of

    paths, report = calibrate(env, "wan", monkeypatch, capsys, "--steps", "4",
                              "--teacher-steps", "16", "--budget", "120", "--iterations", "10",
                              "--contexts", "8", "--eval-contexts", "16",
                              "--low-noise-model", str(env["paths"]["wan-low"]),
                              "--name", "calibrated_wan_experts", out="wan_experts")
    assert report["summary"]["expert_boundary"] == 0.875
    rows = {r["name"]: r for r in report["tables"]["4"]}
    assert rows["simple"]["gain"] > 3 * rows["simple"]["gain_se"] > 0, rows
    flow = load_policy(paths["policy"]).policy.schedule({}, steps=4)[0].double()
    wan = load_tiny(TINY_FAMILIES["wan"], env["paths"]["wan"])
    sigmas = flow_to_model(sampling_of(wan), flow)
    assert float((sigmas[1:-1] - 0.875).abs().min()) < 1e-5, sigmas


def test_the_two_expert_problem_samples_what_the_trainers_two_expert_rollouts_do(
        env, monkeypatch):
    """The calibration's denoiser of two experts (the low-noise expert opened inside the
    high-noise one's sampler call) gives the trainer's two-expert rollouts, the two-sampler
    graph (``tests/test_video.py``), for a schedule and the default, up to ComfyUI's latent
    round trip between the two samplers (both in the LATENT space a sampler node outputs)."""
    from learned_schedules.comfy_bridge import calibration as cc
    from learned_schedules.comfy_bridge.sigmas import default_flow
    from learned_schedules.training.calibrate.comfy_run import batch_inputs, comfy_backend
    from learned_schedules.training.cli import parse_calibrate_args
    from learned_schedules.training.comfy.contexts import PromptContexts

    b = comfy_backend(parse_calibrate_args(
        [*model_flags(env, "wan", monkeypatch), "--low-noise-model", str(env["paths"]["wan-low"])]))
    ctx = PromptContexts(torch.tensor([0, 0]), torch.tensor([5, 6]))  # one token count
    pos, neg, noise = batch_inputs(b, ctx)
    default = default_flow(b.model, 4).double()
    bent = torch.tensor([1.0, 0.9, 0.5, 0.2, 0.0], dtype=torch.float64)
    ours = cc.sample_few_step(b.model, pos, neg, b.cfg, noise, {"d": default, "b": bent},
                              low_model=b.low_model, boundary=b.expert_boundary)
    for name, flow in (("d", default), ("b", bent)):
        graph = b.rollouts.sample_flow(ctx, flow.float().expand(2, -1))
        mine = ours[name]
        atol = 2e-5 * max(1.0, float(graph.abs().max()))
        torch.testing.assert_close(mine, graph, atol=atol, rtol=1e-4)
    one = cc.sample_few_step(b.model, pos, neg, b.cfg, noise, {"d": default})["d"]
    assert not torch.allclose(one, ours["d"], atol=1e-3)  # the low-noise expert did act


def test_image_to_video_conditioning_reaches_the_calibration_unchanged(env, monkeypatch,
                                                                       capsys):
    """Wan image-to-video: the start image's latent and mask in the cached conditioning reach
    the calibration's denoiser unchanged (its samples equal the trainer's rollouts, which
    equal ComfyUI's ``SamplerCustom``: ``tests/test_video.py``; without the image they
    differ), and ``calibrate`` runs on it end to end."""
    from test_video import _prefill_i2v

    from learned_schedules.comfy_bridge import calibration as cc
    from learned_schedules.comfy_bridge.sigmas import default_flow
    from learned_schedules.training.calibrate.comfy_run import batch_inputs, comfy_backend
    from learned_schedules.training.cli import parse_calibrate_args
    from learned_schedules.training.comfy.contexts import PromptContexts

    start = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    mask = torch.ones(1, 1, 3, 8, 8)
    mask[:, :, 0] = 0.0  # the first latent frame is the given image
    cache = env["tmp"] / "cache_i2v"
    te = _prefill_i2v({"models_dir": env["models"]}, cache, start, mask)
    over = ["--cache-dir", str(cache), "--text-encoders", te]
    b = comfy_backend(parse_calibrate_args([*model_flags(env, "wan-i2v", monkeypatch),
                                            *over]))
    ctx = PromptContexts(torch.tensor([0, 0]), torch.tensor([5, 6]))
    pos, neg, noise = batch_inputs(b, ctx)
    image = pos[0][1]["concat_latent_image"]  # one row per context
    assert torch.equal(image, start.expand_as(image))
    flow = default_flow(b.model, 3).double()
    ours = cc.sample_few_step(b.model, pos, neg, b.cfg, noise, {"d": flow})["d"]
    graph = b.rollouts.sample_flow(ctx, flow.float().expand(2, -1))
    torch.testing.assert_close(ours, graph,
                               atol=2e-5 * max(1.0, float(graph.abs().max())), rtol=1e-4)
    plain = [[pos[0][0], {k: v for k, v in pos[0][1].items() if not k.startswith("concat")}]]
    assert not torch.allclose(cc.sample_few_step(b.model, plain, neg, b.cfg, noise,
                                                 {"d": flow})["d"], ours, atol=1e-3)
    paths, report = calibrate(env, "wan-i2v", monkeypatch, capsys, *over, "--steps", "3",
                              "--teacher-steps", "8", "--budget", "40", "--iterations", "2",
                              "--contexts", "4", "--eval-contexts", "4")
    assert load_policy(paths["policy"]).metadata["model_family"] == "wan"
    assert all(torch.isfinite(torch.tensor(r["psnr"])) for r in report["tables"]["3"])
