"""Video models: the Learned Schedule node and the Learned Sampler's per-step cost, as ratios
to one denoiser step of the same model, in one process (medians after warm-up).

* ``--mode tiny`` (CPU, default): every tiny video model of ``tests/tiny_families.py`` (Wan
  2.1 / 2.2 A14B, Wan 2.2 5B, HunyuanVideo 1.5, LTX-Video) at a small latent ``[1, C, T, H,
  W]``, loaded through UNETLoader's detection, with CONDITIONING of the real encoders' shapes.
  ``node``: the whole Learned Schedule node (noise rebuild, features, a ``generic``-preset
  Dirichlet policy, resampling, validation) ÷ one ``SamplerCustomAdvanced`` euler step
  (``BasicGuider``: one model call). ``sampler``: ``SamplerCustomAdvanced`` over ``steps``
  euler steps with the Learned Sampler (an AdaGen step policy, ``generic`` preset) against
  ``KSamplerSelect("euler")``: ``(t_learned - t_euler) / steps`` ÷ ``t_euler / steps``. Tiny
  models make the denoiser step unrealistically cheap: upper bounds.
* ``--mode wan-real`` (a GPU, when one is lent): one real-size Wan 2.2 A14B expert (ComfyUI's
  own ``WanModel``: dim 5120, 40 layers, 40 heads, FFN 13824; random bf16 weights) at 480p x
  81 frames (latent ``[1, 16, 21, 60, 104]``, 512 umT5 tokens): one forward against the
  node's policy path (``generic`` preset on those features, resampling, validation) and the
  AdaGen actor's per-step call. The issue's targets: node <= 0.5 %, per step <= 1 %.

``--threads`` sets torch's CPU threads (default 1).

Usage: ``python bench/video_overhead.py --mode tiny|wan-real [--device cuda] [--smoke]
[--steps 8] [--runs 5] [--threads 1] [--out bench/results]``.
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

TINY_KEYS = ("wan", "wan2.2-5b", "hunyuan-video-1.5", "ltxv")
WAN_A14B = {"dim": 5120, "ffn_dim": 13824, "num_heads": 40, "num_layers": 40}
"""One Wan 2.2 A14B expert (as Wan 2.1 14B)."""
LATENT_480P_81 = (1, 16, 21, 60, 104)
"""480p (832 x 480) x 81 frames through Wan's VAE (8x spatial, 4x temporal)."""
SMOKE = ({"dim": 128, "ffn_dim": 256, "num_heads": 1, "num_layers": 1}, (1, 16, 3, 8, 8), 16)
"""``--smoke``: the same code path at tiny sizes (a CPU check of the script)."""


def _encoder(feats: dict[str, torch.Tensor]):
    from learned_schedules.policies.latent_encoder import LatentTextEncoder

    return LatentTextEncoder.for_family(
        "generic", latent_channels=int(feats["noise"].shape[1]),
        token_dim=int(feats["tokens"].shape[-1]),
        pooled_dim=int(feats["pooled"].shape[-1]) if "pooled" in feats else 0)


def bench_tiny(runs: int, steps: int) -> dict:
    from tiny_families import TINY_FAMILIES, build_tiny, load_tiny, shaped_conditioning

    from comfy_env import import_comfy
    from learned_schedules.comfy_bridge.features import initial_noise, text_features
    from learned_schedules.comfy_bridge.sigmas import default_sigmas
    from learned_schedules.policies.dirichlet import DirichletPolicy
    from learned_schedules.policies.policy_file import save_policy
    from learned_schedules.policies.stepwise import StepPolicy

    cui = import_comfy(Path(tempfile.mkdtemp()))
    from learned_schedules.nodes import extension, sampler_nodes, schedule_nodes

    extension.register_policy_folder()
    models = cui.base / "models"
    (models / "diffusion_models").mkdir(parents=True, exist_ok=True)
    ncs, rows = cui.ncs, []
    euler = ncs.KSamplerSelect.execute("euler").result[0]
    for key in TINY_KEYS:
        spec = TINY_FAMILIES[key]
        model = load_tiny(spec, build_tiny(spec, models / "diffusion_models"
                                                 / f"{key}.safetensors"))
        cond = shaped_conditioning(spec)
        latent = {"samples": torch.zeros(1, *spec.latent)}
        noise = ncs.RandomNoise.execute(1).result[0]
        feats = {"noise": initial_noise(model, noise, latent), **text_features(cond)}
        torch.manual_seed(0)
        save_policy(models / "learned_schedules" / f"{key}.safetensors",
                    DirichletPolicy(_encoder(feats), 20, head_hidden=256),
                    method="dirichlet-reinforce", model_family=spec.family)
        save_policy(models / "learned_schedules" / f"{key}_adagen.safetensors",
                    StepPolicy(_encoder(feats), steps, hidden=128), method="adagen",
                    model_family=spec.family)
        guider = ncs.BasicGuider.execute(model, cond).result[0]

        def run(sampler, sigmas, guider=guider, latent=latent):
            fresh = ncs.RandomNoise.execute(1).result[0]
            return ncs.SamplerCustomAdvanced.execute(fresh, guider, sampler, sigmas, latent)

        one, many = default_sigmas(model, 1), default_sigmas(model, steps)
        step_ms = median_ms(lambda: run(euler, one), runs, "cpu")  # noqa: B023
        node_ms = median_ms(lambda: schedule_nodes.learned_sigmas(  # noqa: B023
            model, cond, noise, latent, f"{key}.safetensors", 0, "mean", 1.0), runs, "cpu")  # noqa: B023
        learned = sampler_nodes.LearnedSampler.execute(f"{key}_adagen.safetensors",
                                                       cond).result[0]
        base = median_ms(lambda: run(euler, many), runs, "cpu") / steps  # noqa: B023
        ours = median_ms(lambda: run(learned, many), runs, "cpu") / steps  # noqa: B023
        rows.append({"family": key, "latent": [1, *spec.latent],
                     "model_params_M": sum(p.numel() for p in model.model.parameters()) / 1e6,
                     "step_ms": step_ms, "node_ms": node_ms, "node_ratio": node_ms / step_ms,
                     "sampler_step_ms": base, "sampler_overhead_ms": ours - base,
                     "sampler_overhead_ratio": (ours - base) / base})
    return {"mode": "tiny", "device": "cpu", "threads": torch.get_num_threads(),
            "steps": steps, "rows": rows,
            "note": "tiny random-weight models: the step is unrealistically cheap (upper "
                    "bounds); real-size Wan 2.2 numbers need --mode wan-real on a GPU"}


