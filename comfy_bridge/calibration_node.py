"""What the Calibrate Schedule node does besides the calibration itself (which is
:func:`.calibration.calibrate`): its contexts (the start noise of ``contexts`` seeds, the
conditioning given or the bundled calibration prompts encoded by a CLIP), the one-line
summary (latent PSNR to the many-step result, calibrated vs the model's default), and the
policy file's checks (a plain file stem; never overwrite a file of another origin unless
asked).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..calibration.problem import psnr_from_mse
from ..policies.policy_file import read_metadata
from . import calibration as cc
from .features import seed_noise
from .sigmas import default_flow

log = logging.getLogger("learned_schedules")

BUNDLED_PROMPTS = Path(__file__).resolve().parents[1] / "training" / "prompts" / \
    "calibration.txt"
"""The bundled calibration prompts (read as a file: the node imports nothing from
``training``)."""
NODE_ORIGIN = "Calibrate Schedule node"
"""``calibration.origin`` in the metadata of the files the node writes (the node overwrites
those without being asked)."""

_SUMMARIES: dict[str, dict[str, Any]] = {}
"""Summaries by calibration key (a remembered calibration gets its summary with no model
call)."""


def bundled_prompts(path: Path = BUNDLED_PROMPTS) -> list[str]:
    """The prompts of a ``.txt`` prompt file (one a line; ``#`` lines are comments)."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def batch_conditioning(conds: list[list]) -> list:
    """One CONDITIONING whose rows are the first entries of N batch-1 conditionings (their
    token counts must agree; plain options are taken from the first)."""
    first = conds[0][0]
    extra: dict[str, Any] = {}
    for key, value in first[1].items():
        if torch.is_tensor(value) and value.ndim > 0:
            extra[key] = torch.cat([c[0][1][key] for c in conds])
        else:
            extra[key] = value
    return [[torch.cat([c[0][0] for c in conds]), extra]]


def prompt_conditioning(clip: Any, n: int) -> tuple[list, list]:
    """(positive, negative) CONDITIONING of the first ``n`` bundled prompts (cycled) and of
    the empty prompt, encoded by ``clip``; only the prompts that share the most common token
    count are kept (a calibration runs as one batch): positive has ``m <= n`` rows."""
    prompts = bundled_prompts()
    chosen = [prompts[i % len(prompts)] for i in range(n)]
    conds = [clip.encode_from_tokens_scheduled(clip.tokenize(p)) for p in chosen]
    lengths = [int(c[0][0].shape[1]) for c in conds]
    common = max(set(lengths), key=lengths.count)
    kept = [c for c, length in zip(conds, lengths, strict=True) if length == common]
    if len(kept) < n:
        log.info("Calibrate Schedule: %d of %d prompts share a token count; calibrating on "
                 "them", len(kept), n)
    return batch_conditioning(kept), clip.encode_from_tokens_scheduled(clip.tokenize(""))


def context_noise(model: Any, latent: dict, seed: int, n: int) -> torch.Tensor:
    """The start noise ``[n, C, h, w]`` of seeds ``seed .. seed+n-1`` for the latent's size
    (ComfyUI's ``RandomNoise`` for each seed, what the sampler draws)."""
    import comfy.sample

    samples = latent.get("samples") if isinstance(latent, dict) else None
    if samples is None:
        raise ValueError("The latent_image input has no samples.")
    shape = comfy.sample.fix_empty_latent_channels(model, samples[:1]).shape[1:]
    return seed_noise(model, range(int(seed), int(seed) + n), shape)


def policy_file_path(folder: str, name: str) -> Path:
    """``<folder>/<name>.safetensors`` (``ValueError`` unless ``name`` is a plain file
    stem)."""
    stem = name.strip().removesuffix(".safetensors")
    if not stem or any(c in stem for c in "/\\:") or stem.startswith("."):
        raise ValueError(f"The name must be a plain file name such as 'my_model_8steps', got "
                         f"{name!r}.")
    return Path(folder) / f"{stem}.safetensors"


def check_overwrite(path: Path, overwrite: bool) -> None:
    """``ValueError`` when ``path`` exists, was not written by this node, and ``overwrite``
    is off."""
    if overwrite or not path.exists():
        return
    try:
        origin = (read_metadata(path).get("calibration") or {}).get("origin")
    except (ValueError, OSError, AttributeError):
        origin = None
    if origin != NODE_ORIGIN:
        raise ValueError(f"{path.name} already exists in {path.parent} and was not written by "
                         "Calibrate Schedule; choose another name or turn on overwrite.")


def summary(model: Any, positive: Any, negative: Any, cfg: float, noise: torch.Tensor,
            result: Any, steps: int, teacher_steps: int) -> dict[str, Any]:
    """Mean latent PSNR (peak 1) to the many-step result on the calibration contexts, of the
    calibrated schedule and of the model's default (``simple``) for ``steps``, and a line
    saying so (``2 steps`` model calls, or none for a calibration seen before)."""
    key = result.key
    if key and key in _SUMMARIES:
        return _SUMMARIES[key]
    flows = {"calibrated": result.schedules[steps].flow,
             "default": default_flow(model, steps, "simple")}
    latents = cc.sample_few_step(model, positive, negative, cfg, noise, flows)
    final = model.model.process_latent_out(result.teacher.final.float()).cpu()  # as latents
    psnr = {k: float(psnr_from_mse((v - final).pow(2).flatten(1).mean(1).double()).mean())
            for k, v in latents.items()}
    n = int(noise.shape[0])
    out = {"psnr_calibrated": psnr["calibrated"], "psnr_default": psnr["default"],
           "contexts": n, "teacher_steps": teacher_steps, "calls_per_context": result.calls,
           "seconds": result.seconds,
           "line": (f"latent PSNR to {teacher_steps}-step: calibrated {psnr['calibrated']:.2f} "
                    f"dB vs default {psnr['default']:.2f} dB on {n} contexts")}
    if key:
        if len(_SUMMARIES) >= cc.RESULT_LIMIT:
            _SUMMARIES.pop(next(iter(_SUMMARIES)))
        _SUMMARIES[key] = out
    return out


__all__ = ["BUNDLED_PROMPTS", "NODE_ORIGIN", "bundled_prompts", "batch_conditioning",
           "prompt_conditioning", "context_noise", "policy_file_path", "check_overwrite",
           "summary"]
