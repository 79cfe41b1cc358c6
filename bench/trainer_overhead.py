"""Trainer cost against plain ComfyUI sampling of the same rollouts, and rollouts per second.

For B contexts x K schedules, in one process, medians after warm-up, interleaved:

* ``plain``: what ComfyUI itself costs for those B*K images: one batched ``CFGGuider`` run
  with one schedule (``SamplerCustom``'s path), the VAE decode and the reward;
* ``trainer``: one full training iteration (features, policy, B*K rollouts each with its own
  schedule through the step-wise sampler, decode, reward, baseline, backward, AdamW step).

Peak memory of each arm: on CUDA ``max_memory_allocated`` (reset between arms); on the CPU
the peak resident set of a fresh process running only that arm. Then rollouts per second for
growing B*K (distinct schedules, the trainer's path).

Modes: ``tiny`` (CPU; the tests' tiny SD3 with a random CLIP-L and a tiny VAE, 256x256) and
``flux-real`` (GPU: a real-size Flux-dev transformer, 11.9B random bf16 weights, with the real
16-channel VAE architecture, 1024x1024; T5/CLIP conditioning is random, pre-filled in the
conditioning cache). The reward is the image mean (a stand-in: it costs the same in both arms).

Usage: ``python bench/trainer_overhead.py --mode tiny|flux-real [--out bench/results]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

from timing import median_ms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

PROMPTS = [f"a photo of a {c} {o}" for c in ("red", "blue", "green") for o in ("cat", "car")]


def mean_reward(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    return images.flatten(1).mean(1)


def tiny_backend(width: int):
    from comfy_env import build_clip_l, build_tiny_sd3, build_tiny_vae, import_comfy
    from learned_schedules.training.comfy.backend import ComfyBackend
    from learned_schedules.training.comfy.models import load_models

    base = Path(tempfile.mkdtemp())
    import_comfy(base)
    models = base / "models"
    for sub in ("diffusion_models", "text_encoders", "vae"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    build_tiny_sd3(models / "diffusion_models" / "sd3.safetensors", std=0.1)
    build_clip_l(models / "text_encoders" / "clip_l.safetensors")
    build_tiny_vae(models / "vae" / "vae.safetensors")
    loaded = load_models(diffusion_model="sd3.safetensors", text_encoders=["clip_l.safetensors"],
                         vae="vae.safetensors")
    return ComfyBackend(loaded, train_prompts=PROMPTS[:4], eval_prompts=PROMPTS[4:],
                        reward=mean_reward, reward_name="mean", width=width, height=width,
                        cache_dir=None, encoder_preset="tiny")


def flux_real_backend(width: int):
    """Real-size Flux-dev through ComfyUI's model classes, random bf16 weights on the GPU."""
    from learned_schedules.training.comfy.runtime import import_comfyui

    import_comfyui(cpu=False)
    import comfy.model_detection
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencodingEngine

    from learned_schedules.training.comfy.backend import ComfyBackend
    from learned_schedules.training.comfy.models import LoadedModels

    cfg = dict(image_model="flux", in_channels=16, patch_size=2, out_channels=16, vec_in_dim=768,
               context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19,
               depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10000, qkv_bias=True,
               guidance_embed=True)
    config = comfy.model_detection.model_config_from_unet_config(cfg, {})
    dev = mm.get_torch_device()
    config.set_inference_dtype(torch.bfloat16, None)
    model = config.get_model({}, "", device=dev)
    with torch.no_grad():
        for p in model.diffusion_model.parameters():
            p.normal_(0, 0.02)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=dev,
                                               offload_device=mm.unet_offload_device())
    dd = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3,
          "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2,
          "attn_resolutions": [], "dropout": 0.0}
    ae = AutoencodingEngine(
        regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
        encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder",
                        "params": dd},
        decoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Decoder",
                        "params": dd})
    sd = {k: (torch.randn(v.shape) * 0.02 if v.is_floating_point() else v)
          for k, v in ae.state_dict().items()}
    vae = comfy.sd.VAE(sd=sd)
    loaded = LoadedModels(model=patcher, clip=None, vae=vae, family="flux-dev",
                          files={"model": ["random"]})
    backend = ComfyBackend(loaded, train_prompts=PROMPTS[:4], eval_prompts=PROMPTS[4:],
                           reward=mean_reward, reward_name="mean", width=width, height=width,
                           cache_dir=None)
    g = torch.Generator().manual_seed(0)
    for p in PROMPTS + [""]:  # random T5 tokens + CLIP pooled, as a Flux text encoder gives
        backend.cond_cache._memory[backend.cond_cache.key(p)] = (
            torch.randn(1, 512, 4096, generator=g).to(torch.bfloat16),
            {"pooled_output": torch.randn(1, 768, generator=g).to(torch.bfloat16)})
    return backend


