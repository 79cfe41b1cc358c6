"""The nodes inside a real ComfyUI runtime, with a tiny SD3 (MMDiT) and a random CLIP-L.

The SD3 model goes through the stock ``UNETLoader`` path, the text encoder through the stock
``CLIPLoader(type="sd3")``; the learned sigmas feed ``SamplerCustomAdvanced``.
"""

from __future__ import annotations

import logging

import pytest
import torch

from comfy_env import build_clip_l, build_tiny_sd3, import_comfy
from learned_schedules.policies.dirichlet import DirichletPolicy
from learned_schedules.policies.latent_encoder import LatentTextEncoder
from learned_schedules.policies.policy_file import save_policy


def _sd3_policy(seed: int, steps: int = 4) -> DirichletPolicy:
    """A random (untrained) policy sized for SD3 features, sensitive to its inputs."""
    torch.manual_seed(seed)
    enc = LatentTextEncoder(latent_channels=16, token_dim=4096, pooled_dim=2048, width=32,
                            levels=2, heads=2, grid=2)
    pol = DirichletPolicy(enc, steps, head_hidden=32)
    torch.nn.init.normal_(pol.head[2].weight, std=1.0)
    return pol


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_base")
    cui = import_comfy(base)
    base = cui.base  # the process-wide ComfyUI base directory
    models = base / "models"
    (models / "diffusion_models").mkdir(parents=True, exist_ok=True)
    (models / "text_encoders").mkdir(parents=True, exist_ok=True)
    build_tiny_sd3(models / "diffusion_models" / "sd3_tiny.safetensors")
    build_clip_l(models / "text_encoders" / "clip_l.safetensors")
    from learned_schedules.nodes import extension, schedule_nodes

    extension.register_policy_folder()
    pol_dir = models / "learned_schedules"
    save_policy(pol_dir / "sd3_test.safetensors", _sd3_policy(0), method="dirichlet-reinforce",
                model_family="sd3")
    save_policy(pol_dir / "flux_test.safetensors", _sd3_policy(1), method="dirichlet-reinforce",
                model_family="flux-dev")
    (pol_dir / "corrupt.safetensors").write_bytes(b"\x00" * 40)
    model = cui.nodes.UNETLoader().load_unet("sd3_tiny.safetensors", "default")[0]
    clip = cui.nodes.CLIPLoader().load_clip("clip_l.safetensors", type="sd3")[0]
    cond = cui.nodes.CLIPTextEncode().encode(clip, "a photo of a cat")[0]
    latent = {"samples": torch.zeros(1, 16, 16, 16)}
    return {"cui": cui, "model": model, "cond": cond, "latent": latent, "nodes": schedule_nodes,
            "base": base}


def _noise(env, seed):
    return env["cui"].ncs.RandomNoise.execute(seed).result[0]


def _run(env, seed=42, policy="sd3_test.safetensors", steps=0, mode="mean", denoise=1.0,
         cond=None, latent=None):
    out = env["nodes"].LearnedSchedule.execute(
        env["model"], env["cond"] if cond is None else cond, _noise(env, seed),
        env["latent"] if latent is None else latent, policy, steps, mode, denoise)
    return out.result[0], out.ui


def test_policy_folder_lists_only_safetensors(env):
    (env["base"] / "models" / "learned_schedules" / "notes.txt").write_text("hi")
    names = env["nodes"].policy_files()
    assert "sd3_test.safetensors" in names and "notes.txt" not in names


