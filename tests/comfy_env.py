"""A real ComfyUI runtime for tests, plus tiny random-weight models of the real architectures.

ComfyUI comes from ``COMFYUI_PATH`` or the cache filled by ``scripts/setup.sh``. Import order
matters (see ``../shared/COMFYUI_RUNTIME.md``): ComfyUI's folder first on ``sys.path``, CLI args
set before ``comfy.model_management``/``folder_paths`` load, ComfyUI's ``utils`` package before
``nodes`` (which puts ``comfy/`` on ``sys.path``).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]


def comfyui_path() -> Path:
    path = Path(os.environ.get("COMFYUI_PATH") or REPO / ".cache" / "comfyui")
    if not (path / "comfy" / "sd.py").exists():
        raise RuntimeError(f"No ComfyUI at {path}; run scripts/setup.sh or set COMFYUI_PATH.")
    return path


def import_comfy(base_dir: Path) -> SimpleNamespace:
    """Import ComfyUI as a library with ``base_dir`` as its base directory (CPU only)."""
    root = str(comfyui_path())
    if root not in sys.path:
        sys.path.insert(0, root)
    from comfy.cli_args import args

    args.cpu = True
    args.base_directory = str(base_dir)
    (base_dir / "models").mkdir(parents=True, exist_ok=True)
    # explicit order: ComfyUI's `utils` package before `nodes` (see the module docstring)
    for name in ("utils.install_util", "utils.extra_config", "utils.json_util", "comfy.ops",
                 "comfy.sample", "comfy.sd", "folder_paths", "nodes",
                 "comfy_extras.nodes_custom_sampler"):
        importlib.import_module(name)
    comfy = sys.modules["comfy"]
    folder_paths = sys.modules["folder_paths"]
    nodes = sys.modules["nodes"]
    ncs = sys.modules["comfy_extras.nodes_custom_sampler"]

    return SimpleNamespace(comfy=comfy, folder_paths=folder_paths, nodes=nodes, ncs=ncs)


def _randomize(module: torch.nn.Module, seed: int, std: float = 0.02) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in module.state_dict().items():  # weights *and* buffers (else torch.empty: NaN)
        out[k] = (torch.randn(v.shape, generator=g) * std).to(v.dtype).contiguous() \
            if v.is_floating_point() else v.contiguous()
    return out


def build_tiny_sd3(path: Path, seed: int = 0) -> Path:
    """A 2-block MMDiT (SD3 architecture, 1.9M parameters) saved with no key prefix."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

    model = MMDiT(patch_size=2, in_channels=16, depth=2, adm_in_channels=2048, out_channels=16,
                  context_embedder_config={"target": "torch.nn.Linear",
                                           "params": {"in_features": 4096, "out_features": 128}},
                  pos_embed_max_size=16, num_patches=256,
                  operations=comfy.ops.disable_weight_init)
    save_file(_randomize(model, seed), str(path))
    return path


def build_clip_l(path: Path, seed: int = 1) -> Path:
    """A random full-size CLIP-L text encoder (the stock CLIPLoader detects it)."""
    from comfy import sd1_clip

    enc = sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
    sd = {k[len("transformer."):]: v for k, v in _randomize(enc, seed).items()
          if k.startswith("transformer.")}
    save_file(sd, str(path))
    return path
