"""Import ComfyUI as a library for the headless trainer (the ComfyUI back-end only).

Where ComfyUI is: ``--comfyui-path`` / ``COMFYUI_PATH`` / the cache ``scripts/setup.sh``
fills (``.cache/comfyui``). Where the models are: ``--comfyui-base`` (a ComfyUI base directory
holding ``models/``), default the ComfyUI folder itself. Inside a running ComfyUI (or once
imported) the loaded modules are reused as they are.

Import order matters: ComfyUI's folder first on ``sys.path``; its CLI args set before
``comfy.model_management`` / ``folder_paths`` load; ComfyUI's ``utils`` package imported
before anything puts ``comfy/`` on ``sys.path``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

log = logging.getLogger("learned_schedules.training")

REPO = Path(__file__).resolve().parents[2]


def comfyui_path(explicit: str | os.PathLike | None = None) -> Path:
    """The ComfyUI folder to use (``ValueError`` when there is none)."""
    path = Path(explicit or os.environ.get("COMFYUI_PATH") or REPO / ".cache" / "comfyui")
    if not (path / "comfy" / "sd.py").is_file():
        raise ValueError(f"No ComfyUI at {path}: pass --comfyui-path (or set COMFYUI_PATH) to "
                         "your ComfyUI folder, or run scripts/setup.sh to fetch one.")
    return path


def import_comfyui(path: str | os.PathLike | None = None,
                   base_dir: str | os.PathLike | None = None,
                   cpu: bool | None = None) -> SimpleNamespace:
    """Import ComfyUI's modules (once per process) and return them.

    ``cpu``: force the CPU (default: ComfyUI's choice, the GPU when there is one). Under a
    distributed launcher each process takes the GPU ``LOCAL_RANK``.
    """
    if "comfy.sd" not in sys.modules:
        root = str(comfyui_path(path))
        if root not in sys.path:
            sys.path.insert(0, root)
        from comfy.cli_args import args

        if cpu is None:
            cpu = not torch.cuda.is_available()
        args.cpu = bool(cpu)
        if not cpu and "LOCAL_RANK" in os.environ and torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        if base_dir is not None:
            args.base_directory = str(Path(base_dir).resolve())
        for name in ("utils.install_util", "utils.extra_config", "utils.json_util",
                     "comfy.model_management", "folder_paths", "comfy.sd", "comfy.sample",
                     "comfy.samplers", "comfy.utils"):
            importlib.import_module(name)
        log.info("ComfyUI imported from %s (models in %s)", root,
                 sys.modules["folder_paths"].models_dir)
    elif base_dir is not None:
        fp = sys.modules.get("folder_paths")
        want = Path(base_dir).resolve() / "models"
        if fp is not None and Path(fp.models_dir).resolve() != want:
            log.warning("ComfyUI is already loaded with models in %s; --comfyui-base %s is "
                        "ignored in this process", fp.models_dir, base_dir)
    for name in ("folder_paths", "comfy.sd", "comfy.sample", "comfy.samplers", "comfy.utils"):
        importlib.import_module(name)
    return SimpleNamespace(comfy=sys.modules["comfy"], folder_paths=sys.modules["folder_paths"],
                           model_management=sys.modules["comfy.model_management"])
