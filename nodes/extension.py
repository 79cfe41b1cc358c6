"""The pack's ComfyUI extension: registers the policy folder, the nodes and (opt-in) the
named schedulers ``learned:<policy>``."""

from __future__ import annotations

import logging
import os

import folder_paths
from comfy_api.latest import ComfyExtension, io

from . import calibrate_nodes, image_nodes, named_schedulers, sampler_nodes, sigma_nodes
from .schedule_nodes import FOLDER, NODES

log = logging.getLogger("learned_schedules")


def register_policy_folder() -> None:
    """``models/learned_schedules`` with the extension set ``{".safetensors"}`` (never empty:
    an empty set would accept every file)."""
    path = os.path.join(folder_paths.models_dir, FOLDER)
    if FOLDER in folder_paths.folder_names_and_paths:
        paths, _ = folder_paths.folder_names_and_paths[FOLDER]
        folder_paths.folder_names_and_paths[FOLDER] = (paths, {".safetensors"})
    else:
        folder_paths.folder_names_and_paths[FOLDER] = ([path], {".safetensors"})
    os.makedirs(path, exist_ok=True)


class LearnedSchedulesExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*NODES, *calibrate_nodes.NODES, *sigma_nodes.NODES, *sampler_nodes.NODES,
                *image_nodes.NODES]


def register_named_schedulers() -> list[str]:
    """Opt-in ``learned:<policy>`` schedulers; a failure here never stops the pack loading."""
    try:
        return named_schedulers.register_from_policy_folder(FOLDER)
    except Exception:  # noqa: BLE001 - a broken policy folder must not break ComfyUI's start
        log.exception("Learned Schedules: could not register the named schedulers")
        return []


register_policy_folder()
register_named_schedulers()