def test_schedule_is_valid_and_feeds_the_sampler(env):
    from learned_schedules.policies.schedule import validate_schedule

    sigmas, ui = _run(env)
    assert sigmas.shape == (5,)
    validate_schedule(sigmas)
    payload = ui["learned_schedule"][0]
    assert payload["sigmas"] == pytest.approx(sigmas.tolist())
    assert len(payload["default_sigmas"]) == 5 and payload["family"] == "sd3"
    # the default is ComfyUI's simple schedule with SD3's shift 3
    assert payload["default_sigmas"][1] == pytest.approx(0.9, abs=1e-3)  # 4 steps, shift 3
    ncs = env["cui"].ncs
    guider = ncs.BasicGuider.execute(env["model"], env["cond"]).result[0]
    sampler = ncs.KSamplerSelect.execute("euler").result[0]
    noise = _noise(env, 42)
    seen = []
    original = noise.generate_noise

    def spy(latent):
        out = original(latent)
        seen.append(out)
        return out

    noise.generate_noise = spy
    out = ncs.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas,
                                            env["latent"]).result[0]["samples"]
    assert out.shape == (1, 16, 16, 16) and torch.isfinite(out).all()
    # the node rebuilt exactly the x_T the sampler drew
    from learned_schedules.comfy_bridge.features import initial_noise

    assert torch.equal(initial_noise(env["model"], _noise(env, 42), env["latent"]), seen[0])


def test_deterministic_in_mean_mode_and_noise_dependent(env):
    a, _ = _run(env, seed=1)
    b, _ = _run(env, seed=1)
    c, _ = _run(env, seed=2)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    s1, _ = _run(env, seed=1, mode="sample")
    s2, _ = _run(env, seed=1, mode="sample")
    assert torch.equal(s1, s2) and not torch.allclose(s1, a)


def test_steps_resample_and_denoise(env, caplog):
    caplog.set_level(logging.INFO, logger="learned_schedules")
    sigmas, _ = _run(env, steps=9)
    assert sigmas.shape == (10,) and float(sigmas[0]) == pytest.approx(1.0)
    assert "resampling" in caplog.text
    part, _ = _run(env, steps=4, denoise=0.5)
    assert part.shape == (5,) and float(part[0]) < 1.0 and float(part[-1]) == 0.0


@pytest.mark.parametrize("kwargs, message", [
    ({"policy": "flux_test.safetensors"}, "trained for flux-dev"),
    ({"steps": 1001}, "steps must be between"),
    ({"cond": []}, "conditioning is empty"),
    ({"latent": {"samples": torch.ones(1, 4, 16, 16)}}, "4 channels"),
    ({"mode": "max"}, "mode must be"),
    ({"policy": "missing.safetensors"}, "missing.safetensors is not in"),
])
def test_bad_inputs_raise_plain_errors(env, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _run(env, **kwargs)


def test_policy_messages(env):
    """Validation checks the type only; execute gives the sentence (so the frontend's error
    dialog shows it, also when another branch of the graph runs)."""
    node = env["nodes"].LearnedSchedule
    assert node.validate_inputs(policy="sd3_test.safetensors") is True
    assert node.validate_inputs(policy="nope.safetensors") is True
    env["nodes"].check_policy("sd3_test.safetensors", "schedule")
    with pytest.raises(ValueError, match="nope.safetensors is not in"):
        _run(env, policy="nope.safetensors")
    with pytest.raises(ValueError, match="safetensors"):
        env["nodes"].check_policy("corrupt.safetensors", "schedule")
    for bad in (["sd3_test.safetensors"], 3, None, {"name": "x"}):  # hand-edited API graphs
        assert "name of a policy file" in node.validate_inputs(policy=bad)


def test_text_round_trip_and_plot(env):
    nodes = env["nodes"]
    sigmas, _ = _run(env)
    text = nodes.ScheduleToText.execute(sigmas, 8).result[0]
    back = nodes.TextToSchedule.execute(text).result[0]
    assert torch.allclose(back, sigmas, atol=1e-6)
    assert "decreasing" in nodes.TextToSchedule.validate_inputs("1, 0.5, 0.7, 0")
    assert "two numbers" in nodes.TextToSchedule.validate_inputs("1")
    assert "numbers" in nodes.TextToSchedule.validate_inputs("1, x, 0")
    out = nodes.SchedulePlot.execute(sigmas, sigmas * 0.9, "a", "b")
    image = out.result[0]
    assert image.ndim == 4 and image.shape[-1] == 3 and image.std() > 0
    assert out.ui["schedule_plot"][0]["default_sigmas"] is not None
