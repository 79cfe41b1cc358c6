"""Older ``config.json`` layouts -> the current nested one, written once, table-driven.

Before ``config_version`` 2 a run's config was flat: the ComfyUI options (``cfg``,
``diffusion_model``...), the policy options (``hidden``, ``concentration``...) and, before the
algorithm sections, ``baseline`` / ``normalize_advantages`` / ``entropy_coef`` / ``ppo_epochs``
/ ``ppo_clip`` sat beside the run settings, with an untyped ``extra`` object.
:func:`migrate` moves every such key into its section (:data:`MOVED`); configs and test dicts
may still mix flat keys with nested sections (the flat key wins, as it always did).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ...policies.config import PolicyConfig
from ...policies.fields import json_type
from ..comfy.config import ComfyConfig

CONFIG_VERSION = 2
"""Layout of the ``config.json`` this trainer writes: 2 nests ``comfy``, ``policy`` and one
section per algorithm; 1 (no ``config_version``) was flat."""

ACTIVE = None
"""Section marker in :data:`MOVED`: the active algorithm's section (``algo``)."""

MOVED: dict[str, tuple[str | None, str]] = {
    **{f.name: ("comfy", f.name) for f in dataclasses.fields(ComfyConfig)},
    **{f.name: ("policy", f.name) for f in dataclasses.fields(PolicyConfig)},
    "baseline": (ACTIVE, "baseline"), "normalize_advantages": (ACTIVE, "normalize_advantages"),
    "entropy_coef": (ACTIVE, "entropy_coef"), "ppo_epochs": ("ppo", "epochs"),
    "ppo_clip": ("ppo", "clip"),
}
"""Flat key -> (section, field) (``extra.<key>``: a key of the old ``extra`` object)."""

SAVED_BEFORE_CONCENTRATION = frozenset({"init_concentration", "init_schedule",
                                        "keep_checkpoints", "pool_size", "extra"})
"""Keys every flat saved ``config.json`` holds: one without ``concentration`` was written
before that option existed, by a run that trained the ``softplus`` form (so resuming it, or
reading its policy's training config, keeps that form)."""


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` (any layout) in the current nested layout, marked with the current
    ``config_version`` (so migrating it again changes nothing); ``ValueError`` for a newer
    layout or a non-empty ``extra``."""
    data = dict(data)
    version = data.pop("config_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"config_version must be a positive integer, got {version!r}.")
    if version > CONFIG_VERSION:
        raise ValueError(f"config_version {version} is newer than this trainer reads "
                         f"({CONFIG_VERSION}); update Learned Schedules.")
    if version == 1 and "concentration" not in data \
            and SAVED_BEFORE_CONCENTRATION <= data.keys():
        data["concentration"] = "softplus"  # a run saved before the option trained it
    flat = {key: data.pop(key) for key in list(data) if key in MOVED}
    flat.update(_extra_keys(data.pop("extra", None)))
    old = flat.pop("extra.set_metrics", None)
    if old is not None:
        flat.setdefault("set_metrics", old)
    if version == 1:
        _old_set_metrics(flat, data.get("comfy"))
    algo = data.get("algo")
    active = algo if isinstance(algo, str) and algo in _section_names() else "reinforce"
    for key, value in flat.items():
        section, name = MOVED[key]
        section = section or active
        nested = data.get(section, {})
        if dataclasses.is_dataclass(nested):
            nested = dataclasses.asdict(nested)
        if isinstance(nested, dict):  # anything else: from_dict names the section's type
            data[section] = {**nested, name: value}
    data["config_version"] = CONFIG_VERSION
    return data


def _extra_keys(extra: Any) -> dict[str, Any]:
    """The old ``extra`` object's keys that have a home; an empty one is dropped."""
    if extra is None or extra == {}:
        return {}
    if isinstance(extra, dict) and set(extra) <= {"set_metrics"}:
        return {f"extra.{k}": v for k, v in extra.items()}
    raise ValueError(f"extra is no longer read (every option is declared in its section), "
                     f"got {extra!r} ({json_type(extra)}); move its options into their "
                     "sections.")


def _old_set_metrics(flat: dict[str, Any], comfy: Any) -> None:
    """Set metrics before they were a declared option: ``extra.set_metrics`` (``auto``,
    ``digits`` or ``none``), where ``auto`` (also when absent) meant ``digits`` for the
    digits model (a diffusion model file named ``digits_*``) and none otherwise. Written once,
    here, so old run folders and the policy files in ``models/digits`` keep their metrics."""
    comfy = comfy if isinstance(comfy, dict) else {}
    choice = flat.get("set_metrics", comfy.get("set_metrics"))
    if choice is None or choice == "auto":
        model = flat.get("diffusion_model", comfy.get("diffusion_model"))
        name = model.replace("\\", "/").rsplit("/", 1)[-1] if isinstance(model, str) else ""
        choice = "digits" if name.startswith("digits_") else "none"
    flat["set_metrics"] = choice


def _section_names() -> tuple[str, ...]:
    from .algorithms.registry import ALGORITHMS  # the package registers the built-in ones

    return tuple(ALGORITHMS)


__all__ = ["CONFIG_VERSION", "MOVED", "SAVED_BEFORE_CONCENTRATION", "migrate"]
