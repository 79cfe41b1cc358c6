"""The one table of model families: what every part of the pack knows about a model family.

Pure data (no ComfyUI import), so policy files, the ComfyUI bridge, the nodes and the trainer
all read the same rows. A row holds only what code cannot read from the model itself: the
ComfyUI model-config classes, the text-encoder loader and type, the default cfg / guidance.
The sampling space (rectified flow with its shift, discrete eps / v, zero-terminal SNR, EDM)
is read from the model's own ``model_sampling`` (``comfy_bridge/sampling_space.py``).

A family is found from ComfyUI's model-config class by walking its bases, most specific
first (:func:`family_for_model_config`), so a subclass of a supported family (a fine-tune's
own config class, ``Flux2`` before it had a row) resolves to that family; ``HunyuanImage21``
(a ``HunyuanVideo`` subclass), ``HunyuanVideo15`` (another), ``WAN22_T2V`` (the Wan 2.2 5B,
a ``WAN21_T2V`` subclass) and ``ZImage`` (a ``Lumina2`` subclass) have rows of their own.
Model kinds the pack does not schedule (audio, 3D, upscalers, two-stage Cascade, the video
models without a row) get a plain sentence naming the supported families.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    """One model family."""

    name: str
    """Our name, written into policy files (``flux-dev``, ``sd3``...)."""
    display: str
    """What a person calls it, for messages."""
    config_classes: tuple[str, ...] = ()
    """ComfyUI model-config class names of this family (``comfy.supported_models``)."""
    clip_type: str | None = None
    """ComfyUI CLIP type of its text encoders (the loaders' ``type``)."""
    clip_loader: str | None = None
    """The node that loads its text encoders on their own: ``CLIPLoader``,
    ``DualCLIPLoader``, ``TripleCLIPLoader`` or ``QuadrupleCLIPLoader``."""
    text_encoders: tuple[str, ...] = ()
    """The text encoders that loader takes, in its input order (for messages and docs)."""
    cfg: float = 1.0
    """Default classifier-free guidance scale (the model authors' recommendation)."""
    guidance: float | None = None
    """Default distilled guidance (``FluxGuidance``), or None when the model has no such
    input."""
    encoder_preset: str | None = None
    """Policy encoder preset (:data:`policies.latent_encoder.PRESETS`); None: sized from the
    features alone (the ``generic`` preset)."""
    supported: bool = True
    """Whether policies can be trained for and applied to it today."""
    note: str = ""
    """Anything a person should know (variants that load as this family)."""
    video: bool = False
    """Whether its latents are videos ``[B, C, T, H, W]`` (a time axis of frames)."""
    expert_boundary: float | None = None
    """Two-expert models (Wan 2.2 A14B: a high-noise and a low-noise expert of this class):
    the model sigma at which the high-noise expert hands over, for text-to-video (the
    image-to-video boundary is :data:`I2V_EXPERT_BOUNDARY`); None: one model."""


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("testbed", "the analytic testbed"),
    Family("flux-dev", "Flux dev", ("Flux", "FluxInpaint"), "flux", "DualCLIPLoader",
           ("clip_l", "t5xxl"), cfg=1.0, guidance=3.5, encoder_preset="flux",
           note="Flux.1 Kontext and Fill load as this family."),
    Family("flux-schnell", "Flux schnell", ("FluxSchnell",), "flux", "DualCLIPLoader",
           ("clip_l", "t5xxl"), cfg=1.0, encoder_preset="flux"),
    Family("sd3", "SD3", ("SD3",), "sd3", "TripleCLIPLoader", ("clip_l", "clip_g", "t5xxl"),
           cfg=4.5, encoder_preset="sd3", note="SD3 medium and SD3.5 large / medium."),
    Family("flux2", "Flux.2", ("Flux2",), "flux2", "CLIPLoader", ("mistral_3_small",),
           cfg=1.0, guidance=4.0),
    Family("chroma", "Chroma", ("Chroma",), "chroma", "CLIPLoader", ("t5xxl",), cfg=4.0),
    Family("qwen-image", "Qwen-Image", ("QwenImage",), "qwen_image", "CLIPLoader",
           ("qwen_2.5_vl_7b",), cfg=4.0, note="Qwen-Image-Edit loads as this family."),
    Family("z-image", "Z-Image", ("ZImage",), "lumina2", "CLIPLoader", ("qwen_3_4b",),
           cfg=1.0),
    Family("hidream", "HiDream", ("HiDream",), "hidream", "QuadrupleCLIPLoader",
           ("clip_l", "clip_g", "t5xxl", "llama_3.1_8b"), cfg=5.0),
    Family("lumina2", "Lumina 2", ("Lumina2",), "lumina2", "CLIPLoader", ("gemma_2_2b",),
           cfg=4.0),
    Family("hunyuan-image-2.1", "HunyuanImage 2.1", ("HunyuanImage21",), "hunyuan_image",
           "DualCLIPLoader", ("qwen_2.5_vl_7b", "byt5_small"), cfg=3.5),
    Family("auraflow", "AuraFlow", ("AuraFlow",), "stable_diffusion", "CLIPLoader",
           ("pile_t5xl",), cfg=3.5, note="Its checkpoints usually bundle the text encoder."),
    Family("sdxl", "SDXL", ("SDXL", "SDXLRefiner", "SSD1B", "Segmind_Vega", "KOALA_700M",
                            "KOALA_1B"), "sdxl", "DualCLIPLoader", ("clip_l", "clip_g"),
           cfg=7.0,
           note="Illustrious, Pony, NoobAI (eps and v-prediction) load as this family."),
    Family("sd2", "SD 2.x", ("SD20",), "stable_diffusion", "CLIPLoader", ("clip_h",), cfg=7.0,
           note="SD 2.x 768-v (v-prediction) and 512 (eps)."),
    Family("sd1", "SD 1.x", ("SD15",), "stable_diffusion", "CLIPLoader", ("clip_l",),
           cfg=7.0),
    Family("wan", "Wan 2.1 / Wan 2.2 A14B", ("WAN21_T2V", "WAN21_I2V"), "wan", "CLIPLoader",
           ("umt5_xxl",), cfg=6.0, video=True, expert_boundary=0.875,
           note="Wan 2.1 (1.3B, 14B; text- and image-to-video) and each of Wan 2.2 A14B's "
                "high-noise / low-noise experts load as this family (cfg 3.5 is the Wan 2.2 "
                "templates' choice); VACE, Fun, camera and other Wan 2.1-based variants "
                "resolve to it through their base class."),
    Family("wan2.2-5b", "Wan 2.2 5B", ("WAN22_T2V",), "wan", "CLIPLoader", ("umt5_xxl",),
           cfg=5.0, video=True,
           note="Wan 2.2 TI2V 5B, with its 48-channel VAE (16x spatial compression)."),
    Family("hunyuan-video-1.5", "HunyuanVideo 1.5", ("HunyuanVideo15",), "hunyuan_video_15",
           "DualCLIPLoader", ("qwen_2.5_vl_7b", "byt5_small"), cfg=6.0, video=True,
           note="Text- and image-to-video (a 32-channel, 16x VAE)."),
    Family("ltxv", "LTX-Video", ("LTXV",), "ltxv", "CLIPLoader", ("t5xxl",), cfg=3.0,
           video=True, note="A 128-channel latent at 32x spatial, 8x temporal compression; "
                            "ComfyUI's own templates use LTXVScheduler, the default here is "
                            "BasicScheduler's simple."),
)}
"""Every family the pack knows, by our name."""

