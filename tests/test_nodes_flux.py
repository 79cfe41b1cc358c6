"""The Learned Schedule node on Flux: a tiny Flux built through ComfyUI's model classes with
tiny CLIP-L/T5 encoders, and the stock loader path on the smallest detectable Flux."""

from __future__ import annotations

import gc

import pytest
import torch

from comfy_env import (
    build_smallest_stock_flux,
    build_tiny_flux,
    build_tiny_flux_text_encoders,
    import_comfy,
)
from learned_schedules.policies.dirichlet import DirichletPolicy
from learned_schedules.policies.latent_encoder import LatentTextEncoder
from learned_schedules.policies.policy_file import save_policy
from learned_schedules.policies.schedule import validate_schedule


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("flux_base")
    cui = import_comfy(base)
    base = cui.base  # the process-wide ComfyUI base directory
    from comfy_extras.nodes_flux import FluxGuidance

    from learned_schedules.nodes import extension, schedule_nodes

    extension.register_policy_folder()
    torch.manual_seed(0)
    pol = DirichletPolicy(LatentTextEncoder(latent_channels=16, token_dim=64, pooled_dim=64,
                                            width=32, levels=2, heads=2, grid=2), 6,
                          head_hidden=32)
    torch.nn.init.normal_(pol.head[2].weight, std=1.0)
    folder = base / "models" / "learned_schedules"
    save_policy(folder / "flux_tiny.safetensors", pol, method="dirichlet-reinforce",
                model_family="flux-dev")
    clip = build_tiny_flux_text_encoders(base)
    cond = clip.encode_from_tokens_scheduled(clip.tokenize("a lighthouse at dusk"))
    cond = FluxGuidance.execute(cond, 3.5).result[0]
    return {"cui": cui, "nodes": schedule_nodes, "cond": cond, "base": base,
            "dev": build_tiny_flux(guidance=True), "schnell": build_tiny_flux(guidance=False)}


def _run(env, model, seed=7, **kw):
    noise = env["cui"].ncs.RandomNoise.execute(seed).result[0]
    latent = {"samples": torch.zeros(1, 16, 16, 16)}
    args = dict(policy="flux_tiny.safetensors", steps=0, mode="mean", denoise=1.0) | kw
    out = env["nodes"].LearnedSchedule.execute(model, env["cond"], noise, latent, **args)
    return out.result[0], out.ui, noise, latent


def test_flux_family_detection(env):
    from learned_schedules.comfy_bridge.features import is_flow_model, model_family

    assert model_family(env["dev"]) == "flux-dev"
    assert model_family(env["schnell"]) == "flux-schnell"
    assert is_flow_model(env["dev"])


def test_flux_schedule_samples(env):
    sigmas, ui, noise, latent = _run(env, env["dev"])
    assert sigmas.shape == (7,)
    validate_schedule(sigmas)
    default = ui["learned_schedule"][0]["default_sigmas"]
    assert len(default) == 7 and default[0] == pytest.approx(1.0)
    ncs = env["cui"].ncs
    guider = ncs.BasicGuider.execute(env["dev"], env["cond"]).result[0]
    sampler = ncs.KSamplerSelect.execute("euler").result[0]
    out = ncs.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent).result[0]
    assert torch.isfinite(out["samples"]).all()
    other, *_ = _run(env, env["dev"], seed=8)
    assert not torch.allclose(sigmas, other)


def test_policy_for_dev_refuses_schnell(env):
    with pytest.raises(ValueError, match="trained for flux-dev, but the model is flux-schnell"):
        _run(env, env["schnell"])


def test_feature_size_mismatch_is_reported(env):
    from learned_schedules.policies.policy_file import save_policy as save

    pol = DirichletPolicy(LatentTextEncoder(latent_channels=16, token_dim=4096, pooled_dim=768,
                                            width=32, levels=2, heads=2, grid=2), 4)
    save(env["base"] / "models" / "learned_schedules" / "flux_big.safetensors", pol,
         method="dirichlet-reinforce", model_family="flux-dev")
    with pytest.raises(ValueError, match="text tokens of width 4096"):
        _run(env, env["dev"], policy="flux_big.safetensors")


@pytest.mark.slow
def test_stock_loader_detects_the_smallest_flux(env, tmp_path):
    """UNETLoader's own path on a real Flux state dict (531M parameters, bf16)."""
    import comfy.sd

    from learned_schedules.comfy_bridge.features import model_family

    path = build_smallest_stock_flux(tmp_path / "flux_min.safetensors")
    model = comfy.sd.load_diffusion_model(str(path))
    try:
        assert model_family(model) == "flux-dev"
        params = sum(p.numel() for p in model.model.diffusion_model.parameters())
        assert 5.0e8 < params < 5.6e8
    finally:
        del model
        gc.collect()
