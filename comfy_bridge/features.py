"""Policy features from ComfyUI data: model family, initial noise x_T, text features.

The only place (with :mod:`.sigmas`) that knows ComfyUI's data layouts, used by the node and
by the trainer alike:

* CONDITIONING is a list of ``[tokens [B, T, D], {"pooled_output": [B, P], ...}]`` entries;
  Flux's are T5 tokens + CLIP-L pooled, SD3's are the joint CLIP-L/G + T5 tokens + pooled.
* NOISE (from ``RandomNoise``) has ``generate_noise(latent_dict)`` and a ``seed``;
  ``SamplerCustomAdvanced`` calls it on the latent after ``fix_empty_latent_channels``, and for
  flow models with sigma_max = 1 and an empty latent that noise *is* x_T. The trainer draws
  its x_T through the same object (``Noise_RandomNoise(seed)``, what ``RandomNoise`` and
  ``SamplerCustom`` use).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from ..policies.families import I2V_EXPERT_BOUNDARY, Family, family_for_model_config
from .sigmas import is_flow_sampling, sampling_of

log = logging.getLogger("learned_schedules")


def model_family_info(model: Any) -> Family:
    """The family row (:mod:`policies.families`) of a ComfyUI MODEL; ``ValueError`` (a plain
    sentence) for a model the pack does not support (audio, 3D, video, anything unknown). The
    config class's bases are walked, so a subclass of a supported family resolves to it."""
    return family_for_model_config(model)


def model_family(model: Any) -> str:
    """Our family name (``flux-dev``, ``sd3``...) of a ComfyUI MODEL (``ValueError`` for an
    unsupported model)."""
    return model_family_info(model).name


def is_flow_model(model: Any) -> bool:
    """True for rectified-flow models (sigma in [0, 1], sigma = t)."""
    return is_flow_sampling(sampling_of(model))


def takes_image(model: Any) -> bool:
    """Whether a video MODEL's input takes an image beside the noise (image-to-video: its
    input has more channels than its latent, e.g. Wan's 36 = 16 + 4 mask + 16 image)."""
    config = getattr(getattr(model, "model", None), "model_config", None)
    unet = getattr(config, "unet_config", {}) or {}
    width = unet.get("in_dim", unet.get("in_channels"))
    channels = model.get_model_object("latent_format").latent_channels
    return width is not None and int(width) > channels


def default_expert_boundary(model: Any) -> float:
    """The model sigma where a two-expert model's high-noise expert hands over: its family's
    (Wan 2.2 text-to-video: 0.875), or 0.9 for an image-to-video model. ``ValueError`` for a
    family without experts."""
    family = model_family_info(model)
    if family.expert_boundary is None:
        raise ValueError(f"{family.display} has no high-noise / low-noise experts; give "
                         "the expert boundary explicitly or drop the low-noise model.")
    return I2V_EXPERT_BOUNDARY if takes_image(model) else family.expert_boundary


def _rng_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def initial_noise(model: Any, noise: Any, latent: dict) -> torch.Tensor:
    """Exactly the x_T that ``SamplerCustomAdvanced`` draws from ``noise`` for this latent.

    ComfyUI's ``prepare_noise`` reseeds the global torch RNGs; they are restored afterwards,
    so drawing x_T never changes anyone else's random stream.
    """
    import comfy.sample

    samples = latent.get("samples") if isinstance(latent, dict) else None
    if samples is None:
        raise ValueError("The latent_image input has no samples.")
    expected = model.get_model_object("latent_format").latent_channels
    fixed = comfy.sample.fix_empty_latent_channels(model, samples)
    if fixed.shape[1] != expected:
        raise ValueError(f"The latent has {fixed.shape[1]} channels but this model uses "
                         f"{expected}; use an empty latent made for this model.")
    with torch.random.fork_rng(devices=_rng_devices()):
        return noise.generate_noise({**latent, "samples": fixed})


def seed_noise(model: Any, seeds: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """x_T ``[N, *shape]`` of an empty latent ``[1, *shape]`` per seed, through ComfyUI's own
    ``Noise_RandomNoise`` (what ``RandomNoise`` / ``SamplerCustom`` draw for that seed)."""
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise

    empty = {"samples": torch.zeros(1, *shape)}
    return torch.cat([initial_noise(model, Noise_RandomNoise(int(s)), empty) for s in seeds])


def conditioning_features(entries: Sequence[tuple[torch.Tensor, dict]]
                          ) -> dict[str, torch.Tensor]:
    """Text features of N conditionings (one ``(tokens [B, T, D], extras)`` entry each; row 0
    is used), of any token width D: ``tokens [N, T_max, D]`` (float32, zero-padded),
    ``token_mask [N, T_max]`` when the token counts differ or an encoder gives an
    ``attention_mask`` (Lumina 2, Chroma, HunyuanImage), and ``pooled [N, P]`` when every
    entry has a pooled output (CLIP families; Flux.2, Qwen-Image, Z-Image... have none)."""
    lengths = [int(e[0].shape[1]) for e in entries]
    t_max = max(lengths)
    tokens = torch.zeros(len(entries), t_max, entries[0][0].shape[-1])
    for i, (tok, _) in enumerate(entries):
        tokens[i, :tok.shape[1]] = tok[0].float()
    feats = {"tokens": tokens}
    mask = torch.arange(t_max)[None, :] < torch.tensor(lengths)[:, None]
    masked = len(set(lengths)) > 1
    for i, (_, extra) in enumerate(entries):  # the encoder's own mask (Lumina 2, Chroma...)
        given = extra.get("attention_mask") if isinstance(extra, dict) else None
        if torch.is_tensor(given) and given.ndim == 2 and given.shape[1] == lengths[i]:
            mask[i, :lengths[i]] &= given[0].bool().cpu()
            masked = True
    if masked:
        mask[mask.sum(1) == 0, 0] = True  # never an all-masked row (attention gives NaN)
        feats["token_mask"] = mask
    pooled = [e[1].get("pooled_output") if isinstance(e[1], dict) else None for e in entries]
    if all(p is not None for p in pooled):
        feats["pooled"] = torch.cat([p[:1].float() for p in pooled])
    return feats


def text_features(conditioning: Any) -> dict[str, torch.Tensor]:
    """Text features ``tokens [1, T, D]`` (and ``pooled [1, P]`` when present) of a
    CONDITIONING's first entry; ``ValueError`` for an empty one."""
    if not conditioning:
        raise ValueError("The positive conditioning is empty; connect a text encoder output.")
    tokens, extra = conditioning[0][0], conditioning[0][1]
    if not torch.is_tensor(tokens) or tokens.ndim != 3 or tokens.shape[1] == 0:
        raise ValueError("The positive conditioning has no text tokens.")
    return conditioning_features([(tokens, extra)])


__all__ = ["model_family_info", "model_family", "is_flow_model", "takes_image",
           "default_expert_boundary", "initial_noise", "seed_noise",
           "conditioning_features", "text_features"]
