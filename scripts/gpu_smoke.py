"""GPU smoke run of the trainer on tiny real-architecture models (for a machine with CUDA).

Builds the tests' tiny SD3 + random CLIP-L + tiny VAE and a tiny CLIP reward in
``models/rewards/clip``, then runs ``train --device cuda`` (ComfyUI on the GPU, policy on the
GPU, reward on the GPU) for a few iterations and ``eval`` on the result. Exits non-zero on any
failure. Usage: ``python scripts/gpu_smoke.py [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to smoke-test")
        return 2
    from comfy_env import build_clip_l, build_tiny_sd3, build_tiny_vae, import_comfy
    from tiny_rewards import save_clip_tokenizer, tiny_clip

    tmp = Path(a.out or tempfile.mkdtemp())
    cui = import_comfy(tmp / "base", cpu=False)
    models = cui.base / "models"
    for sub in ("diffusion_models", "text_encoders", "vae"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    build_tiny_sd3(models / "diffusion_models" / "sd3.safetensors", std=0.1)
    build_clip_l(models / "text_encoders" / "clip_l.safetensors")
    build_tiny_vae(models / "vae" / "vae.safetensors")
    tiny_clip(models / "rewards" / "clip", save_clip_tokenizer(tmp / "tok"), seed=3)
    prompts = tmp / "prompts.txt"
    prompts.write_text("\n".join(f"a photo of a {c} {o}" for c in ("red", "blue", "green")
                                 for o in ("cat", "car", "house")))
    from learned_schedules.training import cli

    name = f"gpu-{time.strftime('%Y%m%d-%H%M%S')}"
    run_args = ["train", "--backend", "comfy", "--device", "cuda", "--diffusion-model",
                "sd3.safetensors", "--text-encoders", "clip_l.safetensors", "--vae",
                "vae.safetensors", "--prompts", str(prompts), "--held-out", "3", "--reward",
                "clip", "--width", "128", "--height", "128", "--steps", "4",
                "--batch", "4", "--rollouts", "2", "--iterations", "4", "--eval-contexts", "3",
                "--sample-every", "2", "--encoder-preset", "tiny", "--cache-dir",
                str(tmp / "cache"), "--out", str(tmp / "runs"), "--run-name", name,
                "--no-progress"]
    assert cli.main(run_args) == 0
    run = tmp / "runs" / name
    assert cli.main(["eval", str(run), "--seeds", "2"]) == 0
    report = json.loads((run / "eval" / "eval.json").read_text())
    print(json.dumps({"device": torch.cuda.get_device_name(), "rows": report["rows"],
                      "files": sorted(p.name for p in run.rglob("*") if p.is_file())},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
