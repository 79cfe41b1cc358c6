"""Every image family on a tiny random-weight model of its real architecture
(``tests/tiny_families.py``): it loads as its ComfyUI config class, its sampling space is read
from its own ``model_sampling``, the family table resolves it (and subclasses of it), its
conditioning runs through the model, and on every family (flow and discrete) the Learned
Schedule node with a fresh policy (initial mean = the family default) returns exactly
ComfyUI's default SIGMAS.
"""

from __future__ import annotations

import pytest
import torch
from tiny_families import (
    DISCRETE_KEYS,
    FLOW_KEYS,
    TINY_FAMILIES,
    VIDEO_KEYS,
    load_tiny,
    shaped_conditioning,
)

from learned_schedules.policies.dirichlet import DirichletPolicy
from learned_schedules.policies.families import FAMILIES, SUPPORTED_FAMILIES
from learned_schedules.policies.latent_encoder import LatentTextEncoder
from learned_schedules.policies.policy_file import save_policy

STEPS = 4


@pytest.fixture(scope="module")
def env(tiny_family_models, tmp_path_factory):
    cui, paths = tiny_family_models
    from learned_schedules.nodes import extension, schedule_nodes

    extension.register_policy_folder()
    models = {key: load_tiny(TINY_FAMILIES[key], path) for key, path in paths.items()}
    return {"cui": cui, "models": models, "nodes": schedule_nodes, "conds": {},
            "policies": cui.base / "models" / "learned_schedules"}


def _conditioning(env, key):
    """The real-small encoder's CONDITIONING (SD3, Flux) or the family's real shapes."""
    if key in env["conds"]:
        return env["conds"][key]
    spec = TINY_FAMILIES[key]
    if spec.text_encoder == "real-small" and spec.family == "sd3":
        from comfy_env import build_clip_l

        path = env["cui"].base / "models" / "text_encoders" / "clip_l.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            build_clip_l(path)
        clip = env["cui"].nodes.CLIPLoader().load_clip("clip_l.safetensors", type="sd3")[0]
        cond = env["cui"].nodes.CLIPTextEncode().encode(clip, "a red fox in snow")[0]
    elif spec.small_te is not None:
        from tiny_families import small_text_encoder

        clip = small_text_encoder(spec, env["cui"].base / "models" / "text_encoders")
        cond = clip.encode_from_tokens_scheduled(clip.tokenize("a red fox in snow"))
    elif spec.text_encoder == "real-small":
        from comfy_extras.nodes_flux import FluxGuidance

        from comfy_env import build_tiny_flux_text_encoders

        clip = build_tiny_flux_text_encoders(env["cui"].base)
        cond = clip.encode_from_tokens_scheduled(clip.tokenize("a red fox in snow"))
        if FAMILIES[spec.family].guidance is not None:
            cond = FluxGuidance.execute(cond, FAMILIES[spec.family].guidance).result[0]
    else:
        cond = shaped_conditioning(spec)
    if key.endswith("-kontext"):  # Kontext: the ReferenceLatent node's edit image
        import node_helpers

        ref = torch.randn(1, *spec.latent, generator=torch.Generator().manual_seed(5))
        cond = node_helpers.conditioning_set_values(cond, {"reference_latents": [ref]},
                                                    append=True)
    env["conds"][key] = cond
    return cond


def _latent(key, batch=1):
    return {"samples": torch.zeros(batch, *TINY_FAMILIES[key].latent)}


def _features(env, key):
    from learned_schedules.comfy_bridge.features import initial_noise, text_features

    noise = env["cui"].ncs.RandomNoise.execute(3).result[0]
    x_t = initial_noise(env["models"][key], noise, _latent(key))
    return {"noise": x_t.float(), **text_features(_conditioning(env, key))}


def _fresh_policy(env, key, name):
    """An untrained policy sized from what the model gives, its mean at the default."""
    from learned_schedules.comfy_bridge.sigmas import default_flow
    from learned_schedules.policies.schedule import schedule_to_increments

    feats = _features(env, key)
    torch.manual_seed(0)
    enc = LatentTextEncoder.for_family(
        "tiny", latent_channels=feats["noise"].shape[1], token_dim=feats["tokens"].shape[-1],
        pooled_dim=feats["pooled"].shape[-1] if "pooled" in feats else 0)
    pol = DirichletPolicy(enc, STEPS, head_hidden=16)
    pol.init_mean(schedule_to_increments(default_flow(env["models"][key], STEPS)))
    torch.nn.init.zeros_(pol.head[2].weight)  # the initial mean exactly (no input noise)
    save_policy(env["policies"] / name, pol, method="dirichlet-reinforce",
                model_family=TINY_FAMILIES[key].family)
    return feats


