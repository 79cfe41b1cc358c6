"""Tiny random reward models laid out as users lay out real ones (shared by tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from comfy_env import comfyui_path


def save_clip_tokenizer(out: Path) -> Path:
    """ComfyUI's bundled CLIP BPE tokenizer, saved as a transformers fast tokenizer."""
    from transformers import CLIPTokenizerFast

    tok = CLIPTokenizerFast.from_pretrained(str(comfyui_path() / "comfy" / "sd1_tokenizer"),
                                            local_files_only=True)
    tok.model_max_length = 77
    tok.save_pretrained(out)
    return out


def tiny_clip(folder: Path, tokenizer_dir: Path, seed: int) -> torch.nn.Module:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    cfg = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2,
                     "max_position_embeddings": 77, "bos_token_id": 49406,
                     "eos_token_id": 49407, "pad_token_id": 49407},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, folder / f.name)
    CLIPImageProcessor(size={"shortest_edge": 32},
                       crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return model
