"""The one table of model families: what every part of the pack knows about a model family.

Pure data (no ComfyUI import), so policy files, the ComfyUI bridge, the nodes and the trainer
all read the same rows. A family is recognised from ComfyUI's model-config class name
(``type(model.model.model_config).__name__``); unsupported families are listed so that users
get a plain sentence instead of a ``KeyError``.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    """ComfyUI CLIP type of its text encoders (``CLIPLoader``'s ``type``)."""
    cfg: float = 1.0
    """Default classifier-free guidance scale."""
    guidance: float | None = None
    """Default distilled guidance (Flux dev), or None when the model has no such input."""
    encoder_preset: str | None = None
    """Policy encoder preset (:data:`policies.latent_encoder.PRESETS`)."""
    supported: bool = True
    """Whether policies can be trained for and applied to it today."""


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("testbed", "the analytic testbed"),
    Family("flux-dev", "Flux dev", ("Flux",), clip_type="flux", cfg=1.0, guidance=3.5,
           encoder_preset="flux"),
    Family("flux-schnell", "Flux schnell", ("FluxSchnell",), clip_type="flux", cfg=1.0,
           encoder_preset="flux"),
    Family("sd3", "SD3", ("SD3",), clip_type="sd3", cfg=4.5, encoder_preset="sd3"),
    Family("sdxl", "SDXL", ("SDXL", "SDXLRefiner", "SSD1B", "Segmind_Vega", "KOALA_700M",
                            "KOALA_1B"), clip_type="sdxl", cfg=7.0, supported=False),
    Family("sd1", "SD 1.x", ("SD15",), clip_type="stable_diffusion", cfg=7.0,
           supported=False),
)}
"""Every family the pack knows, by our name."""

KNOWN_FAMILIES: tuple[str, ...] = tuple(FAMILIES)
SUPPORTED_IMAGE_FAMILIES: tuple[str, ...] = tuple(
    name for name, f in FAMILIES.items() if f.supported and f.config_classes)


def family_for_config_class(class_name: str) -> Family:
    """The family of a ComfyUI model-config class; ``ValueError`` (a plain sentence) for a model
    the pack does not support."""
    for family in FAMILIES.values():
        if class_name in family.config_classes:
            if not family.supported:
                break
            return family
    else:
        family = None
    what = family.display if family is not None else f"this model ({class_name})"
    supported = ", ".join(FAMILIES[n].display for n in SUPPORTED_IMAGE_FAMILIES)
    raise ValueError(f"Learned Schedules does not support {what} yet; supported models: "
                     f"{supported}.")


def get_family(name: str) -> Family:
    """A family by our name; ``ValueError`` for an unknown one."""
    if name not in FAMILIES:
        raise ValueError(f"Unknown model family {name!r}; expected one of {KNOWN_FAMILIES}.")
    return FAMILIES[name]


__all__ = ["Family", "FAMILIES", "KNOWN_FAMILIES", "SUPPORTED_IMAGE_FAMILIES",
           "family_for_config_class", "get_family"]
