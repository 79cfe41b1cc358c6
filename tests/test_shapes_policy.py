"""The shipped shapes starter policy (models/shapes/shapes_policy_L4.safetensors; REINFORCE +
James-Stein, ``reference`` reward, L = 4) through the ComfyUI back-end: on held-out seeds that
neither training nor the shipped eval used, its per-image schedules beat the best global
schedule of the headroom sweep (uniform at L = 4) by more than 3 paired standard errors. The
shipped AdaGen sampler (shapes_adagen_L4.safetensors) in the Learned Sampler node decides, per
image, the very schedules ``eval`` measured for it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from comfy_env import digits_clip, import_comfy
from learned_schedules.policies.policy_file import load_policy
from learned_schedules.training.eval import backend_for_policy, policy_schedules

REPO = Path(__file__).resolve().parents[1]
SHAPES = REPO / "models" / "shapes"
DIGITS = REPO / "models" / "digits"
POLICY = SHAPES / "shapes_policy_L4.safetensors"
ADAGEN = SHAPES / "shapes_adagen_L4.safetensors"
SEEDS_PER_PROMPT = 2


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    import_comfy(tmp_path_factory.mktemp("comfy_base"))
    clip = digits_clip()
    loaded = load_policy(POLICY)
    overrides = {"diffusion_model": str(SHAPES / "shapes_mmdit.safetensors"),
                 "text_encoders": str(clip), "vae": str(SHAPES / "shapes_vae.safetensors"),
                 "prompts": str(REPO / "training" / "prompts" / "shapes.txt"),
                 "cache_dir": str(tmp_path_factory.mktemp("cond")), "device": "cpu"}
    return loaded, backend_for_policy(loaded, overrides)


def test_shipped_policy_beats_the_best_global_schedule_on_held_out_seeds(backend):
    loaded, b = backend
    assert int(loaded.metadata["steps"]) == 4 and b.reward_name == "reference"
    n = 56 * SEEDS_PER_PROMPT
    ctx = b.held_out_contexts(n, 30_000)
    learned = policy_schedules(loaded, b, ctx).float()
    uniform = torch.linspace(1, 0, 5).expand(n, -1)
    assert float((learned - uniform).abs().max()) > 0.02  # per-image, not one schedule
    r_learned = b.rewards(ctx, learned[:, None, :])[:, 0]
    r_global = b.rewards(ctx, uniform[:, None, :])[:, 0]
    diff = (r_learned - r_global).double()
    se = float(diff.std() / n ** 0.5)
    assert float(diff.mean()) > 3 * se > 0, (float(diff.mean()), se)


def test_shipped_adagen_sampler_in_the_node_takes_the_schedules_eval_measured(backend, tmp_path):
    """Its base is the best global (uniform) schedule, given to the node as SIGMAS; on 4
    held-out contexts (2 prompts of different groups x 2 seeds) each image's sigmas and final
    latent equal the back-end rollout's that ``eval`` scores (same prompt, seed and cfg)."""
    import shutil

    from learned_schedules.nodes import extension, sampler_nodes

    _, b = backend
    adagen = load_policy(ADAGEN)
    assert adagen.policy.stepwise and int(adagen.metadata["steps"]) == 4
    probe = b.held_out_contexts(1, 0)
    ctx = type(probe)(torch.tensor([0, 0, 40, 40]),  # a smooth gradient; a texture
                      torch.tensor([31_000, 31_001, 31_000, 31_001]))
    prompts = b.prompt_texts(ctx)
    expected = policy_schedules(adagen, b, ctx).float()
    assert float(expected[:, 1:-1].std(0).max()) > 1e-3  # per image, not one schedule
    cui = import_comfy(tmp_path)  # returns the fixture's base (the first call fixed it)
    extension.register_policy_folder()
    folder = cui.base / "models" / "learned_schedules"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ADAGEN, folder / ADAGEN.name)
    try:
        n, ncs = cui.nodes, cui.ncs
        negative = n.CLIPTextEncode().encode(b.clip, "")[0]
        uniform = torch.linspace(1, 0, 5)
        for i in range(len(ctx)):
            positive = n.CLIPTextEncode().encode(b.clip, prompts[i])[0]
            sampler = sampler_nodes.LearnedSampler.execute(ADAGEN.name, positive).result[0]
            guider = ncs.CFGGuider.execute(b.model, positive, negative, 2.0).result[0]
            out = ncs.SamplerCustomAdvanced.execute(
                ncs.RandomNoise.execute(int(ctx.seeds[i])).result[0], guider, sampler, uniform,
                {"samples": torch.zeros(1, 16, 4, 4)}).result[0]["samples"]
            items = torch.tensor(sampler.sampler_function.last["items"])[0]
            assert torch.allclose(items, expected[i], atol=1e-4), (items, expected[i])
            assert torch.allclose(out, b.sample_latents(ctx.select([i]), expected[i:i + 1]),
                                  atol=1e-4)
    finally:
        (folder / ADAGEN.name).unlink()