def setup(mode: str, width: int, steps: int, batch: int, rollouts: int):
    from learned_schedules.training.rl.algorithms import make_algorithm
    from learned_schedules.training.rl.config import TrainConfig

    backend = tiny_backend(width) if mode == "tiny" else flux_real_backend(width)
    device = "cuda" if mode == "flux-real" else "cpu"
    config = TrainConfig.from_dict(dict(backend="comfy", steps=steps, batch=batch,
                                        rollouts=rollouts, device=device,
                                        encoder_preset=backend.encoder_preset))
    torch.manual_seed(0)
    policy = make_algorithm(config).build_policy(config, backend).to(device)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    contexts = backend.draw_contexts(batch, torch.Generator().manual_seed(1))
    return SimpleNamespace(backend=backend, config=config, policy=policy, optimizer=optimizer,
                           contexts=contexts, device=device)


def arms(s):
    from learned_schedules.training.rl.engine import train_iteration

    flat = s.contexts.repeat(s.config.rollouts)
    sig = s.backend.default_sigmas(s.config.steps)

    def plain():
        return s.backend.score(flat, s.backend.images(flat, sig))

    def trainer():
        return train_iteration(s.policy, s.optimizer, s.backend, s.contexts, s.config)

    return {"plain": plain, "trainer": trainer}


def peak_rss_child(args, arm: str) -> float:
    """Peak RSS (MiB) of a fresh process running only ``arm``."""
    cmd = [sys.executable, __file__, "--mode", args.mode, "--width", str(args.width),
           "--steps", str(args.steps), "--batch", str(args.batch), "--rollouts",
           str(args.rollouts), "--only", arm, "--runs", "3"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from learned_schedules.training.rl.engine import policy_features

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["tiny", "flux-real"], default="tiny")
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rollouts", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--sizes", default="1,2,4,8,16", help="B*K values for rollouts/second")
    ap.add_argument("--only", choices=["plain", "trainer"], help=argparse.SUPPRESS)
    ap.add_argument("--out", default="bench/results")
    a = ap.parse_args()
    a.width = a.width or (256 if a.mode == "tiny" else 1024)
    s = setup(a.mode, a.width, a.steps, a.batch, a.rollouts)
    fns = arms(s)
    if a.only:  # child process for the CPU peak-memory measurement
        for _ in range(a.runs):
            fns[a.only]()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return
    res: dict = {"mode": a.mode, "device": s.device, "width": a.width, "steps": a.steps,
                 "batch": a.batch, "rollouts": a.rollouts}
    if s.device == "cuda":
        res["gpu"] = torch.cuda.get_device_name()
    # interleave the arms so drift affects both alike
    times: dict[str, list[float]] = {"plain": [], "trainer": []}
    for _ in range(max(1, a.runs // 3)):
        for name, fn in fns.items():
            times[name].append(median_ms(fn, 3, s.device, warmup=1))
    res["plain_ms"] = sorted(times["plain"])[len(times["plain"]) // 2]
    res["trainer_ms"] = sorted(times["trainer"])[len(times["trainer"]) // 2]
    res["time_ratio"] = res["trainer_ms"] / res["plain_ms"]
    if s.device == "cuda":
        peaks = {}
        for name, fn in fns.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            peaks[name] = torch.cuda.max_memory_allocated() / 2**20
    else:
        peaks = {name: peak_rss_child(a, name) for name in fns}
    res["plain_peak_mib"], res["trainer_peak_mib"] = peaks["plain"], peaks["trainer"]
    res["memory_ratio"] = peaks["trainer"] / peaks["plain"]
    # rollouts per second: distinct schedules per rollout (the trainer's path) vs one schedule
    # (both through the back-end's sampler: the step-wise one for euler/heun/dpmpp_2m)
    rates = []
    for n in (int(x) for x in a.sizes.split(",")):
        ctx = s.backend.draw_contexts(n, torch.Generator().manual_seed(n))
        flow = s.policy.schedule(mode="sample",
                                 **policy_features(s.policy, s.backend, ctx)).cpu()
        sig = s.backend.model_sigmas(flow.detach())
        t_lock = median_ms(lambda: s.backend.sample_latents(ctx, sig), 1, s.device)  # noqa: B023
        t_plain = median_ms(lambda: s.backend.sample_latents(ctx, sig[0]), 1, s.device)  # noqa: B023
        rates.append({"rollouts": n, "per_second": 1000 * n / t_lock,
                      "plain_per_second": 1000 * n / t_plain})
    res["rollouts_per_second"] = rates
    print(json.dumps(res, indent=1))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"trainer_overhead_{a.mode}_{s.device}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
