"""Shared pieces of the reward models: the ``Reward`` protocol, batching, in-torch preprocessing.

Images come in ComfyUI's IMAGE layout, a float tensor ``[N, H, W, C]`` in ``[0, 1]``. Every
reward resizes, crops and normalises them itself, in torch and on its device, so they can be of
any size. Nothing here imports ComfyUI.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from ...policies.json_io import read_json as read_capped_json

log = logging.getLogger("learned_schedules.rewards")

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# PIL resample codes, as image processor configs store them
_PIL_RESAMPLE = {0: "nearest", 1: "bilinear", 2: "bilinear", 3: "bicubic", 4: "bilinear",
                 5: "bicubic"}


@runtime_checkable
class Reward(Protocol):
    """A loaded reward model: scores images against their prompts, higher is better."""

    name: str

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """``images`` [N, H, W, 3] in [0, 1], one prompt each -> ``[N]`` float32 on the CPU."""
        ...


def check_inputs(images: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, list[str]]:
    """Validate a batch; returns RGB images and one prompt per image (a single prompt is shared)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"Reward images must be a [N, H, W, C] tensor (ComfyUI IMAGE), "
                         f"got {shape}.")
    channels = images.shape[-1]
    if channels == 4:
        images = images[..., :3]
    elif channels == 1:
        images = images.expand(*images.shape[:-1], 3)
    elif channels != 3:
        raise ValueError(f"Reward images need 1, 3 or 4 channels last, got {channels}.")
    return images, prompts_per_image(prompts, images.shape[0])


def prompts_per_image(prompts: Sequence[str] | str, n: int) -> list[str]:
    """One prompt per image of ``n``: a single prompt is shared; another count is refused."""
    prompts = [prompts] if isinstance(prompts, str) else [str(p) for p in prompts]
    if len(prompts) == 1 and n != 1:
        prompts = prompts * n
    if len(prompts) != n:
        raise ValueError(f"Got {n} images but {len(prompts)} prompts; pass one prompt per image.")
    return prompts


@dataclass(frozen=True)
class ImageTransform:
    """Resize (+ center crop) + normalise, in torch, like the transformers image processors.

    ``mode="shortest"``: scale the shortest side to ``resize`` (the longer one to
    ``int(resize * long / short)``, as transformers does), then center crop to ``crop`` (h, w).
    ``mode="squash"``: resize straight to ``crop`` (h, w), ignoring the aspect ratio (TrOCR/ViT).
    """

    crop: tuple[int, int]
    resize: int = 0
    mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    std: tuple[float, ...] = OPENAI_CLIP_STD
    mode: str = "shortest"
    interpolation: str = "bicubic"

    def __call__(self, images: torch.Tensor, device: torch.device | str,
                 dtype: torch.dtype) -> torch.Tensor:
        """``[N, H, W, 3]`` in [0, 1] -> normalised ``[N, 3, h, w]`` on ``device`` in ``dtype``."""
        x = images.to(device=device, dtype=torch.float32).movedim(-1, 1)
        h, w = x.shape[-2:]
        if self.mode == "squash":
            size = self.crop
        else:
            short, long = (h, w) if h <= w else (w, h)
            target = self.resize or min(self.crop)
            new_long = int(target * long / short)
            size = (target, new_long) if h <= w else (new_long, target)
        if (h, w) != tuple(size):
            aa = self.interpolation in ("bilinear", "bicubic")
            x = F.interpolate(x, size=size, mode=self.interpolation, antialias=aa,
                              **({} if self.interpolation == "nearest" else
                                 {"align_corners": False}))
            x = x.clamp(0.0, 1.0)  # PIL clamps bicubic overshoot to the pixel range
        if self.mode != "squash":
            ch, cw = self.crop
            h, w = x.shape[-2:]
            if h < ch or w < cw:  # transformers pads; only happens with odd configs
                x = F.pad(x, (0, max(cw - w, 0), 0, max(ch - h, 0)))
                h, w = x.shape[-2:]
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top:top + ch, left:left + cw]
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return ((x - mean) / std).to(dtype)


def transform_from_processor_config(cfg: dict[str, Any] | None, *, default_size: int,
                                    default_mean: Sequence[float] = OPENAI_CLIP_MEAN,
                                    default_std: Sequence[float] = OPENAI_CLIP_STD,
                                    squash: bool = False) -> ImageTransform:
    """Build an :class:`ImageTransform` from a ``preprocessor_config.json`` dict (or defaults)."""
    cfg = cfg or {}
    size = cfg.get("size", default_size)
    crop = cfg.get("crop_size")
    resize = default_size
    hw = (default_size, default_size)
    if isinstance(size, int):
        resize, hw = size, (size, size)
    elif isinstance(size, dict):
        if "shortest_edge" in size:
            resize = int(size["shortest_edge"])
            hw = (resize, resize)
        elif "height" in size and "width" in size:
            hw = (int(size["height"]), int(size["width"]))
            resize = min(hw)
    if cfg.get("do_center_crop", crop is not None) and crop is not None and not squash:
        hw = (crop, crop) if isinstance(crop, int) else (int(crop["height"]), int(crop["width"]))
    interpolation = _PIL_RESAMPLE.get(int(cfg.get("resample", 3)), "bicubic")
    return ImageTransform(crop=hw, resize=resize,
                          mean=tuple(float(v) for v in cfg.get("image_mean", default_mean)),
                          std=tuple(float(v) for v in cfg.get("image_std", default_std)),
                          mode="squash" if squash else "shortest", interpolation=interpolation)


