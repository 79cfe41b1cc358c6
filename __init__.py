"""Learned Schedules: instance-level sampling schedules for ComfyUI.

Two ways in, one code base:

* ComfyUI imports this folder from ``custom_nodes/``; everything inside uses relative imports,
  so ComfyUI's own root modules (``nodes``, ``utils``, ``server``...) are never shadowed.
* Headless use (trainer, tests, benchmarks) imports the same folder as the package
  ``learned_schedules`` (``pip install -e .`` maps the repository root to that name).

Importing this package never imports ComfyUI. The ComfyUI nodes register here once they exist
(see ``nodes/``); until then the pack registers no nodes.
"""

__version__ = "0.1.0"

WEB_DIRECTORY = "./web"
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
