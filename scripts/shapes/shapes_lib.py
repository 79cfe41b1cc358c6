"""Shared pieces of the shapes scripts: the VAE (a narrow TAESD, written as a stock 16-channel
TAESD file), the data, and the stock ComfyUI path. The MMDiT, the text encoder (the digits
model's CLIP-L file itself), conditioning and the differentiable Euler sampler are the digits
model's (``scripts/digits/digits_lib.py``): same architecture, same 16x4x4 latent.

The model: ComfyUI's SD3 MMDiT (stock ``UNETLoader``), a TAESD-architecture VAE with 16 latent
channels whose extra width is zero (stock ``VAELoader``), and the digits model's random CLIP-L
(stock ``CLIPLoader``, type ``sd3``): ``EmptySD3LatentImage`` 32x32 -> a 16x4x4 latent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "digits"))
import digits_lib  # noqa: E402  (the digits model's shared pieces)
from digits_lib import (  # noqa: E402,F401  (re-exported for the shapes scripts)
    CANVAS,
    CLIP_FILE,
    NEGATIVE,
    SD3_SCALE,
    SD3_SHIFT,
    build_mmdit,
    default_sigmas,
    embed_context,
    encode,
    euler,
    fit_mmdit,
    load_clip,
    noise_for,
    progress,
    setup_comfy,
    velocity,
)

from learned_schedules.training.datasets import shapes as data  # noqa: E402

REPO = digits_lib.REPO
MODEL_DIR = REPO / "models" / "shapes"
UNET_FILE = MODEL_DIR / "shapes_mmdit.safetensors"
VAE_FILE = MODEL_DIR / "shapes_vae.safetensors"
VAE_SMALL_FILE = MODEL_DIR / "shapes_vae_small.safetensors"
DEFAULT_CFG = 2.0


def prompts() -> list[str]:
    return list(data.PROMPTS)


def images_of(per_prompt: int, seed0: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[P*n, 3, 32, 32]`` generator images and their prompt indices."""
    x, y = data.dataset(per_prompt, seed0)
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)


