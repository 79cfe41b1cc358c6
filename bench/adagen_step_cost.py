"""AdaGen's step policy: its cost per sampler step relative to one denoiser step.

For each model (the tests' tiny SD3 at 256x256, i.e. latent 16x32x32, and the shipped digits
model at 32x32, latent 16x4x4) and batch size, one process times ``SamplerCustomAdvanced``
with ``steps`` euler steps twice (median of ``runs``): with ``KSamplerSelect("euler")`` and
with the Learned Sampler driven by an AdaGen step policy (the same euler arithmetic, one policy
call per step, plus one prompt-encoder call per run). The overhead per step
``(t_learned - t_euler) / steps`` is reported as a share of one denoiser step
``t_euler / steps``. Tiny models make the denoiser step unrealistically cheap, so the shares
are upper bounds; the last rows give the policy's per-step cost alone at Flux 1024x1024 latent
size (16x128x128) on this machine.

Usage: ``OMP_NUM_THREADS=1 python bench/adagen_step_cost.py [--runs 5] [--steps 8]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from timing import median_ms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts" / "digits"))


def _policy(cond, preset: str, steps: int):
    from learned_schedules.comfy_bridge.features import text_features
    from learned_schedules.policies.latent_encoder import LatentTextEncoder
    from learned_schedules.policies.stepwise import StepPolicy

    feats = text_features(cond)
    enc = LatentTextEncoder.for_family(preset, latent_channels=16,
                                       token_dim=int(feats["tokens"].shape[-1]),
                                       pooled_dim=int(feats["pooled"].shape[-1])
                                       if "pooled" in feats else 0)
    return StepPolicy(enc, steps, hidden=128)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from comfy_env import build_clip_l, build_tiny_sd3, import_comfy

    cui = import_comfy(Path(tempfile.mkdtemp()))
    from learned_schedules.nodes import extension, sampler_nodes
    from learned_schedules.policies.policy_file import save_policy

    extension.register_policy_folder()
    models = cui.base / "models"
    for sub in ("diffusion_models", "text_encoders"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    build_tiny_sd3(models / "diffusion_models" / "sd3.safetensors")
    build_clip_l(models / "text_encoders" / "clip_l.safetensors")
    n, ncs = cui.nodes, cui.ncs
    sd3 = n.UNETLoader().load_unet("sd3.safetensors", "default")[0]
    clip = n.CLIPLoader().load_clip("clip_l.safetensors", type="sd3")[0]
    sd3_cond = n.CLIPTextEncode().encode(clip, "a photo of a cat")[0]
    import digits_lib

    digits, digits_clip, _ = digits_lib.stock_models(digits_lib.setup_comfy())
    digits_cond = n.CLIPTextEncode().encode(digits_clip, digits_lib.prompts()[3])[0]
    setups = {"tiny SD3 (16x32x32)": (sd3, sd3_cond, 32, "tiny"),
              "digits (16x4x4)": (digits, digits_cond, 4, "small")}
    print(f"{args.steps} euler steps, median of {args.runs} runs, 1 CPU thread")
    print("| model | batch | denoiser step ms | policy overhead per step ms | share |")
    print("|---|---|---|---|---|")
    euler = ncs.KSamplerSelect.execute("euler").result[0]
    for name, (model, cond, side, preset) in setups.items():
        file = f"{preset}_{side}.safetensors"
        save_policy(models / "learned_schedules" / file, _policy(cond, preset, args.steps),
                    method="adagen", model_family="sd3")
        learned = sampler_nodes.LearnedSampler.execute(file, cond).result[0]
        sigmas = ncs.BasicScheduler.execute(model, "simple", args.steps, 1.0).result[0]
        guider = ncs.BasicGuider.execute(model, cond).result[0]
        for batch in (1, 4):
            latent = {"samples": torch.zeros(batch, 16, side, side)}

            def run(sampler, latent=latent, sigmas=sigmas, guider=guider):
                noise = ncs.RandomNoise.execute(1).result[0]
                return ncs.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent)

            base = median_ms(lambda: run(euler), args.runs, "cpu") / args.steps  # noqa: B023
            ours = median_ms(lambda: run(learned), args.runs, "cpu") / args.steps  # noqa: B023
            print(f"| {name} | {batch} | {base:.2f} | {ours - base:.2f} | "
                  f"{(ours - base) / base:.1%} |")
    # the policy's own per-step cost at Flux 1024x1024 latent size (no denoiser)
    from learned_schedules.policies.actors import StepState

    pol = _policy(sd3_cond, "tiny", args.steps).eval()
    for batch in (1, 4):
        x = torch.randn(batch, 16, 128, 128)
        feats = {"noise": x, "tokens": torch.randn(batch, 77, 4096),
                 "pooled": torch.randn(batch, 2048)}
        actor = pol.actor(feats)
        state = StepState(0, args.steps, x, torch.ones(batch), x * 0.5)
        with torch.no_grad():
            ms = median_ms(lambda: actor.next_sigma(state), args.runs, "cpu")  # noqa: B023
        print(f"| policy alone at 16x128x128 (Flux 1024²) | {batch} | - | {ms:.2f} | - |")


if __name__ == "__main__":
    main()