UNSUPPORTED_KINDS: dict[str, str] = {
    **dict.fromkeys(("StableAudio", "ACEStep"), "an audio model"),
    **dict.fromkeys(("Hunyuan3Dv2", "Hunyuan3Dv2_1", "Hunyuan3Dv2mini", "SV3D_u", "SV3D_p",
                     "Stable_Zero123"), "a 3D model"),
    **dict.fromkeys(("SD_X4Upscaler", "HunyuanImage21Refiner", "HunyuanVideo15_SR_Distilled"),
                    "an upscaler / refiner"),
    **dict.fromkeys(("Stable_Cascade_C", "Stable_Cascade_B"), "two-stage Stable Cascade"),
    **dict.fromkeys(("SVD_img2vid", "HunyuanVideo", "GenmoMochi", "CosmosT2V",
                     "CosmosT2IPredict2"), "a video model"),
    **dict.fromkeys(("WAN22_S2V", "WAN22_Animate"), "a sound / pose-driven Wan model"),
    **dict.fromkeys(("LotusD", "SD15_instructpix2pix", "SDXL_instructpix2pix"),
                    "an image-editing / depth variant"),
}
"""ComfyUI config classes (and, through the bases, their subclasses) the pack does not
schedule, with what they are."""

I2V_EXPERT_BOUNDARY = 0.9
"""Wan 2.2 A14B image-to-video: the model sigma where the high-noise expert hands over."""

