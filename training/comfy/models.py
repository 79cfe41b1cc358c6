"""Load a diffusion model, its text encoders and its VAE with ComfyUI's own loaders.

The same paths users' workflows take: a full checkpoint (``CheckpointLoaderSimple``), or a
diffusion model (``UNETLoader``) + text encoders (``CLIPLoader`` / ``DualCLIPLoader`` /
``TripleCLIPLoader``) + a VAE (``VAELoader``). Files are found by name in ComfyUI's model
folders or given as paths. An explicit architecture config (``unet_config``) loads models of
non-standard sizes that ComfyUI's detection does not recognise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...policies.json_io import parse_json
from .config import CLIP_TYPES, WEIGHT_DTYPES

log = logging.getLogger("learned_schedules.training")


@dataclass
class LoadedModels:
    """A model ready for rollouts, and the identity of every file it came from."""

    model: Any
    """ComfyUI MODEL (``ModelPatcher``)."""
    clip: Any
    """ComfyUI CLIP (text encoders)."""
    vae: Any
    """ComfyUI VAE."""
    family: str
    """``flux-dev``, ``flux-schnell`` or ``sd3``."""
    files: dict[str, list[str]] = field(default_factory=dict)
    """Role (``model``, ``text_encoders``, ``vae``) -> resolved file paths."""


def parse_json_option(value: str | dict | None, what: str) -> dict | None:
    """A JSON object given inline or as a path to a .json file."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return value
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"{what}: {value} is neither a JSON object nor a JSON file.")
        text = path.read_text()
    data = parse_json(text, what)
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object.")
    return data


def resolve_file(name: str, folders: tuple[str, ...], what: str) -> str:
    """A file given as a path, or by name in one of ComfyUI's model folders."""
    import folder_paths

    path = Path(name).expanduser()
    if path.is_file():
        return str(path.resolve())
    for folder in folders:
        try:
            full = folder_paths.get_full_path(folder, name)
        except KeyError:
            continue
        if full is not None:
            return full
    available: list[str] = []
    for folder in folders:
        try:
            available += folder_paths.get_filename_list(folder)
        except KeyError:
            pass
    where = ", ".join(f"models/{f}" for f in folders)
    listing = ", ".join(available[:20]) or "none"
    raise ValueError(f"{what} {name!r} not found as a path or in {where} (ComfyUI models at "
                     f"{folder_paths.models_dir}); available: {listing}.")


def _dtype_options(weight_dtype: str) -> dict[str, Any]:
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {WEIGHT_DTYPES}, got {weight_dtype!r}.")
    options: dict[str, Any] = {}
    if weight_dtype.startswith("fp8_e4m3fn"):
        options["dtype"] = torch.float8_e4m3fn
        options["fp8_optimizations"] = weight_dtype.endswith("_fast")
    elif weight_dtype == "fp8_e5m2":
        options["dtype"] = torch.float8_e5m2
    return options


def load_diffusion_model(path: str, weight_dtype: str = "default",
                         unet_config: dict | None = None):
    """``UNETLoader``'s path; with ``unet_config``, an explicitly configured architecture."""
    import comfy.model_detection
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sd
    import comfy.utils

    options = _dtype_options(weight_dtype)
    if unet_config is None:
        try:
            return comfy.sd.load_diffusion_model(path, model_options=options)
        except RuntimeError as exc:
            raise ValueError(f"ComfyUI could not detect the model in {path} ({exc}); for a "
                             "non-standard size pass --unet-config with its architecture."
                             ) from None
    sd = comfy.utils.load_torch_file(path, safe_load=True)
    config = comfy.model_detection.model_config_from_unet_config(dict(unet_config), sd)
    if config is None:
        raise ValueError(f"ComfyUI has no model matching the unet_config {unet_config}.")
    load_device = mm.get_torch_device()
    dtype = options.get("dtype") or mm.unet_dtype(
        model_params=comfy.utils.calculate_parameters(sd),
        supported_dtypes=list(config.supported_inference_dtypes))
    config.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, load_device,
                                                          config.supported_inference_dtypes))
    model = config.get_model(sd, "")
    model.load_model_weights(sd, "")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device,
                                            offload_device=mm.unet_offload_device())