class BaseReward:
    """Chunks a batch by ``batch_size`` and runs ``_score`` under ``torch.inference_mode``."""

    name: str = "reward"

    def __init__(self, *, name: str, device: torch.device | str, dtype: torch.dtype,
                 batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.name = name
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = int(batch_size)

    def _score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Score ``images`` [N, H, W, 3] against ``prompts``; returns ``[N]`` float32 on the CPU."""
        images, prompts = check_inputs(images, prompts)
        out = []
        with torch.inference_mode():
            for i in range(0, images.shape[0], self.batch_size):
                chunk = self._score(images[i:i + self.batch_size], prompts[i:i + self.batch_size])
                out.append(chunk.reshape(-1).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, device={self.device}, "
                f"dtype={self.dtype})")


class PromptCache:
    """A small LRU of per-prompt embeddings: RL batches repeat the same prompts many times."""

    def __init__(self, encode: Callable[[list[str]], torch.Tensor], max_size: int = 2048) -> None:
        self._encode = encode
        self._max = max_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """Embeddings ``[len(prompts), D]``; unseen prompts are encoded together in one batch."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            for p, e in zip(missing, self._encode(missing), strict=True):
                self._cache[p] = e
        rows = []
        for p in prompts:
            self._cache.move_to_end(p)
            rows.append(self._cache[p])
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return torch.stack(rows)


# ---------------------------------------------------------------------------------------------
# Loading helpers


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON file into a dict; a plain ValueError if it is not valid JSON."""
    data = read_capped_json(path, "Reward config")
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object.")
    return data


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch pickle (``weights_only=True``, never more).

    Unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` and strips a ``module.`` prefix.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path), device="cpu")
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user-facing ValueError
        raise ValueError(f"Could not read the weights file {path}: {e}") from e
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors.")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


HF_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                   "pytorch_model.bin.index.json")


def is_hf_weight_file(path: Path) -> bool:
    """Whether ``path`` is (a shard of) a transformers model's own weights."""
    name = path.name
    return name in HF_WEIGHT_NAMES or (
        name.startswith(("model-", "pytorch_model-")) and "-of-" in name)


def require_folder(path: Path, kind: str, what: str) -> Path:
    """``path`` as an existing folder, else a ValueError saying what belongs there."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"The {kind!r} reward needs a folder holding {what}, but {path} is "
                         f"{'a file' if path.exists() else 'missing'}.")
    return path


def hf_model_type(folder: Path, kind: str, what: str) -> str:
    """The ``model_type`` in ``folder/config.json``; ValueError if it is no transformers folder."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"{folder} holds no config.json, so it is not a transformers model "
                         f"folder; the {kind!r} reward needs {what} there.")
    return str(read_json(cfg_path).get("model_type", ""))


def pick_weight_file(folder: Path, kind: str, preferred: Sequence[str],
                     suffixes: Sequence[str] = (".safetensors", ".pt", ".pth", ".bin"),
                     hint: str = "aesthetic") -> Path:
    """The one checkpoint file in ``folder`` (a preferred name first), skipping HF weights."""
    for name in preferred:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix in suffixes and not is_hf_weight_file(p))
    if len(found) > 1:
        hinted = [p for p in found if hint in p.name.lower()]
        if len(hinted) == 1:
            return hinted[0]
        raise ValueError(f"{folder} holds several candidate weight files for the {kind!r} reward "
                         f"({', '.join(p.name for p in found)}); keep one, or name it "
                         f"{preferred[0]}.")
    if not found:
        raise ValueError(f"{folder} holds no weight file for the {kind!r} reward (expected "
                         f"{' or '.join(preferred)}, or one {'/'.join(suffixes)} file).")
    return found[0]


def hub_file(repo_id: str, filename: str, *, required: bool = True) -> Path | None:
    """Download (or reuse from the cache) one file of a hub repo; only with ``allow_download``."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, filename))
    except Exception as e:  # noqa: BLE001 - network / missing-file errors all end the same way
        if not required:
            return None
        raise ValueError(f"Could not download {filename} from {repo_id}: {e}") from e


def hf_load_kwargs(dtype: torch.dtype, allow_download: bool) -> dict[str, Any]:
    """``from_pretrained`` keywords: offline unless allowed, and the dtype under either name."""
    import transformers

    major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
    dtype_key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    return {"local_files_only": not allow_download, dtype_key: dtype}
