"""Learned Schedule node time as a ratio to one denoiser step of the same model.

Two settings, each measured in one process (median of N runs after warm-up):

* ``--mode tiny`` (CPU, default): the whole node (``learned_sigmas``: noise rebuild, features
  from CONDITIONING, policy, resampling, validation) on the tiny SD3 of the tests, against one
  ``SamplerCustomAdvanced`` step of that model. Tiny models make the step unrealistically
  cheap, so this ratio is an upper bound.
* ``--mode flux-real`` (GPU when lent): a real-size Flux-dev transformer (hidden 3072, 19
  double + 38 single blocks, random bf16 weights, ComfyUI's own Flux class) at 1024x1024
  (latent 1x16x128x128, 512 T5 tokens) against the policy with the ``flux`` preset plus the
  schedule maths and validation the node runs.

* ``--mode family --family KEY`` (CPU): the whole node on a tiny model of any family of
  ``tests/tiny_families.py`` (``sdxl``, ``qwen-image``...) loaded through its row's path, with
  CONDITIONING of the real encoders' shapes and a policy sized from them (the ``generic``
  preset the trainer picks for families without one), against one ``SamplerCustomAdvanced``
  step (``BasicGuider``: one model call) of that model, on a ``--side`` x ``--side`` latent.
  Like ``tiny``, an upper bound: the tiny model's step is unrealistically cheap.

``--threads`` sets torch's CPU threads (default 1).

Usage: ``python bench/node_overhead.py --mode tiny|flux-real|family [--family sdxl]
[--device cuda] [--threads N] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from timing import median_ms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def bench_tiny(runs: int) -> dict:
    from comfy_env import build_clip_l, build_tiny_sd3, import_comfy
    from learned_schedules.policies.dirichlet import DirichletPolicy
    from learned_schedules.policies.latent_encoder import LatentTextEncoder
    from learned_schedules.policies.policy_file import save_policy

    base = Path(tempfile.mkdtemp())
    cui = import_comfy(base)
    from learned_schedules.nodes import extension, schedule_nodes

    extension.register_policy_folder()
    models = base / "models"
    (models / "diffusion_models").mkdir(parents=True, exist_ok=True)
    (models / "text_encoders").mkdir(parents=True, exist_ok=True)
    build_tiny_sd3(models / "diffusion_models" / "sd3.safetensors")
    build_clip_l(models / "text_encoders" / "clip_l.safetensors")
    pol = DirichletPolicy(LatentTextEncoder.for_family("sd3"), 20, head_hidden=256)
    save_policy(models / "learned_schedules" / "p.safetensors", pol,
                method="dirichlet-reinforce", model_family="sd3")
    model = cui.nodes.UNETLoader().load_unet("sd3.safetensors", "default")[0]
    clip = cui.nodes.CLIPLoader().load_clip("clip_l.safetensors", type="sd3")[0]
    cond = cui.nodes.CLIPTextEncode().encode(clip, "a photo of a cat")[0]
    latent = {"samples": torch.zeros(1, 16, 32, 32)}
    noise = cui.ncs.RandomNoise.execute(1).result[0]
    node = lambda: schedule_nodes.learned_sigmas(model, cond, noise, latent, "p.safetensors",  # noqa: E731
                                                 0, "mean", 1.0)
    guider = cui.ncs.BasicGuider.execute(model, cond).result[0]
    sampler = cui.ncs.KSamplerSelect.execute("euler").result[0]
    one = torch.tensor([1.0, 0.0])
    step = lambda: cui.ncs.SamplerCustomAdvanced.execute(noise, guider, sampler, one, latent)  # noqa: E731
    node_ms, step_ms = median_ms(node, runs, "cpu"), median_ms(step, runs, "cpu")
    return {"mode": "tiny", "device": "cpu", "latent": [1, 16, 32, 32], "node_ms": node_ms,
            "step_ms": step_ms, "ratio": node_ms / step_ms,
            "note": "tiny SD3 (1.9M params): the step is unrealistically cheap"}


def bench_family(runs: int, key: str, side: int) -> dict:
    """The whole node vs one model call on the tiny model ``key`` (module docstring)."""
    from tiny_families import TINY_FAMILIES, build_tiny, load_tiny, shaped_conditioning

    from comfy_env import import_comfy
    from learned_schedules.comfy_bridge.features import initial_noise, text_features
    from learned_schedules.policies.dirichlet import DirichletPolicy
    from learned_schedules.policies.latent_encoder import LatentTextEncoder
    from learned_schedules.policies.policy_file import save_policy

    spec = TINY_FAMILIES[key]
    base = Path(tempfile.mkdtemp())
    cui = import_comfy(base)
    from learned_schedules.nodes import extension, schedule_nodes

    extension.register_policy_folder()
    models = base / "models"
    (models / "diffusion_models").mkdir(parents=True, exist_ok=True)
    model = load_tiny(spec, build_tiny(spec, models / "diffusion_models" / f"{key}.safetensors"))
    cond = shaped_conditioning(spec)
    shape = (1, spec.latent[0], side, side)  # what an empty-latent node gives
    latent = {"samples": torch.zeros(shape)}
    noise = cui.ncs.RandomNoise.execute(1).result[0]
    feats = {"noise": initial_noise(model, noise, latent), **text_features(cond)}
    enc = LatentTextEncoder.for_family(
        "generic", latent_channels=feats["noise"].shape[1], token_dim=feats["tokens"].shape[-1],
        pooled_dim=feats["pooled"].shape[-1] if "pooled" in feats else 0)
    pol = DirichletPolicy(enc, 20, head_hidden=256)
    save_policy(models / "learned_schedules" / "p.safetensors", pol,
                method="dirichlet-reinforce", model_family=spec.family)
    node = lambda: schedule_nodes.learned_sigmas(model, cond, noise, latent, "p.safetensors",  # noqa: E731
                                                 0, "mean", 1.0)
    guider = cui.ncs.BasicGuider.execute(model, cond).result[0]
    sampler = cui.ncs.KSamplerSelect.execute("euler").result[0]
    from learned_schedules.comfy_bridge.sigmas import default_sigmas

    one = default_sigmas(model, 1)
    step = lambda: cui.ncs.SamplerCustomAdvanced.execute(noise, guider, sampler, one, latent)  # noqa: E731
    node_ms, step_ms = median_ms(node, runs, "cpu"), median_ms(step, runs, "cpu")
    params = sum(p.numel() for p in model.model.diffusion_model.parameters())
    return {"mode": "family", "family": key, "device": "cpu", "threads": torch.get_num_threads(),
            "latent": list(shape), "model_params_M": params / 1e6,
            "policy_params_M": sum(p.numel() for p in pol.parameters()) / 1e6,
            "node_ms": node_ms, "step_ms": step_ms, "ratio": node_ms / step_ms,
            "note": f"tiny {key}: the step is unrealistically cheap (an upper bound)"}


def bench_flux_real(runs: int, device: str) -> dict:
    from comfy_env import comfyui_path

    sys.path.insert(0, str(comfyui_path()))
    from comfy.cli_args import args

    args.cpu = device == "cpu"
    import comfy.ops
    from comfy.ldm.flux.model import Flux

    from learned_schedules.policies.dirichlet import DirichletPolicy
    from learned_schedules.policies.latent_encoder import LatentTextEncoder
    from learned_schedules.policies.schedule import resample_schedule, validate_schedule

    dev = torch.device(device)
    with torch.device(dev):
        net = Flux(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
                   hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19,
                   depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10000, qkv_bias=True,
                   guidance_embed=True, patch_size=2, dtype=torch.bfloat16,
                   operations=comfy.ops.manual_cast)
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.02)
    net.eval()
    params = sum(p.numel() for p in net.parameters())
    x = torch.randn(1, 16, 128, 128, device=dev, dtype=torch.bfloat16)
    ctx = torch.randn(1, 512, 4096, device=dev, dtype=torch.bfloat16)
    y = torch.randn(1, 768, device=dev, dtype=torch.bfloat16)
    t = torch.tensor([0.7], device=dev, dtype=torch.bfloat16)
    g = torch.tensor([3.5], device=dev, dtype=torch.bfloat16)
    pol = DirichletPolicy(LatentTextEncoder.for_family("flux"), 20, head_hidden=256).to(dev)
    pol.eval()

    def step():
        with torch.inference_mode():
            net(x, t, ctx, y, guidance=g)

    def node():
        with torch.inference_mode():
            flow = pol.schedule(noise=x.float(), tokens=ctx.float(), pooled=y.float())[0]
            sig = resample_schedule(flow.double().cpu(), 28).float()
            validate_schedule(sig)

    step_ms, node_ms = median_ms(step, runs, device), median_ms(node, runs, device)
    return {"mode": "flux-real", "device": device,
            "gpu": torch.cuda.get_device_name() if device == "cuda" else "",
            "flux_params_B": params / 1e9, "policy_params_M":
            sum(p.numel() for p in pol.parameters()) / 1e6, "latent": [1, 16, 128, 128],
            "node_ms": node_ms, "step_ms": step_ms, "ratio": node_ms / step_ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["tiny", "flux-real", "family"], default="tiny")
    ap.add_argument("--family", default="sdxl",
                    help="--mode family: a key of tests/tiny_families.py (sdxl, qwen-image...)")
    ap.add_argument("--side", type=int, default=64, help="--mode family: the latent's side")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default="bench/results")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.mode == "family":
        res = bench_family(a.runs, a.family, a.side)
        name = f"node_overhead_family_{a.family}_cpu.json"
    else:
        res = bench_tiny(a.runs) if a.mode == "tiny" else bench_flux_real(a.runs, a.device)
        name = f"node_overhead_{a.mode}_{a.device}.json"
    print(json.dumps(res, indent=1))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
