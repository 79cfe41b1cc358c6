"""Policy features from ComfyUI data: model family, initial noise, text tokens, default sigmas.

This is the only place (with the nodes) that knows ComfyUI's data layouts:

* CONDITIONING is a list of ``[tokens [B, T, D], {"pooled_output": [B, P], ...}]`` entries;
  Flux's are T5 tokens + CLIP-L pooled, SD3's are the joint CLIP-L/G + T5 tokens + pooled.
* NOISE (from ``RandomNoise``) has ``generate_noise(latent_dict)`` and a ``seed``;
  ``SamplerCustomAdvanced`` calls it on the latent after ``fix_empty_latent_channels``, and for
  flow models with sigma_max = 1 and an empty latent that noise *is* x_T.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("learned_schedules")

#: ComfyUI model-config class name -> our model family name
FAMILY_BY_CONFIG = {"Flux": "flux-dev", "FluxSchnell": "flux-schnell", "SD3": "sd3",
                    "SDXL": "sdxl", "SD15": "sd1"}


def model_family(model) -> str:
    """Our family name for a ComfyUI MODEL (``ValueError`` for an unsupported model)."""
    config = getattr(getattr(model, "model", None), "model_config", None)
    name = type(config).__name__ if config is not None else "unknown"
    if name not in FAMILY_BY_CONFIG:
        raise ValueError(f"Learned Schedules does not support this model ({name}); supported: "
                         "Flux dev, Flux schnell, SD3.")
    return FAMILY_BY_CONFIG[name]


def is_flow_model(model) -> bool:
    """True for rectified-flow models (sigma in [0, 1], sigma = t)."""
    import comfy.model_sampling as ms

    sampling = model.get_model_object("model_sampling")
    return isinstance(sampling, (ms.ModelSamplingDiscreteFlow, ms.ModelSamplingFlux))


def initial_noise(model, noise, latent: dict) -> torch.Tensor:
    """Rebuild exactly the x_T that ``SamplerCustomAdvanced`` will draw for this latent."""
    import comfy.sample

    samples = latent.get("samples") if isinstance(latent, dict) else None
    if samples is None:
        raise ValueError("The latent_image input has no samples.")
    expected = model.get_model_object("latent_format").latent_channels
    fixed = comfy.sample.fix_empty_latent_channels(model, samples)
    if fixed.shape[1] != expected:
        raise ValueError(f"The latent has {fixed.shape[1]} channels but this model uses "
                         f"{expected}; use an empty latent made for this model.")
    latent = {**latent, "samples": fixed}
    return noise.generate_noise(latent)


def text_features(conditioning) -> dict[str, torch.Tensor | None]:
    """Text tokens ``[1, T, D]`` and pooled output ``[1, P]`` (or None) of the first entry."""
    if not conditioning:
        raise ValueError("The positive conditioning is empty; connect a text encoder output.")
    tokens, extra = conditioning[0][0], conditioning[0][1]
    if not torch.is_tensor(tokens) or tokens.ndim != 3 or tokens.shape[1] == 0:
        raise ValueError("The positive conditioning has no text tokens.")
    pooled = extra.get("pooled_output") if isinstance(extra, dict) else None
    return {"tokens": tokens[:1].float(),
            "pooled": None if pooled is None else pooled[:1].float()}


def default_sigmas(model, steps: int, scheduler: str = "simple") -> torch.Tensor:
    """The model's own schedule (``BasicScheduler``) for the same step count."""
    import comfy.samplers

    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler,
                                           steps).cpu()


def flow_to_model_sigmas(model, flow: torch.Tensor) -> torch.Tensor:
    """Policy schedules in flow time (``[..., L+1]`` from 1 to 0) -> the model's sigmas."""
    from ..policies.schedule import flow_to_sigmas

    lo, hi = sigma_range(model)
    return flow * hi if is_flow_model(model) else flow_to_sigmas(flow, "loglinear", lo, hi)


def sigma_range(model) -> tuple[float, float]:
    sampling = model.get_model_object("model_sampling")
    return float(sampling.sigma_min), float(sampling.sigma_max)
