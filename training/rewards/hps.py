"""HPSv2 / HPSv2.1 (Human Preference Score): an open_clip ViT-H-14 fine-tuned on preferences.

The folder holds the open_clip checkpoint (``HPS_v2.1_compressed.pt`` or ``HPS_v2_compressed.pt``,
a state dict, possibly under ``"state_dict"``; ``.safetensors`` works too) and, optionally, an
``open_clip_config.json`` describing another architecture (``{"model_cfg": {...}}``, a bare
model config, or ``{"model_name": "ViT-L-14"}``); without it the architecture is ``ViT-H-14``.
Text goes through open_clip's bundled simple tokenizer (no download).

Images: open_clip's eval transform, done in torch (bicubic shortest-side resize to 224, center
crop, OpenAI mean/std; ``preprocess_cfg`` in ``open_clip_config.json`` overrides it).

Score: the plain cosine similarity of the normalised image and text embeddings, as the
``hpsv2`` package's ``score()`` returns it (about 0.2..0.35 for real images; papers often
print it multiplied by 100).

Needs the optional extra ``open_clip_torch`` (``pip install learned-schedules[hps]``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .base import (
    BaseReward,
    ImageTransform,
    PromptCache,
    hub_file,
    load_state_file,
    log,
    pick_weight_file,
    read_json,
)

OPEN_CLIP_PIN = "open_clip_torch==3.3.0"
DEFAULT_ARCH = "ViT-H-14"
HUB_CKPT = ("xswu/HPSv2", "HPS_v2.1_compressed.pt")
CKPT_NAMES = ("HPS_v2.1_compressed.pt", "HPS_v2_compressed.pt", "HPS_v2.1.safetensors",
              "HPS_v2.safetensors")


def import_open_clip() -> Any:
    """``open_clip``, or a ValueError saying how to install it."""
    try:
        import open_clip
    except ImportError as e:
        raise ValueError("The 'hpsv2' reward needs open_clip, which is not installed: run "
                         f"`pip install {OPEN_CLIP_PIN}` (or `pip install "
                         "learned-schedules[hps]`).") from e
    return open_clip


def model_config(open_clip: Any,
                 folder: Path | None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(name, model config, preprocess overrides) from ``open_clip_config.json`` or ViT-H-14."""
    path = folder / "open_clip_config.json" if folder is not None else None
    name, cfg, pre = DEFAULT_ARCH, None, {}
    if path is not None and path.is_file():
        data = read_json(path)
        pre = dict(data.get("preprocess_cfg", {}))
        if "model_cfg" in data or "embed_dim" in data:
            cfg = data.get("model_cfg", data)
            name = str(data.get("model_name", f"custom ({path})"))
        elif "model_name" in data:
            name = str(data["model_name"])
        else:
            raise ValueError(f"{path} has neither 'model_cfg' nor 'model_name'.")
    if cfg is None:
        cfg = open_clip.get_model_config(name)
        if cfg is None:
            raise ValueError(f"open_clip has no architecture named {name!r}.")
    if not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ValueError(f"The open_clip config for {name} lacks embed_dim/vision_cfg/text_cfg.")
    return name, dict(cfg), pre


class HPSReward(BaseReward):
    """Cosine similarity of open_clip image and text embeddings (HPSv2's score)."""

    def __init__(self, model: Any, tokenizer: Any, transform: ImageTransform, *, name: str,
                 device: torch.device | str, dtype: torch.dtype, batch_size: int) -> None:
        super().__init__(name=name, device=device, dtype=dtype, batch_size=batch_size)
        self.model = model
        self.tokenizer = tokenizer
        self.transform = transform
        self.text_embeds = PromptCache(self._encode_text)

    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def _score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        pixels = self.transform(images, self.device, self.dtype)
        img = F.normalize(self.model.encode_image(pixels).float(), dim=-1)
        return (img * self.text_embeds(prompts)).sum(-1)


def load_hps_reward(source: Path | None, *, device: torch.device | str, dtype: torch.dtype,
                    allow_download: bool, batch_size: int) -> HPSReward:
    """Load HPSv2(.1) from a folder or checkpoint file (or the hub, when allowed)."""
    open_clip = import_open_clip()
    from open_clip.model import CLIP, CustomTextCLIP, resize_pos_embed
    from open_clip.tokenizer import SimpleTokenizer
    from open_clip.transform import PreprocessCfg

    folder: Path | None
    if source is None:
        ckpt: Path = hub_file(*HUB_CKPT)  # type: ignore[assignment]  # required=True
        folder = None
    else:
        source = Path(source)
        if source.is_file():
            ckpt, folder = source, source.parent
        elif source.is_dir():
            folder = source
            ckpt = pick_weight_file(folder, "hpsv2", CKPT_NAMES, suffixes=(".pt", ".safetensors",
                                                                           ".pth", ".bin"),
                                    hint="hps")
        else:
            raise ValueError(f"The 'hpsv2' reward needs a folder holding HPS_v2.1_compressed.pt, "
                             f"but {source} is missing.")
    name, cfg, pre_override = model_config(open_clip, folder)
    if "hf_model_name" in cfg["text_cfg"] or "timm_model_name" in cfg["vision_cfg"]:
        raise ValueError(f"The open_clip architecture {name} needs a hub text/vision tower; "
                         "only plain open_clip ViT configs work offline.")
    sd = load_state_file(ckpt)
    mismatch = f"{ckpt} is not an open_clip {name} checkpoint (HPSv2 uses ViT-H-14; add an " \
               "open_clip_config.json for another architecture)"
    conv = sd.get("visual.conv1.weight")
    if conv is None or "text_projection" not in sd:  # checked before building a big model
        raise ValueError(f"{mismatch}: it has no visual.conv1.weight / text_projection.")
    if conv.shape[0] != cfg["vision_cfg"].get("width"):
        raise ValueError(f"{mismatch}: its vision width is {conv.shape[0]}, not "
                         f"{cfg['vision_cfg'].get('width')}.")
    model_cls = CustomTextCLIP if cfg.pop("custom_text", False) else CLIP
    model = model_cls(**cfg)
    try:
        resize_pos_embed(sd, model)
        model.load_state_dict(sd, strict=True)
    except (RuntimeError, KeyError, ValueError) as e:
        raise ValueError(f"{mismatch}: {str(e)[:300]}") from e
    pre = {**asdict(PreprocessCfg()), "size": model.visual.image_size, **pre_override}
    size = pre["size"]
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    mode = "squash" if pre.get("resize_mode") == "squash" else "shortest"
    transform = ImageTransform(crop=hw, resize=min(hw), mean=tuple(pre["mean"]),
                               std=tuple(pre["std"]), mode=mode,
                               interpolation=str(pre.get("interpolation", "bicubic")))
    tokenizer = SimpleTokenizer(context_length=model.context_length)
    log.info("loaded the hpsv2 reward (%s) from %s on %s (%s)", name, ckpt, device, dtype)
    return HPSReward(model.to(device=device, dtype=dtype).eval(), tokenizer, transform,
                     name="hpsv2", device=device, dtype=dtype, batch_size=batch_size)
