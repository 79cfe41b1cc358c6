"""The shipped shapes starter policy (models/shapes/shapes_policy_L4.safetensors; REINFORCE +
James-Stein, ``reference`` reward, L = 4) through the ComfyUI back-end: on held-out seeds that
neither training nor the shipped eval used, its per-image schedules beat the best global
schedule of the headroom sweep (uniform at L = 4) by more than 3 paired standard errors."""

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
