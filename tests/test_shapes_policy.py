"""The shipped shapes starter policies (models/shapes/shapes_policy_L<L>.safetensors;
REINFORCE + James-Stein, ``reference`` reward) through the ComfyUI back-end: on held-out seeds
that neither training, the shipped eval nor bench/shapes_benchmark.py used, the L = 4 and L = 3
policies' per-image schedules beat the best global schedule of the candidate sweep (chosen on
other seeds by scripts/shapes/headroom.py and the benchmark alike: uniform at L = 4, SD3 shift
1.4 at L = 3) by more than 3 paired standard errors (measured: 3.7 and 3.8 SE; L = 6, 5.4 SE,
is left to the benchmark to keep the suite short). Both share one back-end, so the 30-step
references are sampled once (L = 3 adds ~6 s). The shipped AdaGen sampler
(shapes_adagen_L4.safetensors) in the Learned Sampler node decides, per image, the very
schedules ``eval`` measured for it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from comfy_env import digits_clip, import_comfy
from learned_schedules.policies.policy_file import load_policy
from learned_schedules.policies.schedule import shifted_schedule
from learned_schedules.training.eval import backend_for_policy, policy_schedules

REPO = Path(__file__).resolve().parents[1]
SHAPES = REPO / "models" / "shapes"
DIGITS = REPO / "models" / "digits"
POLICY = SHAPES / "shapes_policy_L4.safetensors"
"""The back-end's config comes from this file (the L = 3 file's differs only in ``steps`` and
``iterations``)."""
BEST_GLOBAL = {4: lambda: torch.linspace(1, 0, 5), 3: lambda: shifted_schedule(3, 1.4)}
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


@pytest.mark.parametrize("steps", [4, 3])
def test_shipped_policy_beats_the_best_global_schedule_on_held_out_seeds(backend, steps):
    _, b = backend
    loaded = load_policy(SHAPES / f"shapes_policy_L{steps}.safetensors")
    assert int(loaded.metadata["steps"]) == steps and b.reward_name == "reference"
    n = 56 * SEEDS_PER_PROMPT
    ctx = b.held_out_contexts(n, 30_000)
    learned = policy_schedules(loaded, b, ctx).float()
    best = BEST_GLOBAL[steps]().expand(n, -1)
    assert float((learned - best).abs().max()) > 0.02  # per-image, not one schedule
    r_learned = b.rewards(ctx, learned[:, None, :])[:, 0]
    r_global = b.rewards(ctx, best[:, None, :])[:, 0]
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
