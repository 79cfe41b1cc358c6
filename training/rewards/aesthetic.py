"""LAION aesthetic predictor: a head on the L2-normalised CLIP ViT-L/14 image embedding.

The folder holds a transformers CLIP (``CLIPModel`` or ``CLIPVisionModelWithProjection``;
only the vision tower is loaded) plus one head file, ``.safetensors`` or the upstream ``.pth``
(read with ``torch.load(weights_only=True)``). The head is recognised by its keys:

* "improved aesthetic predictor" MLP (``layers.0.weight`` ...): Linear(768, 1024), Dropout,
  Linear(1024, 128), Dropout, Linear(128, 64), Dropout, Linear(64, 16), Linear(16, 1), no
  activations (as upstream);
* the simple linear head (``weight``, ``bias``): Linear(768, 1).

The score is the head's output (about 1..10 for the real weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import (
    BaseReward,
    ImageTransform,
    hf_load_kwargs,
    hf_model_type,
    hub_file,
    load_state_file,
    log,
    pick_weight_file,
    require_folder,
    transform_from_processor_config,
)
from .clip_rewards import processor_config

HUB_CLIP = "openai/clip-vit-large-patch14"
HUB_HEAD = ("trl-lib/ddpo-aesthetic-predictor", "aesthetic-model.pth")
HEAD_NAMES = ("aesthetic_head.safetensors", "sac+logos+ava1-l14-linearMSE.pth",
              "aesthetic-model.pth", "ava+logos-l14-linearMSE.pth", "sa_0_4_vit_l_14_linear.pth")
_FILES = ("a transformers CLIP ViT-L/14 (config.json, model.safetensors) and an aesthetic head "
          "file (.safetensors or .pth)")


class AestheticMLP(nn.Module):
    """The improved-aesthetic-predictor MLP (dropouts kept so the keys match upstream)."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        d0, d1, d2, d3, d4 = dims
        self.layers = nn.Sequential(
            nn.Linear(d0, d1), nn.Dropout(0.2), nn.Linear(d1, d2), nn.Dropout(0.2),
            nn.Linear(d2, d3), nn.Dropout(0.1), nn.Linear(d3, d4), nn.Linear(d4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def build_head(sd: dict[str, torch.Tensor], path: Path | str) -> nn.Module:
    """The aesthetic head matching a state dict's keys (MLP or linear)."""
    mlp_keys = [f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")]
    try:
        if all(k in sd for k in mlp_keys):
            dims = [sd["layers.0.weight"].shape[1]] + [sd[f"layers.{i}.weight"].shape[0]
                                                        for i in (0, 2, 4, 6)]
            head: nn.Module = AestheticMLP(dims)
            head.load_state_dict({k: sd[k] for k in mlp_keys})
        elif set(sd) == {"weight", "bias"} and sd["weight"].ndim == 2:
            head = nn.Linear(sd["weight"].shape[1], sd["weight"].shape[0])
            head.load_state_dict(sd)
        else:
            raise ValueError("unknown keys " + ", ".join(sorted(sd)[:6]))
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{path} is not an aesthetic predictor head (expected the MLP's "
                         f"layers.0.weight ... or a linear weight/bias): {e}") from e
    return head.eval()


class AestheticReward(BaseReward):
    """Aesthetic score of the image alone (the prompt is ignored)."""

    def __init__(self, vision: Any, head: nn.Module, transform: ImageTransform, *, name: str,
                 device: torch.device | str, dtype: torch.dtype, batch_size: int) -> None:
        super().__init__(name=name, device=device, dtype=dtype, batch_size=batch_size)
        self.vision = vision
        self.head = head
        self.transform = transform

    def _score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        pixels = self.transform(images, self.device, self.dtype)
        emb = F.normalize(self.vision(pixel_values=pixels).image_embeds.float(), dim=-1)
        return self.head(emb).squeeze(-1)


def load_aesthetic_reward(source: Path | None, *, device: torch.device | str,
                          dtype: torch.dtype, allow_download: bool,
                          batch_size: int) -> AestheticReward:
    """Load the LAION aesthetic predictor from a folder (or the hub, when allowed)."""
    from transformers import AutoConfig, CLIPVisionModelWithProjection

    if source is None:
        clip_src: str | Path = HUB_CLIP
        head_path: Path = hub_file(*HUB_HEAD)  # type: ignore[assignment]  # required=True
        local = False
    else:
        folder = require_folder(source, "aesthetic", _FILES)
        model_type = hf_model_type(folder, "aesthetic", _FILES)
        if model_type not in ("clip", "clip_vision_model"):
            raise ValueError(f"{folder} holds a {model_type or 'unknown'!r} model, but the "
                             "'aesthetic' reward needs a CLIP ViT-L/14 (model_type 'clip').")
        head_path = pick_weight_file(folder, "aesthetic", HEAD_NAMES)
        clip_src, local = folder, True
    head = build_head(load_state_file(head_path), head_path)
    try:
        cfg = AutoConfig.from_pretrained(str(clip_src), local_files_only=local)
        if cfg.model_type == "clip":  # the projection size lives on the full config
            cfg.vision_config.projection_dim = cfg.projection_dim
            cfg = cfg.vision_config
        vision = CLIPVisionModelWithProjection.from_pretrained(
            str(clip_src), config=cfg, **hf_load_kwargs(dtype, not local))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ValueError(f"Could not load the CLIP vision model from {clip_src}: {e}") from e
    in_dim = next(p for p in head.parameters() if p.ndim == 2).shape[1]
    if vision.config.projection_dim != in_dim:
        raise ValueError(f"The aesthetic head {head_path} takes {in_dim}-d embeddings but the "
                         f"CLIP in {clip_src} gives {vision.config.projection_dim}-d ones; "
                         "use CLIP ViT-L/14.")
    transform = transform_from_processor_config(processor_config(clip_src, local=local),
                                                default_size=int(vision.config.image_size))
    log.info("loaded the aesthetic reward from %s (head %s) on %s (%s)", clip_src,
             Path(head_path).name, device, dtype)
    return AestheticReward(vision.to(device=device, dtype=dtype).eval(),
                           head.to(device=device), transform, name="aesthetic",
                           device=device, dtype=dtype, batch_size=batch_size)
