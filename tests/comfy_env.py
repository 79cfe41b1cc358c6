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

from learned_schedules.training.comfy.runtime import import_comfyui

REPO = Path(__file__).resolve().parents[1]


def comfyui_path() -> Path:
    path = Path(os.environ.get("COMFYUI_PATH") or REPO / ".cache" / "comfyui")
    if not (path / "comfy" / "sd.py").exists():
        raise RuntimeError(f"No ComfyUI at {path}; run scripts/setup.sh or set COMFYUI_PATH.")
    return path


_BASE: list[Path] = []


def import_comfy(base_dir: Path, cpu: bool = True) -> SimpleNamespace:
    """Import ComfyUI as a library (CPU unless ``cpu=False``); its base directory is fixed by
    the first call.

    ``folder_paths`` reads the base directory once, at import, so every later call in the same
    process gets the first base back as ``.base``: tests put their models there.
    """
    if _BASE:
        base_dir = _BASE[0]
    else:
        _BASE.append(base_dir)
    (base_dir / "models").mkdir(parents=True, exist_ok=True)
    import_comfyui(comfyui_path(), base_dir, cpu=cpu)
    # explicit order: ComfyUI's `utils` package before `nodes` (see the module docstring)
    for name in ("comfy.ops", "nodes", "comfy_extras.nodes_custom_sampler"):
        importlib.import_module(name)
    comfy = sys.modules["comfy"]
    folder_paths = sys.modules["folder_paths"]
    nodes = sys.modules["nodes"]
    ncs = sys.modules["comfy_extras.nodes_custom_sampler"]

    return SimpleNamespace(comfy=comfy, folder_paths=folder_paths, nodes=nodes, ncs=ncs,
                           base=base_dir)


def _randomize(module: torch.nn.Module, seed: int, std: float = 0.02) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in module.state_dict().items():  # weights *and* buffers (else torch.empty: NaN)
        out[k] = (torch.randn(v.shape, generator=g) * std).to(v.dtype).contiguous() \
            if v.is_floating_point() else v.contiguous()
    return out


