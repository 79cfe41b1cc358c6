"""The Learned Sampler node inside ``SamplerCustomAdvanced``: a tiny SD3, a tiny Flux and the
shipped digits model, batch 1 and 4, with an AdaGen (step-wise) policy and a one-shot
(Dirichlet) policy. Each image's sigmas decrease strictly and end at 0; with a one-shot policy
image i of a batch equals a batch-1 run of image i with its own schedule."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from comfy_env import (
    build_clip_l,
    build_tiny_flux,
    build_tiny_flux_text_encoders,
    build_tiny_sd3,
    import_comfy,
)
from learned_schedules.comfy_bridge.features import text_features
from learned_schedules.policies.dirichlet import DirichletPolicy
from learned_schedules.policies.latent_encoder import LatentTextEncoder
from learned_schedules.policies.policy_file import save_policy
from learned_schedules.policies.stepwise import StepPolicy

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "digits"
MODELS = ("sd3", "flux", "digits")


def _encoder(cond, preset: str) -> LatentTextEncoder:
    feats = text_features(cond)
    return LatentTextEncoder.for_family(preset, latent_channels=16,
                                        token_dim=int(feats["tokens"].shape[-1]),
                                        pooled_dim=int(feats["pooled"].shape[-1])
                                        if "pooled" in feats else 0)


def _policies(cond, preset: str, seed: int) -> tuple[StepPolicy, DirichletPolicy]:
    """Random policies whose choices depend on their inputs (untrained)."""
    torch.manual_seed(seed)
    step = StepPolicy(_encoder(cond, preset), 4, hidden=16)
    torch.nn.init.normal_(step.mu.weight, std=2.0)
    shot = DirichletPolicy(_encoder(cond, preset), 4, head_hidden=16)
    torch.nn.init.normal_(shot.head[2].weight, std=1.0)
    return step, shot


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cui = import_comfy(tmp_path_factory.mktemp("sampler_base"))
    base = cui.base
    models = base / "models"
    for sub in ("diffusion_models", "text_encoders"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    from comfy_extras.nodes_flux import FluxGuidance

    from learned_schedules.nodes import extension, sampler_nodes

    extension.register_policy_folder()
    build_tiny_sd3(models / "diffusion_models" / "sd3_tiny_sampler.safetensors")
    build_clip_l(models / "text_encoders" / "clip_l_sampler.safetensors")
    n = cui.nodes
    sd3 = n.UNETLoader().load_unet("sd3_tiny_sampler.safetensors", "default")[0]
    clip = n.CLIPLoader().load_clip("clip_l_sampler.safetensors", type="sd3")[0]
    sd3_cond = n.CLIPTextEncode().encode(clip, "a photo of a cat")[0]
    flux_clip = build_tiny_flux_text_encoders(base)
    flux_cond = flux_clip.encode_from_tokens_scheduled(flux_clip.tokenize("a lighthouse"))
    flux_cond = FluxGuidance.execute(flux_cond, 3.5).result[0]
    sys.path.insert(0, str(SCRIPTS))
    import digits_lib

    c = digits_lib.setup_comfy()
    digits, digits_clip, _ = digits_lib.stock_models(c)
    digits_cond = n.CLIPTextEncode().encode(digits_clip, digits_lib.prompts()[3])[0]
    env = {"cui": cui, "nodes": sampler_nodes,
           "sd3": (sd3, sd3_cond, 16), "flux": (build_tiny_flux(), flux_cond, 16),
           "digits": (digits, digits_cond, 4)}
    folder = models / "learned_schedules"
    for i, (name, preset, family) in enumerate((("sd3", "tiny", "sd3"),
                                                ("flux", "tiny", "flux-dev"),
                                                ("digits", "small", "sd3"))):
        step, shot = _policies(env[name][1], preset, i)
        save_policy(folder / f"{name}_adagen.safetensors", step, method="adagen",
                    model_family=family)
        save_policy(folder / f"{name}_oneshot.safetensors", shot,
                    method="dirichlet-reinforce", model_family=family)
    return env


class _GivenNoise:
    """A NOISE input returning a given tensor (one image of a batch, for the batch-1 rerun)."""

    def __init__(self, noise: torch.Tensor, seed: int = 0):
        self.noise, self.seed = noise, seed

    def generate_noise(self, latent):
        return self.noise.clone()


def _sample(env, name: str, sampler, batch: int, seed: int = 5, noise=None, sigmas=None):
    cui = env["cui"]
    ncs = cui.ncs
    model, cond, side = env[name]
    latent = {"samples": torch.zeros(batch, 16, side, side)}
    noise = noise or ncs.RandomNoise.execute(seed).result[0]
    if sigmas is None:
        sigmas = ncs.BasicScheduler.execute(model, "simple", 4, 1.0).result[0]
    guider = ncs.BasicGuider.execute(model, cond).result[0]
    out = ncs.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent)
    return out.result[0]["samples"], sigmas, noise, latent


def _learned(env, name: str, kind: str, **kw):
    return env["nodes"].LearnedSampler.execute(f"{name}_{kind}.safetensors", env[name][1],
                                               **kw).result[0]


def _check_items(items: torch.Tensor, sigmas: torch.Tensor) -> None:
    assert items.shape[1] == len(sigmas)
    assert (items[:, :-1] > items[:, 1:]).all(), items
    assert (items[:, -1] == 0).all()
    assert torch.allclose(items[:, 0], sigmas[0].float().expand(len(items)))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch", [1, 4])
def test_adagen_policy_decides_every_step_of_every_image(env, name, batch):
    sampler = _learned(env, name, "adagen")
    out, sigmas, _, _ = _sample(env, name, sampler, batch)
    assert out.shape[0] == batch and torch.isfinite(out).all()
    last = sampler.sampler_function.last
    items = torch.tensor(last["items"])
    _check_items(items, sigmas)
    assert last["default_sigmas"] == pytest.approx(sigmas.tolist())
    # the policy moved the steps away from the incoming sigmas...
    assert not torch.allclose(items[0], sigmas.float(), atol=1e-4)
    if batch > 1:  # ...differently for each image (it reads each one's sample)
        assert items[:, 1:-1].std(0).max() > 1e-5
    # scale 0: exactly the incoming sigmas (the residual switched off)
    plain = _learned(env, name, "adagen", scale=0.0)
    _sample(env, name, plain, batch)
    items0 = torch.tensor(plain.sampler_function.last["items"])
    assert torch.allclose(items0, sigmas.float().expand_as(items0), atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch", [1, 4])
def test_one_shot_policy_gives_each_image_its_own_schedule(env, name, batch):
    sampler = _learned(env, name, "oneshot")
    out, sigmas, _, latent = _sample(env, name, sampler, batch, seed=11)
    items = torch.tensor(sampler.sampler_function.last["items"])
    _check_items(items, sigmas)
    from learned_schedules.comfy_bridge.features import initial_noise

    model = env[name][0]
    x_t = initial_noise(model, env["cui"].ncs.RandomNoise.execute(11).result[0], latent)
    if batch > 1:
        assert items[:, 1:-1].std(0).max() > 1e-5  # not one schedule for the batch
    euler = env["cui"].ncs.KSamplerSelect.execute("euler").result[0]
    for i in range(batch):  # image i == a batch-1 run of image i with its own sigmas
        single, *_ = _sample(env, name, euler, 1, noise=_GivenNoise(x_t[i:i + 1], 11),
                             sigmas=items[i])
        assert torch.allclose(single[0], out[i], atol=1e-4, rtol=1e-4), \
            float((single[0] - out[i]).abs().max())


def test_node_rejects_bad_inputs_with_sentences(env):
    with pytest.raises(ValueError, match="sampler_name must be one of"):
        _learned(env, "sd3", "adagen", sampler_name="lms")
    with pytest.raises(ValueError, match="mode must be"):
        _learned(env, "sd3", "adagen", mode="best")
    for bad in (float("nan"), float("inf"), -0.5, "big"):  # NaN passes ComfyUI's min / max
        with pytest.raises(ValueError, match="scale must be a number from 0 to 4"):
            _learned(env, "sd3", "adagen", scale=bad)
    with pytest.raises(ValueError, match="nope.safetensors is not in"):
        env["nodes"].LearnedSampler.execute("nope.safetensors", env["digits"][1])


def test_a_policy_for_another_family_gets_the_one_shot_nodes_sentence(env):
    """A Flux policy in the Learned Sampler on an SD3 model: refused with the sentence the
    Learned Schedule node gives, before any step."""
    sampler = _learned(env, "flux", "oneshot")
    with pytest.raises(ValueError, match="trained for flux.*but the model is sd3"):
        _sample(env, "sd3", sampler, 1)


def test_each_images_sigmas_reach_the_node_plot(env, monkeypatch):
    """After sampling, the sampler sends every image's sigmas to its node (by the node's id)
    through the server's websocket, in the plot's payload format."""
    import types

    sent = []
    fake = types.ModuleType("server")
    fake.PromptServer = types.SimpleNamespace(instance=types.SimpleNamespace(
        send_sync=lambda event, data, sid=None: sent.append((event, data))))
    monkeypatch.setitem(sys.modules, "server", fake)
    node = env["nodes"].LearnedSampler.PREPARE_CLASS_CLONE({"UNIQUE_ID": "17"})
    sampler = node.execute("digits_adagen.safetensors", env["digits"][1]).result[0]
    _, sigmas, _, _ = _sample(env, "digits", sampler, 3)
    assert len(sent) == 1
    event, data = sent[0]
    assert event == "learned_schedules.sampler_sigmas" and data["node"] == "17"
    payload = data["learned_schedule"][0]
    assert payload == sampler.sampler_function.last and len(payload["items"]) == 3
    _check_items(torch.tensor(payload["items"]), sigmas)


@pytest.mark.parametrize("kind", ["adagen", "oneshot"])
def test_partial_schedules_start_and_end_where_the_incoming_sigmas_do(env, kind):
    """The high part of split sigmas (it ends above 0) and a denoise below 1 (it starts below
    the top): every image keeps the incoming start and end, strictly decreasing between."""
    ncs = env["cui"].ncs
    model = env["digits"][0]
    full = ncs.BasicScheduler.execute(model, "simple", 8, 1.0).result[0]
    high = ncs.SplitSigmas.execute(full, 4).result[0]
    low_start = ncs.BasicScheduler.execute(model, "simple", 4, 0.5).result[0]
    for sigmas in (high, low_start):
        sampler = _learned(env, "digits", kind)
        _sample(env, "digits", sampler, 3, sigmas=sigmas)
        items = torch.tensor(sampler.sampler_function.last["items"])
        assert items.shape == (3, len(sigmas))
        assert (items[:, :-1] > items[:, 1:]).all(), items
        assert torch.allclose(items[:, 0], sigmas[0].float().expand(3))
        assert torch.allclose(items[:, -1], sigmas[-1].float().expand(3))
    if kind == "adagen":  # scale 0 follows the incoming (partial) sigmas exactly
        plain = _learned(env, "digits", "adagen", scale=0.0)
        _sample(env, "digits", plain, 2, sigmas=high)
        items = torch.tensor(plain.sampler_function.last["items"])
        assert torch.allclose(items, high.float().expand_as(items), atol=1e-5)


def test_learned_schedule_node_points_adagen_policies_to_the_sampler(env):
    from learned_schedules.nodes import schedule_nodes

    with pytest.raises(ValueError, match="step-wise policy.*Learned Sampler"):
        schedule_nodes.check_policy("sd3_adagen.safetensors", "schedule")
    schedule_nodes.check_policy("sd3_oneshot.safetensors", "schedule")
    schedule_nodes.check_policy("sd3_adagen.safetensors", "sampler")
    assert "sd3_adagen.safetensors" not in schedule_nodes.policy_files("schedule")
    assert "sd3_adagen.safetensors" in schedule_nodes.policy_files("sampler")
