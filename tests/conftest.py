import sys
from pathlib import Path

import pytest

# tests/ helpers (comfy_env) import as top-level modules under --import-mode=importlib
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_family_models(tmp_path_factory):
    """ComfyUI (imported once per process) and every tiny family model, written once per
    session into the process-wide ComfyUI base's models folder: ``(cui, {key: path})``."""
    from tiny_families import write_tiny_models

    from comfy_env import import_comfy

    cui = import_comfy(tmp_path_factory.mktemp("families_base"))
    return cui, write_tiny_models(cui.base / "models")