@pytest.mark.parametrize("key", list(TINY_FAMILIES))
def test_tiny_model_loads_as_its_config_class(env, key):
    from learned_schedules.comfy_bridge.sampling_space import sampling_space

    spec, model = TINY_FAMILIES[key], env["models"][key]
    assert type(model.model.model_config).__name__ == spec.config_class
    space = sampling_space(model)
    assert space.is_flow == spec.flow
    if spec.flow:
        assert space.sigma_max == pytest.approx(1.0)
        assert space.shift is not None and space.multiplier in (1.0, 1000.0)


@pytest.mark.parametrize("key, kind, zsnr", [
    ("sd1", "discrete_eps", False), ("sd2", "discrete_v", False),
    ("sdxl", "discrete_eps", False), ("sdxl-vpred", "discrete_v", True),
    ("sd1-te", "discrete_eps", False), ("sdxl-te", "discrete_v", True)])
def test_discrete_sampling_spaces(env, key, kind, zsnr):
    """SD 2.x's v-prediction test and SDXL's ``v_pred`` / ``ztsnr`` keys, read by ComfyUI."""
    from learned_schedules.comfy_bridge.sampling_space import sampling_space

    space = sampling_space(env["models"][key])
    assert (space.kind, space.zero_terminal_snr) == (kind, zsnr)
    assert space.is_discrete and space.sigma_min == pytest.approx(0.0292, abs=1e-3)
    assert space.sigma_max > (4000 if zsnr else 14.0)


@pytest.mark.parametrize("key, shift, multiplier", [
    ("sd3", 3.0, 1000.0), ("flux-dev", 1.15, 1.0), ("flux-schnell", 1.0, 1.0),
    ("flux2", 2.02, 1.0), ("chroma", 1.15, 1.0), ("qwen-image", 1.15, 1.0),
    ("z-image", 3.0, 1.0), ("lumina2", 6.0, 1.0), ("hidream", 1.0, 1000.0),
    ("hunyuan-image-2.1", 5.0, 1000.0), ("auraflow", 1.73, 1.0), ("wan", 8.0, 1000.0),
    ("wan2.2-5b", 8.0, 1000.0), ("hunyuan-video-1.5", 7.0, 1000.0), ("ltxv", 2.37, 1.0)])
def test_flow_sampling_spaces(env, key, shift, multiplier):
    from learned_schedules.comfy_bridge.sampling_space import sampling_space

    space = sampling_space(env["models"][key].get_model_object("model_sampling"))
    assert space.kind == "flow" and space.prediction == "flow"
    assert space.shift == pytest.approx(shift) and space.multiplier == multiplier


@pytest.mark.parametrize("key", list(TINY_FAMILIES))
def test_family_table_resolves_every_tiny_model(env, key):
    from learned_schedules.comfy_bridge.features import model_family
    from learned_schedules.policies.families import known_family_for_model_config

    spec = TINY_FAMILIES[key]
    assert known_family_for_model_config(env["models"][key]).name == spec.family
    assert model_family(env["models"][key]) == spec.family
    assert spec.family in SUPPORTED_FAMILIES


@pytest.mark.parametrize("key", list(TINY_FAMILIES))
def test_conditioning_runs_through_the_model(env, key):
    """Two euler steps of ``SamplerCustomAdvanced`` at the default schedule: the tiny
    architecture and the conditioning's shapes fit together."""
    from learned_schedules.comfy_bridge.sigmas import default_sigmas

    ncs, model = env["cui"].ncs, env["models"][key]
    guider = ncs.BasicGuider.execute(model, _conditioning(env, key)).result[0]
    sampler = ncs.KSamplerSelect.execute("euler").result[0]
    noise = ncs.RandomNoise.execute(1).result[0]
    out = ncs.SamplerCustomAdvanced.execute(noise, guider, sampler, default_sigmas(model, 2),
                                            _latent(key)).result[0]["samples"]
    assert torch.isfinite(out).all()
    assert out.shape[1] == TINY_FAMILIES[key].latent[0]