def load_text_encoders(paths: list[str], clip_type: str, options: dict | None = None):
    """``CLIPLoader`` / ``DualCLIPLoader`` / ``TripleCLIPLoader`` /
    ``QuadrupleCLIPLoader``'s path; ``clip_type`` is the loaders' ``type`` (a family row's
    ``clip_type``: ``flux``, ``sd3``, ``lumina2``, ``qwen_image``...), mapped as they map it."""
    import comfy.sd
    import folder_paths

    # as the loader nodes do: a type without its own enum member (``flux2`` in 0.3.75) is
    # STABLE_DIFFUSION, and the file's detected encoder decides
    kind = getattr(comfy.sd.CLIPType, str(clip_type).upper(), comfy.sd.CLIPType.STABLE_DIFFUSION)
    try:
        return comfy.sd.load_clip(paths, embedding_directory=folder_paths.get_folder_paths(
            "embeddings"), clip_type=kind, model_options=options or {})
    except (RuntimeError, KeyError) as exc:
        raise ValueError(f"ComfyUI could not load the text encoders {paths} as {clip_type} "
                         f"({exc}).") from None


def load_vae(path: str):
    """``VAELoader``'s path (full VAEs and TAESD-style tiny ones)."""
    import comfy.sd
    import comfy.utils

    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(path, safe_load=True))
    try:
        vae.throw_exception_if_invalid()
    except Exception as exc:
        raise ValueError(f"{path} is not a VAE ComfyUI can load ({exc}).") from None
    return vae


def load_models(*, checkpoint: str | None = None, diffusion_model: str | None = None,
                text_encoders: list[str] | None = None, vae: str | None = None,
                clip_type: str = "auto", weight_dtype: str = "default",
                unet_config: dict | None = None,
                text_encoder_options: dict | None = None) -> LoadedModels:
    """Load everything a rollout needs; ``ValueError`` naming what is missing."""
    import comfy.sd
    import folder_paths

    from ...comfy_bridge.features import model_family_info

    if clip_type not in CLIP_TYPES:
        raise ValueError(f"clip_type must be one of {CLIP_TYPES}, got {clip_type!r}.")
    if bool(checkpoint) == bool(diffusion_model):
        raise ValueError("Give either --checkpoint (a full checkpoint) or --diffusion-model "
                         "(with --text-encoders and --vae).")
    files: dict[str, list[str]] = {}
    clip = vae_obj = None
    if checkpoint:
        path = resolve_file(checkpoint, ("checkpoints",), "Checkpoint")
        files["model"] = [path]
        model, clip, vae_obj, _ = comfy.sd.load_checkpoint_guess_config(
            path, output_vae=True, output_clip=True,
            embedding_directory=folder_paths.get_folder_paths("embeddings"),
            model_options=_dtype_options(weight_dtype),
            te_model_options=text_encoder_options or {})
        if model is None:
            raise ValueError(f"ComfyUI found no diffusion model in {path}.")
        if clip is not None:
            files["text_encoders"] = [path]
        if vae_obj is not None:
            files["vae"] = [path]
    else:
        path = resolve_file(diffusion_model, ("diffusion_models",), "Diffusion model")
        files["model"] = [path]
        model = load_diffusion_model(path, weight_dtype, unet_config)
    family = model_family_info(model)  # ValueError for an unsupported model (SDXL...)
    if text_encoders:
        paths = [resolve_file(n, ("text_encoders",), "Text encoder") for n in text_encoders]
        ctype = family.clip_type if clip_type == "auto" else clip_type
        clip = load_text_encoders(paths, ctype, text_encoder_options)
        files["text_encoders"] = paths
    if vae:
        vpath = resolve_file(vae, ("vae",), "VAE")
        vae_obj = load_vae(vpath)
        files["vae"] = [vpath]
    if clip is None:
        raise ValueError("No text encoders: pass --text-encoders (e.g. clip_l.safetensors,"
                         "t5xxl_fp16.safetensors for Flux).")
    if vae_obj is None:
        raise ValueError("No VAE: pass --vae (e.g. ae.safetensors for Flux).")
    log.info("loaded %s model %s", family.name, Path(files["model"][0]).name)
    return LoadedModels(model=model, clip=clip, vae=vae_obj, family=family.name, files=files)
