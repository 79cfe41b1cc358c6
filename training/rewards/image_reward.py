"""ImageReward (Xu et al. 2023): a BLIP ViT + cross-attention BERT + MLP, trained on preferences.

Re-implemented on transformers' BLIP classes (``BlipVisionModel`` is BLIP's timm-style ViT and
``BlipTextModel`` is its cross-attention BERT, ``med.py``) so the PyPI ``image-reward`` package,
which pins timm 0.6 / fairscale and imports diffusers/datasets at import time, is not needed.
The upstream checkpoint's keys are converted at load time.

The folder holds the upstream ``ImageReward.pt`` (state dict, read with
``torch.load(weights_only=True)``; ``.safetensors`` works too), optionally its ``med_config.json``
(BERT sizes; otherwise inferred from the weights), and the ``bert-base-uncased`` tokenizer files
(``vocab.txt`` [+ ``tokenizer_config.json``], at the top or in ``tokenizer/``). The vision
architecture (ViT-L/16 at 224 px upstream) is read off the weights' shapes; its head count is
``width // 64`` unless ``med_config.json`` says ``vision_num_attention_heads``.

Score: ``(mlp(text CLS feature) - 0.16717) / 1.03334``, as ``ImageReward.score``; prompts are
tokenised to 35 tokens like upstream.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .aesthetic import build_head
from .base import (
    BaseReward,
    ImageTransform,
    hub_file,
    load_state_file,
    log,
    pick_weight_file,
    read_json,
    require_folder,
)

HUB_REPO = "THUDM/ImageReward"
HUB_TOKENIZER = "bert-base-uncased"
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
PROMPT_TOKENS = 35
_FILES = "ImageReward.pt, med_config.json and the bert-base-uncased tokenizer files (vocab.txt)"


def convert_vision_key(key: str) -> str:
    """BLIP/timm ViT key (``visual_encoder.`` stripped) -> ``BlipVisionModel`` key."""
    fixed = {"cls_token": "embeddings.class_embedding",
             "pos_embed": "embeddings.position_embedding",
             "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
             "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
             "norm.weight": "post_layernorm.weight", "norm.bias": "post_layernorm.bias"}
    if key in fixed:
        return fixed[key]
    key = re.sub(r"^blocks\.", "encoder.layers.", key)
    key = key.replace(".norm1.", ".layer_norm1.").replace(".norm2.", ".layer_norm2.")
    return key.replace(".attn.qkv.", ".self_attn.qkv.").replace(".attn.proj.",
                                                                ".self_attn.projection.")


def split_checkpoint(sd: dict[str, torch.Tensor], path: Path | str) -> tuple[dict, dict, dict]:
    """(vision, text, head) state dicts in transformers / head naming."""
    vision, text, head = {}, {}, {}
    for k, v in sd.items():
        if k.startswith("blip.visual_encoder."):
            vision[convert_vision_key(k[len("blip.visual_encoder."):])] = v
        elif k.startswith("blip.text_encoder.") and not k.endswith("position_ids"):
            text[k[len("blip.text_encoder."):]] = v
        elif k.startswith("mlp."):
            head[k[len("mlp."):]] = v
    needed = ("embeddings.class_embedding", "embeddings.position_embedding",
              "embeddings.patch_embedding.weight")
    if not all(k in vision for k in needed) or "embeddings.word_embeddings.weight" not in text \
            or not head:
        raise ValueError(f"{path} is not an ImageReward checkpoint (expected blip.visual_encoder.*,"
                         " blip.text_encoder.* and mlp.* keys).")
    return vision, text, head


def _count_layers(sd: dict[str, torch.Tensor], pattern: str) -> int:
    idx = {int(m.group(1)) for k in sd if (m := re.match(pattern, k))}
    return max(idx) + 1 if idx else 0


def build_configs(vision: dict[str, torch.Tensor], text: dict[str, torch.Tensor],
                  med: dict[str, Any]) -> tuple[Any, Any]:
    """``BlipVisionConfig`` and ``BlipTextConfig`` matching the weights (and ``med_config``)."""
    from transformers import BlipTextConfig, BlipVisionConfig

    width, _, patch, _ = vision["embeddings.patch_embedding.weight"].shape
    grid = int(round((vision["embeddings.position_embedding"].shape[1] - 1) ** 0.5))
    vcfg = BlipVisionConfig(
        hidden_size=width, patch_size=patch, image_size=grid * patch,
        intermediate_size=vision["encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=_count_layers(vision, r"encoder\.layers\.(\d+)\."),
        num_attention_heads=int(med.get("vision_num_attention_heads", max(1, width // 64))),
        layer_norm_eps=1e-6, hidden_act="gelu", attention_dropout=0.0)
    vocab, hidden = text["embeddings.word_embeddings.weight"].shape
    tcfg = BlipTextConfig(
        vocab_size=vocab, hidden_size=hidden, encoder_hidden_size=width,
        intermediate_size=text["encoder.layer.0.intermediate.dense.weight"].shape[0],
        num_hidden_layers=_count_layers(text, r"encoder\.layer\.(\d+)\."),
        num_attention_heads=int(med.get("num_attention_heads", max(1, hidden // 64))),
        max_position_embeddings=text["embeddings.position_embeddings.weight"].shape[0],
        hidden_act=str(med.get("hidden_act", "gelu")),
        layer_norm_eps=float(med.get("layer_norm_eps", 1e-12)),
        pad_token_id=int(med.get("pad_token_id", 0)), is_decoder=True,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return vcfg, tcfg


class ImageRewardModel(BaseReward):
    """ImageReward's score of each (image, prompt) pair."""

    def __init__(self, vision: nn.Module, text: nn.Module, head: nn.Module, tokenizer: Any,
                 transform: ImageTransform, *, name: str, device: torch.device | str,
                 dtype: torch.dtype, batch_size: int) -> None:
        super().__init__(name=name, device=device, dtype=dtype, batch_size=batch_size)
        self.vision, self.text, self.head = vision, text, head
        self.tokenizer = tokenizer
        self.transform = transform
        self.max_length = min(PROMPT_TOKENS, int(text.config.max_position_embeddings))

    def _score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        pixels = self.transform(images, self.device, self.dtype)
        image_embeds = self.vision(pixel_values=pixels).last_hidden_state
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True,
                                max_length=self.max_length, return_tensors="pt")
        out = self.text(input_ids=tokens["input_ids"].to(self.device),
                        attention_mask=tokens["attention_mask"].to(self.device),
                        encoder_hidden_states=image_embeds,
                        encoder_attention_mask=torch.ones(image_embeds.shape[:-1],
                                                          dtype=torch.long, device=self.device),
                        return_dict=True)
        reward = self.head(out.last_hidden_state[:, 0, :].float()).squeeze(-1)
        return (reward - REWARD_MEAN) / REWARD_STD