# ---------------------------------------------------------------- VAE (narrow TAESD)
def _conv(cin: int, cout: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


class _Block(nn.Module):
    """TAESD's residual block: ``relu(conv(relu(conv(relu(conv(x))))) + x)``."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(n, n), nn.ReLU(), _conv(n, n), nn.ReLU(), _conv(n, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x) + x)


class _Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class SmallTAESD(nn.Module):
    """TAESD's encoder and decoder (same layers, order and strides as ``comfy.taesd.taesd``)
    at width ``w`` instead of 64 and with the first ``blocks`` residual blocks of each level;
    zero-padding every layer to 64 channels and zeroing the other blocks gives a stock TAESD
    that computes exactly the same (padded channels stay 0 through ReLUs and skips; a zero block
    after a ReLU is the identity). Latents are normalised per channel (running statistics,
    folded into the last encoder conv)."""

    def __init__(self, w: int = 32, latent: int = 16, blocks: int = 1) -> None:
        super().__init__()
        assert w not in (3, latent) and 1 <= blocks <= 3
        self.w, self.blocks = w, blocks

        def level(n: int = 3) -> list[nn.Module]:
            """TAESD's ``n`` blocks of a level; those past ``blocks`` are zero in the file,
            i.e. identities (their input is a block's ReLU output, >= 0)."""
            return [_Block(w) if i < min(blocks, n) else nn.Identity() for i in range(n)]

        self.encoder = nn.Sequential(
            _conv(3, w), *level(1),
            _conv(w, w, 2, False), *level(),
            _conv(w, w, 2, False), *level(),
            _conv(w, w, 2, False), *level(),
            _conv(w, latent))
        self.decoder = nn.Sequential(
            _Clamp(), _conv(latent, w), nn.ReLU(),
            *level(), nn.Upsample(scale_factor=2), _conv(w, w, bias=False),
            *level(), nn.Upsample(scale_factor=2), _conv(w, w, bias=False),
            *level(), nn.Upsample(scale_factor=2), _conv(w, w, bias=False),
            *level(1), _conv(w, 3))
        self.norm = nn.BatchNorm2d(latent, affine=False, momentum=0.02)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, 32, 32]`` in [0, 1] -> normalised latent ``[N, 16, 4, 4]`` (= the MMDiT's
        model-space latent)."""
        return self.norm(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Model-space latent -> image ``[N, 3, 32, 32]`` (unclamped)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def _pad(t: torch.Tensor, dims: tuple[int, ...], size: int = 64) -> torch.Tensor:
    shape = list(t.shape)
    for d in dims:
        shape[d] = size
    out = torch.zeros(shape)
    out[tuple(slice(0, s) for s in t.shape)] = t
    return out


def small_to_taesd(ae: SmallTAESD) -> dict[str, torch.Tensor]:
    """The stock TAESD state dict (``taesd_encoder.*``, ``taesd_decoder.*``, ``vae_scale``,
    ``vae_shift``) computing the same encode / decode, in ComfyUI's SD3 latent space."""
    from comfy.taesd.taesd import TAESD

    ae = ae.eval()
    ref = TAESD(latent_channels=16).state_dict()
    sd = {k: torch.zeros(v.shape) for k, v in ref.items()}
    last_enc = str(len(ae.encoder) - 1)
    for prefix, seq in (("taesd_encoder", ae.encoder), ("taesd_decoder", ae.decoder)):
        for key, v in seq.state_dict().items():
            v = v.detach().float()
            if prefix == "taesd_encoder" and key.startswith(last_enc + "."):
                mean = ae.norm.running_mean
                std = (ae.norm.running_var + ae.norm.eps).sqrt()
                v = v / std[:, None, None, None] if key.endswith("weight") else (v - mean) / std
            dims = tuple(d for d in range(v.ndim) if v.shape[d] == ae.w)
            if v.ndim == 4 and v.shape[0] == v.shape[1] == ae.w:
                dims = (0, 1)
            sd[f"{prefix}.{key}"] = _pad(v, dims)
    sd["vae_scale"] = torch.tensor(SD3_SCALE)
    sd["vae_shift"] = torch.tensor(SD3_SHIFT)
    extra = set(sd) - set(ref)
    assert not extra, extra
    for k, v in ref.items():
        assert sd[k].shape == v.shape, (k, sd[k].shape, v.shape)
    return {k: v.contiguous() for k, v in sd.items()}


def load_small_vae(path: Path = VAE_SMALL_FILE) -> SmallTAESD:
    """The VAE as the narrow network it is (~10x cheaper than the padded TAESD; for training
    and the differentiable sampler)."""
    sd = load_file(str(path))
    ae = SmallTAESD(int(sd.pop("w")), blocks=int(sd.pop("blocks")))
    ae.load_state_dict(sd)
    return ae.eval()


class FastDecoder(nn.Module):
    """Model-space latent -> IMAGE-layout ``[N, 32, 32, 3]`` in [0, 1], differentiable."""

    def __init__(self, ae: SmallTAESD) -> None:
        super().__init__()
        self.ae = ae.eval()

    def forward(self, x_model: torch.Tensor) -> torch.Tensor:
        return self.ae.decode(x_model).clamp(0, 1).permute(0, 2, 3, 1)


def load_fast_decoder(path: Path = VAE_SMALL_FILE) -> FastDecoder:
    dec = FastDecoder(load_small_vae(path))
    for p in dec.parameters():
        p.requires_grad_(False)
    return dec


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of two image batches in [0, 1]."""
    return -10 * torch.log10((a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10))


def to_numpy_images(x: torch.Tensor) -> np.ndarray:
    """IMAGE-layout tensor -> float32 numpy ``[N, 32, 32, 3]`` for the data set's checks."""
    return x.detach().float().clamp(0, 1).cpu().numpy()


# ---------------------------------------------------------------- the stock ComfyUI path
def stock_models(c, folder: Path = MODEL_DIR, clip_folder: Path = digits_lib.MODEL_DIR):
    """``(model, clip, vae)`` through the stock UNETLoader / CLIPLoader (sd3) / VAELoader
    nodes, with the two folders registered as model folders (as extra_model_paths.yaml would);
    the text encoder is the digits model's file (built if missing)."""
    fp = c.folder_paths
    for f in (folder, clip_folder):
        for kind in ("diffusion_models", "text_encoders", "vae"):
            fp.add_model_folder_path(kind, str(f))
    if not (clip_folder / CLIP_FILE.name).is_file():
        digits_lib.build_text_encoder(clip_folder / CLIP_FILE.name)
    n = c.nodes
    model = n.UNETLoader().load_unet(UNET_FILE.name, "default")[0]
    clip = n.CLIPLoader().load_clip(CLIP_FILE.name, type="sd3")[0]
    vae = n.VAELoader().load_vae(VAE_FILE.name)[0]
    return model, clip, vae


@torch.no_grad()
def stock_sample(c, model, clip, vae, prompt: str, batch: int, seed: int, steps: int = 30,
                 cfg: float = DEFAULT_CFG, sampler: str = "euler", scheduler: str = "simple"
                 ) -> torch.Tensor:
    """CLIPTextEncode -> EmptySD3LatentImage 32x32 -> KSampler -> VAEDecode: IMAGE [N,32,32,3]."""
    n = c.nodes
    pos = n.CLIPTextEncode().encode(clip, prompt)[0]
    neg = n.CLIPTextEncode().encode(clip, NEGATIVE)[0]
    latent = sys.modules["comfy_extras.nodes_sd3"].EmptySD3LatentImage.execute(
        CANVAS, CANVAS, batch).result[0]
    out = n.KSampler().sample(model, seed, steps, cfg, sampler, scheduler, pos, neg, latent,
                              denoise=1.0)[0]
    return n.VAEDecode().decode(vae, out)[0]
