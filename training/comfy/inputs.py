"""What the model and the policy read for a batch of contexts, and how rollouts are batched.

The policy's features of a context are the exact x_T ComfyUI draws for its seed and its
prompt's text conditioning (computed once per prompt and cached on disk,
:mod:`.cond_cache`), both through the ComfyUI bridge (:mod:`comfy_bridge.features`) the node
uses too. The sampler gets the same conditioning batched (plus the negative one when
``cfg != 1``) for groups of rollouts whose token counts match, in chunks that fit in memory.
The policy's encoder is sized from these features (:func:`size_encoder`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...comfy_bridge import features as cf
from ...policies.latent_encoder import PRESETS, LatentTextEncoder
from .cond_cache import Conditioning, ConditioningCache, default_cache_dir, file_identity


class ModelInputs:
    """Conditioning, noise and batching of one ComfyUI model's rollouts."""

    def __init__(self, models: Any, *, family_name: str, cfg: float, guidance: float | None,
                 negative_prompt: str, latent_shape: tuple[int, int, int], rollout_batch: int,
                 cache_dir: str | Path | None):
        self.model, self.clip = models.model, models.clip
        self.cfg, self.guidance = cfg, guidance
        self.negative_prompt = negative_prompt
        self.latent_shape = latent_shape
        self.rollout_batch = rollout_batch
        identity = "|".join(file_identity(p) for p in models.files.get("text_encoders", []))
        self.cond_cache = ConditioningCache(
            default_cache_dir() if cache_dir is None else cache_dir,
            identity=f"{family_name}|{identity}")

    def _encode(self, prompt: str) -> Conditioning:
        tokens = self.clip.tokenize(prompt)
        tokens_out, extra = self.clip.encode_from_tokens_scheduled(tokens)[0]
        return tokens_out.cpu(), {k: (v.cpu() if torch.is_tensor(v) else v)
                                  for k, v in extra.items()}

    def conditioning(self, prompt: str) -> Conditioning:
        """(tokens ``[1, T, D]``, extras incl. ``pooled_output``) for a prompt, cached."""
        return self.cond_cache.get(prompt, self._encode)

    def noise(self, seeds: torch.Tensor) -> torch.Tensor:
        """x_T ``[B, C, h, w]`` of every seed (ComfyUI's ``RandomNoise`` for it)."""
        return cf.seed_noise(self.model, [int(s) for s in seeds], self.latent_shape)

    def features(self, prompts: list[str], seeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """The policy's features of (prompt, seed) contexts."""
        conds = [self.conditioning(p) for p in prompts]
        return {"noise": self.noise(seeds), **cf.conditioning_features(conds)}

    def batched_cond(self, prompts: list[str]) -> list:
        """The positive CONDITIONING of a batch of rollouts (one row per prompt)."""
        conds = [self.conditioning(p) for p in prompts]
        extra: dict[str, Any] = {}
        for key, value in conds[0][1].items():
            if torch.is_tensor(value) and value.ndim > 0:
                extra[key] = torch.cat([c[1][key] for c in conds])
            else:
                extra[key] = value
        if self.guidance is not None:
            extra["guidance"] = float(self.guidance)
        return [[torch.cat([c[0] for c in conds]), extra]]

    def negative(self, n: int) -> list | None:
        """The negative CONDITIONING for ``n`` rollouts (None when ``cfg == 1``)."""
        if self.cfg == 1.0:
            return None
        tokens, extra = self.conditioning(self.negative_prompt)
        rep = {k: (v.expand(n, *v.shape[1:]) if torch.is_tensor(v) and v.ndim > 0 else v)
               for k, v in extra.items()}
        return [[tokens.expand(n, *tokens.shape[1:]), rep]]

    def _chunk(self, n: int) -> int:
        if self.rollout_batch > 0:
            return self.rollout_batch
        import comfy.model_management as mm

        device = self.model.load_device
        if device.type == "cpu":
            return n
        per = self.model.model.memory_required([2 if self.cfg != 1.0 else 1,
                                                *self.latent_shape])
        free = mm.get_free_memory(device) - self.model.model_size()
        return max(1, min(n, int(0.8 * free / max(per, 1))))

    def batches(self, prompts: list[str]) -> Iterator[torch.Tensor]:
        """Index tensors of the rollouts that share one batched sampler run: rollouts whose
        token counts match, in chunks that fit in memory."""
        lengths = torch.tensor([self.conditioning(p)[0].shape[1] for p in prompts])
        chunk = self._chunk(len(prompts))
        for length in lengths.unique():
            rows = torch.nonzero(lengths == length).flatten()
            for start in range(0, len(rows), chunk):
                yield rows[start:start + chunk]


def size_encoder(probe: dict[str, torch.Tensor], preset: str, family_preset: str | None,
                 latent_hw: tuple[int, int]) -> nn.Module:
    """The paper's latent + text encoder for features like ``probe``: ``preset`` (``auto``:
    the family's, ``generic`` for a family without one, falling back to ``small`` for latents
    too small for it, e.g. the digits model's 4x4)."""
    auto = preset == "auto"
    if auto:  # families without a preset: sized from the features alone
        preset = family_preset or "generic"
    if preset not in PRESETS:
        raise ValueError(f"encoder_preset must be 'auto' or one of {sorted(PRESETS)}.")
    sizes = {"latent_channels": probe["noise"].shape[1],
             "token_dim": probe["tokens"].shape[-1],
             "pooled_dim": probe["pooled"].shape[-1] if "pooled" in probe else 0}
    encoder = LatentTextEncoder.for_family(preset, **sizes)
    if auto and not encoder.fits(*latent_hw):  # tiny latents (e.g. the digits model's 4x4)
        encoder = LatentTextEncoder.for_family("small", **sizes)
    return encoder


__all__ = ["ModelInputs", "size_encoder"]
