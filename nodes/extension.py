"""The pack's ComfyUI extension: registers the policy folder and the nodes."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import ComfyExtension, io

from .schedule_nodes import FOLDER, NODES


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
        return list(NODES)


register_policy_folder()
