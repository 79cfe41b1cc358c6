"""CLIP score and PickScore: both are a transformers ``CLIPModel`` comparing image and prompt.

* ``clip``: ``100 * cosine(image, text)`` (the usual CLIP score, not clamped at 0).
* ``pickscore``: ``logit_scale.exp() * cosine(image, text)``, as in the PickScore repository
  (PickScore_v1 is a CLIP-H ``CLIPModel``; its tokenizer/processor are the LAION CLIP-H ones).

The folder is a transformers model folder: ``config.json``, ``model.safetensors`` (or
``pytorch_model.bin``), tokenizer files (``tokenizer.json`` or ``vocab.json`` + ``merges.txt``)
and optionally ``preprocessor_config.json`` (else OpenAI CLIP's mean/std at the model's size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .base import (
    BaseReward,
    ImageTransform,
    PromptCache,
    hf_load_kwargs,
    hf_model_type,
    hub_file,
    log,
    read_json,
    require_folder,
    transform_from_processor_config,
)

# kind -> (model repo, repo with the tokenizer/processor when the model repo lacks them)
HUB_IDS: dict[str, tuple[str, str]] = {
    "clip": ("openai/clip-vit-large-patch14", "openai/clip-vit-large-patch14"),
    "pickscore": ("yuvalkirstain/PickScore_v1", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),
}
_CLIP_FILES = "a transformers CLIPModel (config.json, model.safetensors, tokenizer files)"


def has_tokenizer_files(folder: Path) -> bool:
    """Whether a folder holds a CLIP BPE tokenizer (fast ``tokenizer.json`` or vocab + merges)."""
    return (folder / "tokenizer.json").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())


def load_clip_tokenizer(source: str | Path, *, allow_download: bool) -> Any:
    """``CLIPTokenizerFast`` (converted from the slow files if need be), else ``CLIPTokenizer``."""
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    try:
        return CLIPTokenizerFast.from_pretrained(str(source), local_files_only=not allow_download)
    except Exception as fast_error:  # noqa: BLE001 - conversion needs optional packages
        log.debug("fast CLIP tokenizer failed for %s (%s); trying the slow one", source,
                  fast_error)
        return CLIPTokenizer.from_pretrained(str(source), local_files_only=not allow_download)


def processor_config(source: str | Path, *, local: bool,
                     fallback_repo: str | None = None) -> dict[str, Any] | None:
    """The ``preprocessor_config.json`` dict of a local folder or hub repo, if there is one."""
    if local:
        path = Path(source) / "preprocessor_config.json"
        return read_json(path) if path.is_file() else None
    for repo in dict.fromkeys(r for r in (str(source), fallback_repo) if r):
        found = hub_file(repo, "preprocessor_config.json", required=False)
        if found is not None:
            return read_json(found)
    return None


def load_clip_model(source: Path | None, kind: str, *, device: torch.device | str,
                    dtype: torch.dtype, allow_download: bool) -> tuple[Any, Any, ImageTransform]:
    """A ``CLIPModel`` (eval, on device), its tokenizer and its image transform.

    ``source`` is a local folder, or None to use the hub ids in :data:`HUB_IDS`.
    """
    from transformers import CLIPModel

    if source is None:
        model_src: str | Path = HUB_IDS[kind][0]
        tok_src: str | Path = model_src
        local = False
    else:
        folder = require_folder(source, kind, _CLIP_FILES)
        model_type = hf_model_type(folder, kind, _CLIP_FILES)
        if model_type != "clip":
            raise ValueError(f"{folder} holds a {model_type or 'unknown'!r} model, but the "
                             f"{kind!r} reward needs a CLIP model (model_type 'clip').")
        if not has_tokenizer_files(folder):
            raise ValueError(f"{folder} has no tokenizer files: copy tokenizer.json (or vocab.json"
                             f" and merges.txt) from {HUB_IDS[kind][1]} into it.")
        model_src = tok_src = folder
        local = True
    try:
        model = CLIPModel.from_pretrained(str(model_src),
                                          **hf_load_kwargs(dtype, allow_download and not local))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ValueError(f"Could not load the {kind!r} CLIP model from {model_src}: {e}") from e
    try:
        tokenizer = load_clip_tokenizer(tok_src, allow_download=not local)
    except (OSError, ValueError, TypeError) as e:
        if local:
            raise ValueError(f"Could not load the CLIP tokenizer in {tok_src}: {e}") from e
        tokenizer = load_clip_tokenizer(HUB_IDS[kind][1], allow_download=True)
    cfg = processor_config(model_src, local=local, fallback_repo=HUB_IDS[kind][1])
    transform = transform_from_processor_config(
        cfg, default_size=int(model.config.vision_config.image_size))
    model = model.to(device=device, dtype=dtype).eval()
    return model, tokenizer, transform


class CLIPSimilarityReward(BaseReward):
    """``scale * cosine(image embedding, text embedding)`` with a transformers ``CLIPModel``.

    ``scale`` is 100 for the CLIP score; None means the model's own ``logit_scale.exp()``
    (PickScore).
    """

    def __init__(self, model: Any, tokenizer: Any, transform: ImageTransform, *, name: str,
                 scale: float | None, device: torch.device | str, dtype: torch.dtype,
                 batch_size: int) -> None:
        super().__init__(name=name, device=device, dtype=dtype, batch_size=batch_size)
        self.model = model
        self.tokenizer = tokenizer
        self.transform = transform
        limits = [int(model.config.text_config.max_position_embeddings)]
        if getattr(tokenizer, "model_max_length", None):
            limits.append(int(tokenizer.model_max_length))
        self.max_length = min(limits)
        with torch.inference_mode():
            self.scale = float(scale if scale is not None else model.logit_scale.float().exp())
        self.text_embeds = PromptCache(self._encode_text)

    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts, padding=True, truncation=True,
                                max_length=self.max_length, return_tensors="pt")
        feats = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                             attention_mask=tokens["attention_mask"].to(self.device))
        return F.normalize(embedding(feats).float(), dim=-1)

    def _score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        pixels = self.transform(images, self.device, self.dtype)
        img = F.normalize(embedding(self.model.get_image_features(pixel_values=pixels)).float(),
                          dim=-1)
        return self.scale * (img * self.text_embeds(prompts)).sum(-1)


def embedding(output: Any) -> torch.Tensor:
    """The projected embedding from ``get_*_features``: a tensor in transformers 4, a
    ``BaseModelOutputWithPooling`` holding it as ``pooler_output`` in transformers 5."""
    if torch.is_tensor(output):
        return output
    pooled = getattr(output, "pooler_output", None)
    if not torch.is_tensor(pooled):
        raise TypeError(f"Unexpected CLIP feature output {type(output).__name__}.")
    return pooled


def load_clip_reward(kind: str, source: Path | None, *, device: torch.device | str,
                     dtype: torch.dtype, allow_download: bool,
                     batch_size: int) -> CLIPSimilarityReward:
    """Load the ``clip`` (100 * cosine) or ``pickscore`` (logit_scale * cosine) reward."""
    model, tokenizer, transform = load_clip_model(source, kind, device=device, dtype=dtype,
                                                  allow_download=allow_download)
    log.info("loaded the %s reward from %s on %s (%s)", kind, source or HUB_IDS[kind][0],
             device, dtype)
    return CLIPSimilarityReward(model, tokenizer, transform, name=kind,
                                scale=100.0 if kind == "clip" else None, device=device,
                                dtype=dtype, batch_size=batch_size)