@pytest.mark.parametrize("key", FLOW_KEYS + DISCRETE_KEYS + VIDEO_KEYS)
def test_node_reproduces_the_family_default_at_init(env, key):
    """A fresh policy (initial mean = the family's default) gives the default SIGMAS
    (``BasicScheduler`` simple) through the Learned Schedule node's core path: on flow
    families and on the discrete ones (SD 1.5, SD 2.x v, SDXL eps, SDXL v + zero-terminal
    SNR), whose flow time is the fraction of the model's own timestep range; and on the
    video families (Wan 2.1 / 2.2, HunyuanVideo 1.5, LTX-Video), 5-D latents."""
    from learned_schedules.comfy_bridge.sigmas import default_sigmas
    from learned_schedules.policies.schedule import validate_schedule

    name = f"init_{key}.safetensors"
    _fresh_policy(env, key, name)
    noise = env["cui"].ncs.RandomNoise.execute(3).result[0]
    out = env["nodes"].LearnedSchedule.execute(env["models"][key], _conditioning(env, key),
                                               noise, _latent(key), name, 0, "mean", 1.0)
    sigmas = out.result[0]
    validate_schedule(sigmas, sigma_max=float(sigmas[0]))
    default = default_sigmas(env["models"][key], STEPS).float()
    torch.testing.assert_close(sigmas, default, atol=1e-5, rtol=1e-5)
    assert out.ui["learned_schedule"][0]["family"] == TINY_FAMILIES[key].family


@pytest.mark.parametrize("policy_key, model_key, message", [
    ("qwen-image", "z-image", "trained for qwen-image, but the model is z-image"),
    ("sdxl", "sd1", "trained for sdxl, but the model is sd1"),
    ("sd2", "flux-dev", "trained for sd2, but the model is flux-dev"),
    ("sd3", "sdxl-vpred", "trained for sd3, but the model is sdxl")])
def test_a_policy_for_another_family_is_a_sentence(env, policy_key, model_key, message):
    name = f"{policy_key}_policy.safetensors"
    _fresh_policy(env, policy_key, name)
    noise = env["cui"].ncs.RandomNoise.execute(3).result[0]
    with pytest.raises(ValueError, match=message):
        env["nodes"].LearnedSchedule.execute(env["models"][model_key],
                                             _conditioning(env, model_key), noise,
                                             _latent(model_key), name, 0, "mean", 1.0)


def test_a_policy_of_other_dimensions_is_a_sentence(env):
    """Same family, another text encoder width (a Qwen-Image policy fed 2560-wide tokens)."""
    _fresh_policy(env, "qwen-image", "qwen_policy.safetensors")
    noise = env["cui"].ncs.RandomNoise.execute(3).result[0]
    other = shaped_conditioning(TINY_FAMILIES["z-image"])
    with pytest.raises(ValueError, match="text tokens of width 3584"):
        env["nodes"].LearnedSchedule.execute(env["models"]["qwen-image"], other, noise,
                                             _latent("qwen-image"), "qwen_policy.safetensors",
                                             0, "mean", 1.0)


def test_a_discrete_policy_of_other_dimensions_is_a_sentence(env):
    """An SDXL policy (77 x 2048 tokens) on an SDXL model whose text encoder is narrower."""
    _fresh_policy(env, "sdxl", "sdxl_policy.safetensors")
    noise = env["cui"].ncs.RandomNoise.execute(3).result[0]
    with pytest.raises(ValueError, match="text tokens of width 2048"):
        env["nodes"].LearnedSchedule.execute(env["models"]["sdxl-te"],
                                             _conditioning(env, "sdxl-te"), noise,
                                             _latent("sdxl-te"), "sdxl_policy.safetensors",
                                             0, "mean", 1.0)


def test_a_subclass_of_a_supported_family_resolves_to_it(env):
    """Lookup walks the config class's bases: a fine-tune's own class (a synthetic subclass
    of ``Flux``) is Flux dev; ``ZImage`` and ``HunyuanImage21`` keep their own rows."""
    import comfy.supported_models as sm

    from learned_schedules.policies.families import family_for_config_class

    class MyFluxFinetune(sm.Flux):
        pass

    class MyZImage(sm.ZImage):
        pass

    config = MyFluxFinetune(dict(sm.Flux.unet_config))
    assert family_for_config_class(MyFluxFinetune).name == "flux-dev"
    assert family_for_config_class(config).name == "flux-dev"  # a config object
    assert family_for_config_class(MyZImage).name == "z-image"
    assert family_for_config_class(sm.ZImage).name == "z-image"
    assert family_for_config_class(sm.Lumina2).name == "lumina2"
    assert family_for_config_class(sm.HunyuanImage21).name == "hunyuan-image-2.1"
    assert family_for_config_class(sm.Flux2).name == "flux2"
    assert family_for_config_class("Flux2").name == "flux2"  # by name: exact names only

    class MyIllustrious(sm.SDXL):
        pass

    assert family_for_config_class(MyIllustrious).name == "sdxl"
    assert family_for_config_class(sm.SD15).name == "sd1"
    assert family_for_config_class(sm.SD20).name == "sd2"
    with pytest.raises(ValueError, match="image-editing"):  # a subclass listed as unsupported
        family_for_config_class(sm.SDXL_instructpix2pix)


