"""ART inside a real ComfyUI runtime, on the tiny SD3 and the tiny Flux: the error signal Q
through the model's own prediction (``apply_model`` in our own Euler loop) against float64
finite differences, and an ART policy file through the Learned Schedule node's code path."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from comfy_env import (
    TINY_FLUX,
    build_network_model,
    build_tiny_flux,
    build_tiny_flux_text_encoders,
    build_tiny_sd3,
    import_comfy,
    write_tiny_sd3_set,
)
from learned_schedules.policies.art import ARTGlobalClock, resample_loglinear
from learned_schedules.policies.policy_file import save_policy
from learned_schedules.policies.schedule import validate_schedule
from learned_schedules.training.rl.flow_error import (
    error_size,
    finite_difference_error,
    finite_difference_q,
    velocity_and_error,
)

LATENT = (2, 16, 8, 8)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cui = import_comfy(tmp_path_factory.mktemp("art"))
    models = cui.base / "models"
    write_tiny_sd3_set(models, "sd3_art.safetensors", "vae_art.safetensors")
    build_tiny_sd3(models / "diffusion_models" / "sd3_art_smooth.safetensors", std=0.02)
    from learned_schedules.nodes import extension, schedule_nodes

    extension.register_policy_folder()
    clip = cui.nodes.CLIPLoader().load_clip("clip_l.safetensors", type="sd3")[0]
    encode = cui.nodes.CLIPTextEncode().encode
    return SimpleNamespace(cui=cui, models=models, nodes=schedule_nodes, clip=clip,
                           positive=encode(clip, "a red cat")[0], negative=encode(clip, "")[0])


def _rows(conditioning: list, n: int, dtype: torch.dtype) -> list:
    tokens, extra = conditioning[0]
    return [[tokens.expand(n, -1, -1).to(dtype),
             {k: (v.expand(n, -1).to(dtype) if torch.is_tensor(v) else v)
              for k, v in extra.items()}]]


def _check_against_finite_differences(model, positive, negative, cfg, dtype, rtol):
    """Q by forward-mode AD at three flow times vs Richardson-extrapolated central
    differences (h = 3e-4 and 1.5e-4)."""
    from learned_schedules.training.comfy.flow_field import run_flow_field

    torch.manual_seed(0)
    noise = torch.randn(LATENT, dtype=dtype)
    worst = []

    def fn(field):
        for sigma in (0.8, 0.3, 0.02):
            s = torch.full((LATENT[0],), sigma, dtype=dtype)
            x = field.start * sigma
            _, q = velocity_and_error(field, x, s, "forward_ad")
            fd = (4 * finite_difference_error(field, x, s, 1.5e-4)
                  - finite_difference_error(field, x, s, 3e-4)) / 3
            worst.append(float((q - fd).abs().max() / q.abs().max()))
            assert bool((error_size(q) > 0).all())
        return {}

    run_flow_field(model, _rows(positive, LATENT[0], dtype),
                   None if negative is None else _rows(negative, LATENT[0], dtype), cfg,
                   noise, fn)
    assert max(worst) < rtol, worst


def test_q_matches_float64_finite_differences_on_a_tiny_sd3(env):
    """float64 weights; ComfyUI's timestep embedding stays float32, which limits any
    sigma-derivative (ours and the finite differences alike) to about 1e-3 relative."""
    import comfy.sd

    model = comfy.sd.load_diffusion_model(
        str(env.models / "diffusion_models" / "sd3_art_smooth.safetensors"),
        model_options={"dtype": torch.float64})
    _check_against_finite_differences(model, env.positive, env.negative, 2.0, torch.float64,
                                      rtol=5e-3)


def test_q_matches_finite_differences_on_a_tiny_flux(env, tmp_path):
    clip = build_tiny_flux_text_encoders(tmp_path)
    model = build_tiny_flux()
    model.model.diffusion_model.to(torch.float64)
    positive = env.cui.nodes.CLIPTextEncode().encode(clip, "a red cat")[0]
    positive = [[positive[0][0], {**positive[0][1], "guidance": 3.5}]]
    _check_against_finite_differences(model, positive, None, 1.0, torch.float64, rtol=5e-3)


FD_TOLERANCE = {torch.float32: (0.02, 0.02), torch.bfloat16: (None, 0.2)}
"""docs/art.md "Cheap error signal": the finite difference's relative error against the
float64 JVP on the time-smooth tiny Flux at sigma >= 0.1, RMS over items, per compute dtype:
(of the vector Q, of ART's scalar |Q|). bf16 meets it for |Q| only: the vector is ~50% off
element by element (rounding noise), its RMS within 4-16% here."""


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_difference_q_agrees_with_forward_mode_on_a_tiny_flux(env, dtype):
    """The cheap error signal (one extra forward in the model's own dtype, default step of
    that dtype: 1e-3 float32, 3e-2 bf16) against forward-mode AD in float64 of the same
    (bf16-rounded) weights, at four flow times along an Euler trajectory (forward
    differences inside the range, backward at sigma 1). The tiny Flux reads only the slow
    timestep features (``time_frequencies``): random weights otherwise make the velocity
    oscillate in sigma with a period of 6e-3, which no difference step of a bf16 model can
    resolve (docs/art.md)."""
    from learned_schedules.training.comfy.flow_field import run_flow_field

    n, latent = 3, (16, 8, 8)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((n, *latent), generator=g)
    tokens, pooled = torch.randn(1, 32, 64, generator=g), torch.randn(1, 64, generator=g)

    def cond(dt):
        return [[tokens.expand(n, -1, -1).to(dt),
                 {"pooled_output": pooled.expand(n, -1).to(dt), "guidance": 3.5}]]

    wanted = {0: 1.0, 30: 0.7, 60: 0.4, 90: 0.1}

    def reference(field):
        x, out = field.start, {}
        for k in range(91):
            s = torch.full((n,), 1.0 - k / 100, dtype=torch.float64)
            v, q = velocity_and_error(field, x, s, "forward_ad")
            if k in wanted:
                out[f"x{k}"], out[f"q{k}"] = x.clone(), q.clone()
            x = x - v / 100
        return out

    ref = run_flow_field(build_network_model("Flux", TINY_FLUX, torch.float64,
                                             time_frequencies=30.0),
                         cond(torch.float64), None, 1.0, noise.double(), reference)
    errors = []

    def check(field):
        for k, sigma in wanted.items():
            x = ref[f"x{k}"].float()
            s = torch.full((n,), sigma)
            v = field(x, s)
            calls = field.calls
            q = finite_difference_q(field, x, s, v)
            assert field.calls == calls + 1 and field.jvps == 0
            q, q_ref = q.double().flatten(1), ref[f"q{k}"].flatten(1)
            vec = ((q - q_ref).norm(dim=1) / q_ref.norm(dim=1)).pow(2).mean().sqrt()
            size = ((error_size(q) - error_size(q_ref)) / error_size(q_ref)).pow(2).mean()
            errors.append((sigma, float(vec), float(size.sqrt())))
        return {}

    model = build_network_model("Flux", TINY_FLUX, dtype, time_frequencies=30.0)
    run_flow_field(model, cond(torch.float32), None, 1.0, noise, check)
    vec_tol, size_tol = FD_TOLERANCE[dtype]
    assert max(e[2] for e in errors) < size_tol, errors
    if vec_tol is not None:
        assert max(e[1] for e in errors) < vec_tol, errors


def test_velocity_is_the_models_prediction_and_jvp_methods_agree(env):
    """The field's velocity equals (x - x0_pred) / sigma from ComfyUI's ordinary denoiser
    call; forward_ad and torch.func.jvp give the same Q (float32 weights)."""
    from learned_schedules.comfy_bridge.sampler import actor_ksampler
    from learned_schedules.policies.actors import ActorStep
    from learned_schedules.training.comfy.flow_field import run_flow_field
    from learned_schedules.training.comfy.sampling import make_guider

    model = env.cui.nodes.UNETLoader().load_unet("sd3_art.safetensors", "default")[0]
    torch.manual_seed(1)
    noise = torch.randn(LATENT)
    seen = {}

    class Probe:  # records the denoised estimate at sigma 1, then stops at 0
        def next_sigma(self, state):
            seen["x0"], seen["x"] = state.denoised.clone(), state.x.clone()
            return ActorStep(torch.zeros_like(state.sigma))

    pos, neg = _rows(env.positive, 2, torch.float32), _rows(env.negative, 2, torch.float32)
    with torch.inference_mode():
        make_guider(model, pos, neg, 2.0).sample(
            noise, torch.zeros_like(noise), actor_ksampler(Probe()), torch.tensor([1.0, 0.0]),
            disable_pbar=True)

    def fn(field):
        s = torch.ones(2)
        v = field(field.start, s)
        torch.testing.assert_close(field.start, seen["x"])
        torch.testing.assert_close(v, seen["x"] - seen["x0"], rtol=1e-4, atol=1e-4)
        s = torch.full((2,), 0.4)
        _, q1 = velocity_and_error(field, field.start * 0.4, s, "forward_ad")
        _, q2 = velocity_and_error(field, field.start * 0.4, s, "func")
        torch.testing.assert_close(q1, q2, rtol=1e-4, atol=1e-4 * float(q1.abs().max()))
        return {"q": error_size(q1)}

    out = run_flow_field(model, pos, neg, 2.0, noise, fn)
    assert out["q"].shape == (2,)


def test_an_art_policy_file_runs_in_the_node_and_resamples_monotonically(env):
    flow = torch.tensor([1.0, 0.82, 0.61, 0.37, 0.12, 0.0])
    save_policy(env.models / "learned_schedules" / "art_sd3.safetensors",
                ARTGlobalClock(5, flow), method="art", model_family="sd3")
    model = env.cui.nodes.UNETLoader().load_unet("sd3_art.safetensors", "default")[0]
    noise = env.cui.ncs.Noise_RandomNoise(7)
    latent = {"samples": torch.zeros(1, 16, 8, 8)}
    for steps in (0, 3, 5, 9, 20):
        sigmas, default, meta = env.nodes.learned_sigmas(model, env.positive, noise, latent,
                                                         "art_sd3.safetensors", steps, "mean",
                                                         1.0)
        assert meta["method"] == "art" and meta["architecture"]["policy"] == "art-global"
        n = steps or 5
        assert sigmas.shape == (n + 1,) and default.shape == (n + 1,)
        validate_schedule(sigmas)  # starts at 1 (SD3's sigma_max), ends at 0, decreasing
        torch.testing.assert_close(sigmas, resample_loglinear(flow[None], n)[0])
    half, _, _ = env.nodes.learned_sigmas(model, env.positive, noise, latent,
                                          "art_sd3.safetensors", 4, "mean", 0.5)
    torch.testing.assert_close(half, resample_loglinear(flow[None], 8)[0, -5:])


@pytest.mark.parametrize("signal", ["jvp", "finite_difference"])
def test_train_method_art_on_a_comfyui_model(env, tmp_path, capsys, signal):
    """``train --method art --backend comfy``: ART's trajectories run through the model's own
    prediction, with either error signal; the run writes a node-loadable distilled clock."""
    from learned_schedules.policies.policy_file import load_policy
    from learned_schedules.training.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cat\na blue car\na green house\na white horse\n")
    args = {"backend": "comfy", "diffusion_model": "sd3_art.safetensors",
            "text_encoders": "clip_l.safetensors", "vae": "vae_art.safetensors",
            "prompts": str(prompts), "held_out": "1", "reward": "reference",
            "reference_steps": "4", "width": "64", "height": "64", "steps": "3", "batch": "2",
            "iterations": "2", "eval_every": "0", "eval_contexts": "2",
            "checkpoint_every": "1", "sample_every": "0", "encoder_preset": "tiny",
            "cache_dir": str(tmp_path / "cache"), "out": str(tmp_path / "runs"),
            "pool_size": "8", "hidden": "16", "art.grid": "4", "art.width": "8",
            "art.distill_contexts": "2", "art.error_signal": signal}
    argv = ["train", "--no-progress", "--method", "art"]
    for k, v in args.items():
        argv += ["--" + k.replace("_", "-"), v]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    loaded = load_policy(out["policy"])
    assert loaded.metadata["method"] == "art" and loaded.metadata["model_family"] == "sd3"
    validate_schedule(loaded.policy.schedule({}, steps=5)[0])
    with open(Path(out["run_dir"]) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    if signal == "jvp":
        assert [float(r["model_jvps"]) for r in rows] == [2 * 4, 4 * 4]
        assert [float(r["model_calls"]) for r in rows] == [2 * 4, 4 * 4]
    else:  # two plain forwards per grid point, no JVP
        assert [float(r["model_jvps"]) for r in rows] == [0, 0]
        assert [float(r["model_calls"]) for r in rows] == [2 * 2 * 4, 2 * 4 * 4]
