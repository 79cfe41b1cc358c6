"""Learned Schedules: instance-level sampling schedules for ComfyUI.

Two ways in, one code base:

* ComfyUI imports this folder from ``custom_nodes/`` and calls :func:`comfy_entrypoint`;
  everything inside uses relative imports, so ComfyUI's own root modules (``nodes``,
  ``utils``, ``server``...) are never shadowed.
* Headless use (trainer, tests, benchmarks) imports the same folder as the package
  ``learned_schedules`` (``pip install -e .`` maps the repository root to that name).

Importing this package never imports ComfyUI; only ``comfy_entrypoint`` does, when ComfyUI
calls it.
"""

from ._version import __version__

WEB_DIRECTORY = "./web"

__all__ = ["__version__", "WEB_DIRECTORY", "comfy_entrypoint"]


async def comfy_entrypoint():
    """ComfyUI V3 entry point: the pack's extension (imports ComfyUI lazily)."""
    from .nodes.extension import LearnedSchedulesExtension

    return LearnedSchedulesExtension()