@pytest.mark.parametrize("name, what", [
    ("StableAudio", "an audio model"), ("ACEStep", "an audio model"),
    ("Hunyuan3Dv2", "a 3D model"), ("SD_X4Upscaler", "an upscaler"),
    ("Stable_Cascade_C", "two-stage Stable Cascade"), ("Stable_Cascade_B", "two-stage"),
    ("HunyuanVideo", "a video model"), ("GenmoMochi", "a video model"),
    ("WAN22_S2V", "sound / pose-driven Wan"),
    ("HunyuanImage21Refiner", "an upscaler / refiner"), ("PixArtSigma", "this model"),
    ("SD15_instructpix2pix", "an image-editing / depth variant")])
def test_unsupported_kinds_get_a_plain_sentence(env, name, what):
    import comfy.supported_models as sm

    from learned_schedules.policies.families import family_for_config_class

    with pytest.raises(ValueError) as err:
        family_for_config_class(getattr(sm, name))
    message = str(err.value)
    assert what in message and "does not support" in message
    for family in ("Flux dev", "SD3", "Flux.2", "Chroma", "Qwen-Image", "Z-Image", "HiDream",
                   "Lumina 2", "HunyuanImage 2.1", "AuraFlow", "SDXL", "SD 2.x", "SD 1.x",
                   "Wan 2.1", "Wan 2.2 5B", "HunyuanVideo 1.5", "LTX-Video"):
        assert family in message.split("supported models:")[1]


def test_sampling_space_follows_comfyuis_sampling_nodes(env):
    """The space is read from the model's current ``model_sampling``: ComfyUI's
    ModelSampling* nodes (a v-prediction + zsnr patch on SD 1.x, a shift on Z-Image,
    ModelSamplingAuraFlow on Qwen-Image, EDM on SDXL) change it, and the node's default
    follows."""
    import comfy_extras.nodes_model_advanced as adv

    from learned_schedules.comfy_bridge.sampling_space import sampling_space

    models = env["models"]
    sd1 = adv.ModelSamplingDiscrete().patch(models["sd1"], "v_prediction", True)[0]
    space = sampling_space(sd1)
    assert (space.kind, space.zero_terminal_snr) == ("discrete_v", True)
    lcm = adv.ModelSamplingDiscrete().patch(models["sd1"], "lcm", False)[0]
    assert sampling_space(lcm).kind == "other"
    z = adv.ModelSamplingSD3().patch(models["z-image"], 5.0)[0]
    assert (sampling_space(z).shift, sampling_space(z).multiplier) == (5.0, 1000.0)
    qwen = adv.ModelSamplingAuraFlow().patch_aura(models["qwen-image"], 3.1)[0]
    space = sampling_space(qwen)
    assert (space.sampling, space.shift, space.multiplier) == (
        "ModelSamplingDiscreteFlow", pytest.approx(3.1), 1.0)
    edm = adv.ModelSamplingContinuousEDM().patch(models["sdxl"], "edm", 80.0, 0.002)[0]
    assert sampling_space(edm).kind == "edm"
    assert sampling_space(models["z-image"]).shift == 3.0  # the original is untouched

    # the node's default (and a fresh policy's mean) follow the patched sampling
    from learned_schedules.comfy_bridge.sigmas import default_sigmas

    assert not torch.allclose(default_sigmas(qwen, STEPS),
                              default_sigmas(models["qwen-image"], STEPS))


def test_video_classes_resolve_through_their_bases(env):
    """Wan 2.1's variants (VACE, camera, Fun) resolve to ``wan`` through ``WAN21_T2V``; the
    Wan 2.2 5B (a ``WAN21_T2V`` subclass) and HunyuanVideo 1.5 (a ``HunyuanVideo`` subclass)
    keep their own rows; HunyuanVideo 1.0 and the 1.5 super-resolution model stay out."""
    import comfy.supported_models as sm

    from learned_schedules.policies.families import family_for_config_class

    for cls in (sm.WAN21_T2V, sm.WAN21_I2V, sm.WAN21_Vace, sm.WAN21_Camera,
                sm.WAN21_FunControl2V):
        assert family_for_config_class(cls).name == "wan"
    assert family_for_config_class(sm.WAN22_T2V).name == "wan2.2-5b"
    assert family_for_config_class(sm.HunyuanVideo15).name == "hunyuan-video-1.5"
    assert family_for_config_class(sm.LTXV).name == "ltxv"
    for cls, what in ((sm.HunyuanVideo, "a video model"),
                      (sm.HunyuanVideo15_SR_Distilled, "an upscaler")):
        with pytest.raises(ValueError, match=what):
            family_for_config_class(cls)