def bench_wan_real(runs: int, device: str, smoke: bool = False) -> dict:
    """One real-size Wan 2.2 A14B expert (module docstring); ``smoke``: tiny sizes."""
    from comfy_env import comfyui_path

    sys.path.insert(0, str(comfyui_path()))
    from comfy.cli_args import args

    args.cpu = device == "cpu"
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    from learned_schedules.policies.actors import StepState
    from learned_schedules.policies.dirichlet import DirichletPolicy
    from learned_schedules.policies.schedule import resample_schedule, validate_schedule
    from learned_schedules.policies.stepwise import StepPolicy

    sizes, shape, tokens = SMOKE if smoke else (WAN_A14B, LATENT_480P_81, 512)
    dev = torch.device(device)
    with torch.device(dev):
        net = WanModel(model_type="t2v", patch_size=(1, 2, 2), in_dim=16, freq_dim=256,
                       text_dim=4096, out_dim=16, dtype=torch.bfloat16,
                       operations=comfy.ops.manual_cast, **sizes)
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.02)
    net.eval()
    x = torch.randn(*shape, device=dev, dtype=torch.bfloat16)
    ctx = torch.randn(1, tokens, 4096, device=dev, dtype=torch.bfloat16)
    t = torch.tensor([700.0], device=dev, dtype=torch.bfloat16)
    feats = {"noise": x.float(), "tokens": ctx.float()}
    torch.manual_seed(0)
    pol = DirichletPolicy(_encoder(feats), 20, head_hidden=256).to(dev).eval()
    step_pol = StepPolicy(_encoder(feats), 20, hidden=128).to(dev).eval()

    def step():
        with torch.inference_mode():
            net(x, t, ctx)

    def node():
        with torch.inference_mode():
            flow = pol.schedule(feats)[0]
            validate_schedule(resample_schedule(flow.double().cpu(), 20).float())

    actor = step_pol.actor(feats)
    state = StepState(0, 20, x.float(), torch.ones(1, dtype=torch.float64), x.float() * 0.5)

    def act():
        with torch.inference_mode():
            actor.next_sigma(state)

    step_ms = median_ms(step, runs, device)
    node_ms, act_ms = median_ms(node, runs, device), median_ms(act, runs, device)
    return {"mode": "wan-real", "device": device,
            "gpu": torch.cuda.get_device_name() if device == "cuda" else "",
            "wan_params_B": sum(p.numel() for p in net.parameters()) / 1e9,
            "latent": list(shape), "smoke": smoke, "step_ms": step_ms, "node_ms": node_ms,
            "node_ratio": node_ms / step_ms, "sampler_step_ms": act_ms,
            "sampler_ratio": act_ms / step_ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["tiny", "wan-real"], default="tiny")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--smoke", action="store_true",
                    help="--mode wan-real at tiny sizes (checks the script on a CPU)")
    ap.add_argument("--out", default="bench/results")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.mode == "tiny":
        res, name = bench_tiny(a.runs, a.steps), "video_overhead_tiny_cpu.json"
    else:
        res = bench_wan_real(a.runs, a.device, a.smoke)
        name = f"video_overhead_wan-real{'-smoke' if a.smoke else ''}_{a.device}.json"
    print(json.dumps(res, indent=1))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
