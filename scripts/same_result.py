"""Same seed, same result: train a fixed set of runs through the CLI and print a hash of each.

A structural change (a refactor) must not change what a seed trains. Run this before and after
and compare the JSON it writes: each run's sha256 over the final policy's tensors, over the last
checkpoint's tensors (policy, optimiser, RNG, algorithm state) and over ``metrics.csv`` without
its ``seconds`` column. Only CLI flags are used, so the same script runs on both sides.

Usage: ``python scripts/same_result.py --out hashes.json [--only testbed|comfy] [--work DIR]``.
The ComfyUI runs use the tests' tiny random-weight SD3 and Flux (built once into ``--work``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]

TESTBED_RUNS: dict[str, list[str]] = {
    "testbed_rloo_L3": ["--algo", "reinforce", "--baseline", "rloo", "--steps", "3",
                        "--iterations", "300"],
    "testbed_js_L5": ["--algo", "reinforce", "--baseline", "js", "--steps", "5",
                      "--iterations", "200"],
    "testbed_js_group": ["--algo", "reinforce", "--baseline", "js_group", "--steps", "3",
                         "--iterations", "100"],
    "testbed_ppo_L3": ["--algo", "ppo", "--baseline", "rloo", "--steps", "3",
                       "--iterations", "300"],
    "testbed_softplus": ["--algo", "reinforce", "--baseline", "xctx", "--concentration",
                         "softplus", "--normalize-advantages", "--entropy-coef", "0.01",
                         "--steps", "4", "--iterations", "100"],
    "testbed_art_direct": ["--method", "art", "--art.solver", "direct", "--steps", "5",
                           "--iterations", "20", "--batch", "8"],
    "testbed_art_ac": ["--method", "art", "--steps", "5", "--iterations", "30", "--batch", "4",
                       "--art.grid", "20"],
    "testbed_adagen": ["--algo", "adagen", "--steps", "3", "--iterations", "20", "--batch",
                       "8"],
}
COMMON = ["--seed", "3", "--eval-every", "0", "--eval-contexts", "32", "--checkpoint-every",
          "1000", "--no-progress"]


def tensors_hash(path: Path) -> str:
    """sha256 over a safetensors file's tensors (names sorted), not its JSON header."""
    h = hashlib.sha256()
    for name, t in sorted(load_file(str(path)).items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        flat = t.reshape(-1).contiguous()
        h.update(flat.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def metrics_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            row.pop("seconds", None)
            h.update(json.dumps(row, sort_keys=True).encode())
    return h.hexdigest()


def run_hashes(run_dir: Path) -> dict[str, str]:
    states = sorted(run_dir.glob("checkpoints/state_*.safetensors"))
    return {"policy": tensors_hash(run_dir / "policy.safetensors"),
            "checkpoint": tensors_hash(states[-1]) if states else "",
            "metrics": metrics_hash(run_dir / "metrics.csv")}


def comfy_runs(work: Path) -> dict[str, list[str]]:
    sys.path.insert(0, str(REPO / "tests"))
    from comfy_env import (
        TINY_FLUX_TE_OPTIONS,
        build_tiny_flux_file,
        import_comfy,
        write_tiny_flux_text_encoders,
        write_tiny_sd3_set,
    )

    cui = import_comfy(work / "base")
    models = cui.base / "models"
    if not (models / "diffusion_models" / "sd3_same.safetensors").exists():
        write_tiny_sd3_set(models, "sd3_same.safetensors", "tiny_vae.safetensors")
        cfg = build_tiny_flux_file(models / "diffusion_models" / "flux_same.safetensors")
        (work / "flux_unet.json").write_text(json.dumps(cfg))
        (work / "flux_te.json").write_text(json.dumps(TINY_FLUX_TE_OPTIONS))
        te = write_tiny_flux_text_encoders(models / "text_encoders")
        (work / "flux_te_files.txt").write_text(",".join(te))
    (work / "prompts.txt").write_text("\n".join(
        f"a {c} {o}" for c in ("red", "green", "blue") for o in ("cat", "car", "house")) + "\n")
    sd3 = ["--backend", "comfy", "--diffusion-model", "sd3_same.safetensors",
           "--text-encoders", "clip_l.safetensors", "--vae", "tiny_vae.safetensors",
           "--prompts", str(work / "prompts.txt"), "--held-out", "3", "--reward", "reference",
           "--reference-steps", "8", "--width", "64", "--height", "64", "--steps", "3",
           "--batch", "2", "--rollouts", "2", "--iterations", "6", "--encoder-preset", "tiny",
           "--cache-dir", str(work / "cond_cache"), "--pool-size", "64", "--hidden", "32",
           "--sample-every", "0", "--eval-contexts", "3"]
    flux = [*sd3[:3], "flux_same.safetensors", "--unet-config", str(work / "flux_unet.json"),
            "--text-encoder-options", str(work / "flux_te.json"), "--text-encoders",
            (work / "flux_te_files.txt").read_text(), *sd3[6:]]
    return {
        "sd3_rloo_euler": [*sd3, "--baseline", "rloo", "--sampler", "euler"],
        "sd3_rloo_heun": [*sd3, "--baseline", "rloo", "--sampler", "heun"],
        "sd3_rloo_dpmpp_2m": [*sd3, "--baseline", "rloo", "--sampler", "dpmpp_2m"],
        "sd3_ppo": [*sd3, "--algo", "ppo", "--baseline", "rloo"],
        "sd3_js_euler_ancestral": [*sd3, "--baseline", "js", "--sampler", "euler_ancestral",
                                   "--iterations", "3"],
        "sd3_adagen": [*sd3, "--algo", "adagen", "--iterations", "3"],
        "sd3_art_direct": [*sd3, "--method", "art", "--art.solver", "direct", "--iterations",
                           "2", "--art.grid", "8"],
        "flux_rloo": [*flux, "--baseline", "rloo", "--iterations", "4"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file for the hashes")
    parser.add_argument("--only", choices=("testbed", "comfy"))
    parser.add_argument("--work", help="folder for the tiny models (default: a temp folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    from learned_schedules.training import cli

    work = Path(args.work or tempfile.mkdtemp(prefix="same_result_"))
    work.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[str]] = {}
    if args.only != "comfy":
        runs.update(TESTBED_RUNS)
    if args.only != "testbed":
        runs.update(comfy_runs(work))
    out: dict[str, dict[str, str]] = {}
    for name, flags in runs.items():
        run_dir = work / "runs" / name
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)
        rc = cli.main(["train", *flags, *COMMON, "--out", str(work / "runs"), "--run-name",
                       name])
        out[name] = run_hashes(run_dir) if rc == 0 else {"error": f"exit {rc}"}
        print(name, out[name], flush=True)
    Path(args.out).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