KNOWN_FAMILIES: tuple[str, ...] = tuple(FAMILIES)
SUPPORTED_IMAGE_FAMILIES: tuple[str, ...] = tuple(
    name for name, f in FAMILIES.items() if f.supported and f.config_classes and not f.video)
SUPPORTED_VIDEO_FAMILIES: tuple[str, ...] = tuple(
    name for name, f in FAMILIES.items() if f.supported and f.config_classes and f.video)
SUPPORTED_FAMILIES: tuple[str, ...] = SUPPORTED_IMAGE_FAMILIES + SUPPORTED_VIDEO_FAMILIES

_BY_CLASS: dict[str, Family] = {c: f for f in FAMILIES.values() for c in f.config_classes}


def _unsupported(what: str) -> ValueError:
    supported = ", ".join(FAMILIES[n].display for n in SUPPORTED_FAMILIES)
    return ValueError(f"Learned Schedules does not support {what} yet; supported models: "
                      f"{supported}.")


def _config_class(obj: Any) -> type | None:
    """The model-config class of a ComfyUI MODEL, a BaseModel, a config object or a class."""
    if isinstance(obj, type):
        return obj
    for path in (("model", "model_config"), ("model_config",)):
        cur = obj
        for attr in path:
            cur = getattr(cur, attr, None)
        if cur is not None:
            return type(cur)
    return type(obj) if obj is not None and hasattr(obj, "unet_config") else None


def family_for_model_config(obj: Any) -> Family:
    """The family of a ComfyUI model-config class, config object, ``BaseModel`` or MODEL,
    found by walking the class's bases (most specific first): a subclass of a supported
    family's class is that family. ``ValueError`` (a plain sentence naming the supported
    families) for anything the pack does not schedule."""
    cls = _config_class(obj)
    if cls is None:
        raise _unsupported(f"this model ({type(obj).__name__})")
    for base in cls.__mro__:
        name = base.__name__
        if name in UNSUPPORTED_KINDS:
            raise _unsupported(f"{UNSUPPORTED_KINDS[name]} ({cls.__name__})")
        family = _BY_CLASS.get(name)
        if family is not None:
            if not family.supported:
                raise _unsupported(family.display)
            return family
    raise _unsupported(f"this model ({cls.__name__})")


def family_for_config_class(config_class: str | type) -> Family:
    """The family of a ComfyUI model-config class given by name (exact names only) or as a
    class (its bases are walked, see :func:`family_for_model_config`); ``ValueError``, a
    plain sentence, for a model the pack does not support."""
    if not isinstance(config_class, str):
        return family_for_model_config(config_class)
    if config_class in UNSUPPORTED_KINDS:
        raise _unsupported(f"{UNSUPPORTED_KINDS[config_class]} ({config_class})")
    family = _BY_CLASS.get(config_class)
    if family is None:
        raise _unsupported(f"this model ({config_class})")
    if not family.supported:
        raise _unsupported(family.display)
    return family


def known_family_for_model_config(obj: Any) -> Family | None:
    """Like :func:`family_for_model_config` but also returns rows not (yet) supported; None
    for a model kind the pack does not know."""
    cls = _config_class(obj)
    for base in (cls.__mro__ if cls is not None else ()):
        if base.__name__ in UNSUPPORTED_KINDS:
            return None
        if base.__name__ in _BY_CLASS:
            return _BY_CLASS[base.__name__]
    return None


def get_family(name: str) -> Family:
    """A family by our name; ``ValueError`` for an unknown one."""
    if name not in FAMILIES:
        raise ValueError(f"Unknown model family {name!r}; expected one of {KNOWN_FAMILIES}.")
    return FAMILIES[name]


__all__ = ["Family", "FAMILIES", "KNOWN_FAMILIES", "SUPPORTED_IMAGE_FAMILIES",
           "SUPPORTED_VIDEO_FAMILIES", "SUPPORTED_FAMILIES", "I2V_EXPERT_BOUNDARY",
           "UNSUPPORTED_KINDS", "family_for_model_config", "family_for_config_class",
           "known_family_for_model_config", "get_family"]