def build_tiny_sd3(path: Path, seed: int = 0, std: float = 0.02) -> Path:
    """A 2-block MMDiT (SD3 architecture, 1.9M parameters) saved with no key prefix
    (``std``: the random weights' scale; larger gives a less trivial velocity field)."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

    model = MMDiT(patch_size=2, in_channels=16, depth=2, adm_in_channels=2048, out_channels=16,
                  context_embedder_config={"target": "torch.nn.Linear",
                                           "params": {"in_features": 4096, "out_features": 128}},
                  pos_embed_max_size=16, num_patches=256,
                  operations=comfy.ops.disable_weight_init)
    save_file(_randomize(model, seed, std), str(path))
    return path


def write_tiny_sd3_set(models: Path, diffusion_model: str, vae: str) -> None:
    """The tiny SD3 (``std`` 0.1), a random CLIP-L (``clip_l.safetensors``, kept when the
    process-wide base already has it) and a tiny VAE, in a ComfyUI ``models`` folder."""
    for sub in ("diffusion_models", "text_encoders", "vae", "learned_schedules"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    build_tiny_sd3(models / "diffusion_models" / diffusion_model, std=0.1)
    if not (models / "text_encoders" / "clip_l.safetensors").exists():
        build_clip_l(models / "text_encoders" / "clip_l.safetensors")
    build_tiny_vae(models / "vae" / vae)


def build_clip_l(path: Path, seed: int = 1) -> Path:
    """A random full-size CLIP-L text encoder (the stock CLIPLoader detects it)."""
    from comfy import sd1_clip

    enc = sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
    sd = {k[len("transformer."):]: v for k, v in _randomize(enc, seed).items()
          if k.startswith("transformer.")}
    save_file(sd, str(path))
    return path


TINY_FLUX = dict(image_model="flux", in_channels=16, patch_size=2, out_channels=16,
                 vec_in_dim=64, context_in_dim=64, hidden_size=64, mlp_ratio=4.0, num_heads=2,
                 depth=1, depth_single_blocks=1, axes_dim=[4, 14, 14], theta=10000,
                 qkv_bias=True, guidance_embed=True)
_TINY_CLIP_L = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
                "num_hidden_layers": 3, "projection_dim": 64}
# CLIP-L's options key differs between ComfyUI code paths; give every spelling
TINY_FLUX_TE_OPTIONS = {"clip_l_model_config": _TINY_CLIP_L, "model_config": _TINY_CLIP_L,
                        "_model_config": _TINY_CLIP_L,
                        "t5xxl_model_config": {"d_model": 64, "d_ff": 128, "d_kv": 32,
                                               "num_heads": 2, "num_layers": 2}}


def build_tiny_flux(guidance: bool = True, seed: int = 0):
    """A truly tiny Flux (hidden 64) built through ComfyUI's model classes -> ModelPatcher.

    Stock detection hard-codes Flux's 24 heads x 128, so this one is assembled with
    ``model_config_from_unet_config`` (the path UNETLoader takes after detection).
    """
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.ops
    from comfy.ldm.flux.model import Flux

    cfg = {**TINY_FLUX, "guidance_embed": guidance}
    net = Flux(**{k: v for k, v in cfg.items() if k != "image_model"},
               operations=comfy.ops.disable_weight_init)
    sd = _randomize(net, seed)
    config = comfy.model_detection.model_config_from_unet_config(cfg, sd)
    model = config.get_model(sd, "")
    model.load_model_weights(sd, "")
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def build_tiny_flux_file(path: Path, guidance: bool = True, seed: int = 0) -> dict:
    """The tiny Flux's weights saved to ``path``; returns its ``unet_config`` (the trainer's
    ``--unet-config``, since stock detection cannot size it)."""
    import comfy.ops
    from comfy.ldm.flux.model import Flux

    cfg = {**TINY_FLUX, "guidance_embed": guidance}
    net = Flux(**{k: v for k, v in cfg.items() if k != "image_model"},
               operations=comfy.ops.disable_weight_init)
    save_file(_randomize(net, seed, std=0.1), str(path))
    return cfg


def build_tiny_vae(path: Path, latent_channels: int = 16, seed: int = 2) -> Path:
    """A random TAESD-architecture VAE (ComfyUI's own tiny VAE class, ~2.4M parameters) whose
    decoder keeps the latent's signal (fan-in scaled weights)."""
    from comfy.taesd.taesd import TAESD

    net = TAESD(latent_channels=latent_channels)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in net.state_dict().items():
        if v.ndim > 1:
            fan_in = v[0].numel()
            sd[k] = (torch.randn(v.shape, generator=g) / fan_in ** 0.5).contiguous()
        elif k in ("vae_scale",):
            sd[k] = torch.tensor(1.0)
        else:
            sd[k] = torch.zeros(v.shape)
    save_file(sd, str(path))
    return path


def write_tiny_flux_text_encoders(folder: Path, seed: int = 1) -> list[str]:
    """Tiny CLIP-L (3 layers) + T5 (2 layers) files; load them with
    ``TINY_FLUX_TE_OPTIONS`` (the trainer's ``--text-encoder-options``)."""
    from comfy.text_encoders import flux as tflux

    sd = _randomize(tflux.FluxClipModel(model_options=TINY_FLUX_TE_OPTIONS), seed)
    paths = []
    for prefix, name in (("clip_l.transformer.", "clip_l_tiny.safetensors"),
                         ("t5xxl.transformer.", "t5_tiny.safetensors")):
        path = folder / name
        save_file({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, str(path))
        paths.append(str(path))
    return paths


def build_tiny_flux_text_encoders(folder: Path, seed: int = 1):
    """Tiny CLIP-L (3 layers) + T5 (2 layers) files, loaded as ComfyUI's Flux CLIP."""
    import comfy.sd

    paths = write_tiny_flux_text_encoders(folder, seed)
    return comfy.sd.load_clip(paths, clip_type=comfy.sd.CLIPType.FLUX,
                              model_options=TINY_FLUX_TE_OPTIONS)


def build_smallest_stock_flux(path: Path, guidance: bool = True) -> Path:
    """The smallest Flux the stock detection accepts: hidden 3072 (24 heads x 128), one
    double and one single block, bf16 (~531M parameters, ~1 GB)."""
    import comfy.ops
    from comfy.ldm.flux.model import Flux

    with torch.device("meta"):
        net = Flux(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
                   hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=1,
                   depth_single_blocks=1, axes_dim=[16, 56, 56], theta=10000, qkv_bias=True,
                   guidance_embed=guidance, patch_size=2,
                   operations=comfy.ops.disable_weight_init)
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(v.shape, generator=g) * 0.02).to(torch.bfloat16)
          for k, v in net.state_dict().items()}
    save_file(sd, str(path))
    return path


