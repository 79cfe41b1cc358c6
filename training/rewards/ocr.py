"""OCR text match: does the image show the text the prompt asks for?

Text is recognised with a transformers TrOCR (``VisionEncoderDecoderModel``, greedy decoding of
at most ``max_tokens`` tokens) and compared with :func:`reward_target_text` of the prompt:
``reward = 1 - levenshtein(a, b) / max(len(a), len(b))`` on lower-cased, whitespace-collapsed
strings, in [0, 1] (1 when both are empty).

The folder is a transformers model folder: ``config.json`` (model_type
``vision-encoder-decoder``), the weights, the tokenizer files and ``preprocessor_config.json``
(else the encoder's image size with mean/std 0.5, as TrOCR). Like TrOCR's processor, images are
resized to the model's square size without cropping, so no text is cut off.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from .base import (
    BaseReward,
    ImageTransform,
    hf_load_kwargs,
    hf_model_type,
    log,
    require_folder,
    transform_from_processor_config,
)
from .clip_rewards import processor_config

HUB_ID = "microsoft/trocr-base-printed"
MAX_TOKENS = 32
_FILES = ("a transformers TrOCR VisionEncoderDecoderModel (config.json, model.safetensors, "
          "tokenizer and preprocessor_config.json)")
_QUOTED = (re.compile(r'"([^"]+)"'), re.compile(r"“([^”]+)”"),
           re.compile(r"(?<!\w)'([^']+)'(?!\w)"), re.compile(r"‘([^’]+)’"))


def reward_target_text(prompt: str) -> str:
    """The text an image should show: the first quoted span of the prompt, else the prompt.

    Quotes may be ``"..."``, ``'...'`` (not apostrophes inside words) or ``“...”``.
    """
    best: tuple[int, str] | None = None
    for pattern in _QUOTED:
        for m in pattern.finditer(prompt):
            if m.group(1).strip():
                if best is None or m.start() < best[0]:
                    best = (m.start(), m.group(1).strip())
                break
    return best[1] if best is not None else prompt.strip()


def normalize_text(text: str) -> str:
    """Lower-case and collapse whitespace."""
    return " ".join(text.lower().split())


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def text_match(recognised: str, target: str) -> float:
    """``1 - normalised edit distance`` of the normalised strings, in [0, 1]."""
    a, b = normalize_text(recognised), normalize_text(target)
    longest = max(len(a), len(b))
    return 1.0 if longest == 0 else 1.0 - levenshtein(a, b) / longest


class OCRReward(BaseReward):
    """TrOCR reads each image; the score is its text match with the prompt's target text."""

    def __init__(self, model: Any, tokenizer: Any, transform: ImageTransform, *, name: str,
                 device: torch.device | str, dtype: torch.dtype, batch_size: int,
                 max_tokens: int = MAX_TOKENS) -> None:
        super().__init__(name=name, device=device, dtype=dtype, batch_size=batch_size)
        self.model = model
        self.tokenizer = tokenizer
        self.transform = transform
        self.max_tokens = max_tokens
        self.last_texts: list[str] = []  # what the last call read, one per image

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Text-match scores ``[N]`` in [0, 1]; the recognised texts go to ``last_texts``."""
        self.last_texts = []
        return super().__call__(images, prompts)

    def recognise(self, images: torch.Tensor) -> list[str]:
        """The text TrOCR reads in each image (greedy decoding)."""
        pixels = self.transform(images, self.device, self.dtype)
        cfg = self.model.config
        ids = self.model.generate(
            pixel_values=pixels, max_new_tokens=self.max_tokens, num_beams=1, do_sample=False,
            decoder_start_token_id=cfg.decoder_start_token_id,
            pad_token_id=cfg.pad_token_id if cfg.pad_token_id is not None else cfg.eos_token_id,
            eos_token_id=cfg.eos_token_id if cfg.eos_token_id is not None
            else cfg.decoder.eos_token_id)
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    def _score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        texts = self.recognise(images)
        self.last_texts.extend(texts)
        return torch.tensor([text_match(t, reward_target_text(p))
                             for t, p in zip(texts, prompts, strict=True)], dtype=torch.float32)


def load_ocr_reward(source: Path | None, *, device: torch.device | str, dtype: torch.dtype,
                    allow_download: bool, batch_size: int) -> OCRReward:
    """Load a TrOCR text-match reward from a folder (or the hub, when allowed)."""
    from transformers import AutoTokenizer, VisionEncoderDecoderModel

    if source is None:
        src: str | Path = HUB_ID
        local = False
    else:
        folder = require_folder(source, "ocr", _FILES)
        model_type = hf_model_type(folder, "ocr", _FILES)
        if model_type != "vision-encoder-decoder":
            raise ValueError(f"{folder} holds a {model_type or 'unknown'!r} model, but the 'ocr' "
                             "reward needs a TrOCR model (model_type 'vision-encoder-decoder').")
        src, local = folder, True
    try:
        model = VisionEncoderDecoderModel.from_pretrained(str(src),
                                                          **hf_load_kwargs(dtype, not local))
        tokenizer = AutoTokenizer.from_pretrained(str(src), local_files_only=local)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ValueError(f"Could not load the TrOCR model or tokenizer from {src}: {e}") from e
    if model.config.decoder_start_token_id is None:
        raise ValueError(f"{src}/config.json sets no decoder_start_token_id; TrOCR needs one.")
    cfg = processor_config(src, local=local)
    transform = transform_from_processor_config(
        cfg, default_size=int(model.config.encoder.image_size), default_mean=(0.5, 0.5, 0.5),
        default_std=(0.5, 0.5, 0.5), squash=True)
    log.info("loaded the ocr reward from %s on %s (%s)", src, device, dtype)
    return OCRReward(model.to(device=device, dtype=dtype).eval(), tokenizer, transform,
                     name="ocr", device=device, dtype=dtype, batch_size=batch_size)