def _tokenizer_source(folder: Path) -> Path | None:
    for candidate in (folder, folder / "tokenizer"):
        if (candidate / "vocab.txt").is_file() or (candidate / "tokenizer.json").is_file():
            return candidate
    return None


def load_image_reward(source: Path | None, *, device: torch.device | str, dtype: torch.dtype,
                      allow_download: bool, batch_size: int) -> ImageRewardModel:
    """Load ImageReward from a folder (or the hub, when allowed)."""
    from transformers import BertTokenizerFast, BlipTextModel, BlipVisionModel

    if source is None:
        ckpt: Path = hub_file(HUB_REPO, "ImageReward.pt")  # type: ignore[assignment]
        med_path = hub_file(HUB_REPO, "med_config.json", required=False)
        tok_src: str | Path = HUB_TOKENIZER
    else:
        folder = require_folder(source, "imagereward", _FILES)
        ckpt = pick_weight_file(folder, "imagereward", ("ImageReward.pt",),
                                suffixes=(".pt", ".safetensors", ".pth"), hint="imagereward")
        med_path = folder / "med_config.json"
        found = _tokenizer_source(folder)
        if found is None:
            raise ValueError(f"{folder} has no tokenizer files: copy vocab.txt and "
                             f"tokenizer_config.json from {HUB_TOKENIZER} into it.")
        tok_src = found
    med = read_json(med_path) if med_path is not None and med_path.is_file() else {}
    vision_sd, text_sd, head_sd = split_checkpoint(load_state_file(ckpt), ckpt)
    vcfg, tcfg = build_configs(vision_sd, text_sd, med)
    vision = BlipVisionModel(vcfg)
    text = BlipTextModel(tcfg, add_pooling_layer=False)
    try:
        vision.load_state_dict(vision_sd, strict=True)
        text.load_state_dict(text_sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{ckpt} does not match the ImageReward architecture: "
                         f"{str(e)[:300]}") from e
    head = build_head(head_sd, ckpt)
    try:
        tokenizer = BertTokenizerFast.from_pretrained(str(tok_src),
                                                      local_files_only=source is not None)
    except (OSError, ValueError) as e:
        raise ValueError(f"Could not load the BERT tokenizer from {tok_src}: {e}") from e
    transform = ImageTransform(crop=(vcfg.image_size, vcfg.image_size), resize=vcfg.image_size)
    log.info("loaded the imagereward reward from %s on %s (%s)", ckpt, device, dtype)
    return ImageRewardModel(vision.to(device=device, dtype=dtype).eval(),
                            text.to(device=device, dtype=dtype).eval(), head.to(device=device),
                            tokenizer, transform, name="imagereward", device=device, dtype=dtype,
                            batch_size=batch_size)
