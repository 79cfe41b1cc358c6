"""The shipped shapes starter policies (models/shapes/shapes_policy_L<L>.safetensors;
REINFORCE + James-Stein, ``reference`` reward) through the ComfyUI back-end: on held-out seeds
that neither training, the shipped eval nor bench/shapes_benchmark.py used, the L = 4 and L = 3
policies' per-image schedules beat the best global schedule of the candidate sweep (chosen on
other seeds by scripts/shapes/headroom.py and the benchmark alike: uniform at L = 4, SD3 shift
1.4 at L = 3) by more than 3 paired standard errors (measured: 3.7 and 3.8 SE; L = 6, 5.4 SE,
is left to the benchmark to keep the suite short). Both share one back-end, so the 30-step
references are sampled once (L = 3 adds ~6 s)."""

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
