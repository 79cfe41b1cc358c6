"""The ComfyUI section of the trainer's config: model files, sampler, guidance, prompts, cache.

Owned here, beside the back-end that reads it; the trainer nests it as ``config.comfy`` (flags
``--cfg``, ``--diffusion-model``...; ``"comfy"`` in a run's ``config.json``). Importing this
module imports no ComfyUI.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...policies.families import FAMILIES
from ...policies.fields import check_values, option

WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")
CLIP_TYPES = ("auto", "flux", "sd3", *sorted(
    {f.clip_type for f in FAMILIES.values() if f.clip_type} - {"flux", "sd3"}))
"""``auto`` (the family row's type, :mod:`policies.families`) or a CLIP loaders' ``type``."""
SET_METRICS = ("none", "digits", "shapes")
"""Set-level measures ``eval`` can report (the ``set_metrics`` option, read by
:func:`.evaluation.set_measures_for`)."""


@dataclass
class ComfyConfig:
    """ComfyUI back-end options (``--backend comfy``): model files, sampler, prompts."""

    comfyui_path: str | None = None
    """ComfyUI folder (default: $COMFYUI_PATH, else the copy scripts/setup.sh fetched)."""
    comfyui_base: str | None = None
    """ComfyUI base directory whose models/ holds the weights (default: the ComfyUI folder)."""
    comfyui_cpu: bool = False
    """Run ComfyUI on the CPU even when a GPU is available."""
    checkpoint: str | None = None
    """Full checkpoint (name in models/checkpoints, or a path) holding model, text encoders
    and VAE; or give diffusion_model + text_encoders + vae."""
    diffusion_model: str | None = None
    """Diffusion model (name in models/diffusion_models, or a path), as UNETLoader loads it."""
    unet_config: str | None = None
    """Advanced: the diffusion model's architecture config (JSON object or .json file) for
    sizes ComfyUI's detection does not know."""
    weight_dtype: str = option("default", choices=WEIGHT_DTYPES)
    """Diffusion model weight dtype: default, fp8_e4m3fn, fp8_e4m3fn_fast or fp8_e5m2."""
    text_encoders: str | None = None
    """Comma-separated text encoder files (names in models/text_encoders, or paths), e.g.
    ``clip_l.safetensors,t5xxl_fp16.safetensors`` for Flux."""
    clip_type: str = option("auto", choices=CLIP_TYPES)
    """Text encoder type (the CLIP loaders' ``type``): auto (the model family's: flux, sd3,
    sdxl, qwen_image, lumina2, hidream...) or one of them."""
    text_encoder_options: str | None = None
    """Advanced: ComfyUI model_options for the text encoders (JSON object or .json file)."""
    vae: str | None = None
    """VAE (name in models/vae, or a path); default: the checkpoint's."""
    prompts: str | None = None
    """Prompt file: .txt (one per line), .jsonl (a "prompt" field) or .csv (a prompt column)."""
    eval_prompts: str | None = None
    """Separate held-out prompt file (default: a held_out split of prompts)."""
    held_out: float = option(0.1, ge=0)
    """Prompts held out for evaluation: a fraction (< 1) or a count (>= 1); 0 holds out seeds
    instead (every prompt is trained on and evaluated, on disjoint seed streams: for a few
    prompts, e.g. the digits model's ten)."""
    width: int = option(1024, ge=16, le=16_384)
    """Image width in pixels."""
    height: int = option(1024, ge=16, le=16_384)
    """Image height in pixels."""
    frames: int = option(0, ge=0, le=100_000)
    """Video models: the video's length in frames, as the empty-latent video nodes take it
    (0: 81, Wan's default; Wan / HunyuanVideo 1.5 use 4k+1 frames, LTX-Video 8k+1). Ignored
    by image models."""
    low_noise_model: str | None = None
    """Two-expert models (Wan 2.2 A14B): the low-noise expert's diffusion model file;
    ``diffusion_model`` is then the high-noise expert. Rollouts switch at
    ``expert_boundary``."""
    expert_boundary: float | None = option(None, gt=0, lt=1)
    """The model sigma where the high-noise expert hands over (None: 0.875, Wan 2.2's
    text-to-video boundary, or 0.9 for an image-to-video model, whose input takes an image);
    one step of every schedule lands on it (the Split Sigmas at Expert Boundary node's
    rule)."""
    reward_frames: int = option(0, ge=0, le=100_000)
    """Video models with an image reward: score this many evenly spaced frames of every video
    and average (0: every frame)."""
    reference_space: str = option("auto", choices=("auto", "image", "latent"))
    """Where the ``reference`` reward measures the distance to the many-step sample: ``image``
    (PSNR of the decoded images / frames), ``latent`` (PSNR of the latents, no VAE decode per
    rollout) or ``auto`` (latent for video models, image otherwise)."""
    sampler: str = "euler"
    """ComfyUI sampler name (any of KSamplerSelect's)."""
    cfg: float | None = option(None, ge=0)
    """Classifier-free guidance scale (None: the model family's default, ``cfg`` in
    policies/families.py: 1.0 for Flux, 4.5 for SD3, 4.0 for Qwen-Image...)."""
    guidance: float | None = option(None, ge=0)
    """Distilled guidance of models that take it (None: the family's default, 3.5 for Flux
    dev, 4.0 for Flux.2; ignored by models without that input)."""
    negative_prompt: str = ""
    """Negative prompt (used when cfg > 1)."""
    rollout_batch: int = option(0, ge=0)
    """Rollouts per model call (0: as many as memory allows)."""
    cache_dir: str | None = None
    """Conditioning cache folder (default: ~/.cache/learned_schedules/conditioning)."""
    reward_paths: str | None = None
    """Reward weights as kind=path pairs, comma-separated (default: models/rewards/<kind>)."""
    allow_download: bool = False
    """Let reward models download from the hub when not found locally (off: never)."""
    reference_steps: int = option(40, ge=1, le=10_000)
    """Steps of the reference sample for the ``reference`` reward."""
    sample_every: int = option(100, ge=0)
    """Save sample images (default vs learned schedule) every N iterations (0: off)."""
    set_metrics: str = option("none", choices=SET_METRICS)
    """Set-level metrics ``eval`` reports beside the reward: ``digits`` (the digits model:
    Fréchet distance, per-class coverage and accuracy on the digits classifier's features),
    ``shapes`` (the shapes model: exact prompt-following scores, ``training/rewards/shapes.py``)
    or ``none``. Configs written before this option get what they got then
    (:func:`training.rl.config_migration.migrate`)."""

    def validate(self) -> None:
        """``ValueError`` naming the field, for a wrong type, range or choice."""
        check_values(self)


__all__ = ["CLIP_TYPES", "SET_METRICS", "WEIGHT_DTYPES", "ComfyConfig"]