TINY_SD3 = {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 2,
            "input_size": None, "adm_in_channels": 2048, "num_patches": 256,
            "context_embedder_config": {"target": "torch.nn.Linear",
                                        "params": {"in_features": 4096, "out_features": 128}},
            "pos_embed_max_size": 16, "pos_embed_scaling_factor": None,
            "x_block_self_attn_layers": []}
"""The unet_config ComfyUI's detection reads from :func:`build_tiny_sd3`'s file."""


def build_network_model(config_class: str, unet_config: dict, dtype: torch.dtype,
                        std: float = 0.1, seed: int = 0, device: str = "cpu",
                        round_to: torch.dtype | None = torch.bfloat16,
                        time_frequencies: float | None = None):
    """A random-weight MODEL (ModelPatcher) of any size from ComfyUI's config class
    (``comfy.supported_models.<config_class>``), computing in ``dtype`` (no manual cast).

    Weights and buffers are ``N(0, std)`` drawn in float32 from ``seed`` and rounded to
    ``round_to`` first, so the same call in float64 / float32 / bf16 holds the same
    numbers: a float64 copy is the exact reference of a bf16 one.

    ``time_frequencies``: keep only the sinusoidal timestep features (Flux's ``time_in``,
    SD3's ``t_embedder``; ``1000 sigma`` times ``10000^(-j/128)``) of angular frequency up to
    this many radians per unit of flow time. Random weights read every frequency, up to 1000
    (a period of 6e-3 in sigma), so a random model's velocity oscillates in sigma far faster
    than any sampler step (its dv/dsigma is ~200x |v|); a limit of 30 gives a field as smooth
    in sigma as in x (a trained model's output varies little over 1e-3 of sigma)."""
    import comfy.model_patcher
    import comfy.supported_models as sm

    config = getattr(sm, config_class)(dict(unet_config))
    config.set_inference_dtype(dtype, None)
    dev = torch.device(device)
    model = config.get_model({}, "", device=dev)
    net = model.diffusion_model
    gen = torch.Generator(dev).manual_seed(seed)
    with torch.no_grad():
        for _, t in (*net.named_parameters(), *net.named_buffers()):
            if t.is_floating_point():
                r = torch.randn(t.shape, generator=gen, device=dev) * std
                t.copy_(r if round_to is None else r.to(round_to))
        if time_frequencies is not None:
            for key, w in net.named_parameters():
                if key in ("time_in.in_layer.weight", "t_embedder.mlp.0.weight"):
                    half = w.shape[1] // 2
                    freq = 1000.0 * 10000.0 ** (-torch.arange(half, device=dev) / half)
                    fast = torch.cat([freq, freq]) > time_frequencies
                    w[:, fast] = 0.0
    net.to(device=dev, dtype=dtype)
    net.dtype = dtype
    model.manual_cast_dtype = None
    return comfy.model_patcher.ModelPatcher(model, load_device=dev, offload_device=dev)


def digits_clip() -> Path:
    """The digits model's CLIP-L file (git-ignored, 246 MB), rebuilt bit-identically from its
    seed by ``scripts/digits`` when missing."""
    clip = REPO / "models" / "digits" / "digits_clip_l.safetensors"
    if not clip.is_file():
        sys.path.insert(0, str(REPO / "scripts" / "digits"))
        import digits_lib

        digits_lib.build_text_encoder(clip)
    return clip
