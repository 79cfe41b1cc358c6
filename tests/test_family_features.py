"""Policy features from any conditioning and any latent, with no ComfyUI: text of any token
width, with or without a pooled output, with the encoder's attention mask; latents of any
channel count and size (and Qwen-Image's 5-D ones)."""

from __future__ import annotations

import pytest
import torch

from learned_schedules.comfy_bridge.features import conditioning_features
from learned_schedules.policies.families import (
    FAMILIES,
    SUPPORTED_FAMILIES,
    family_for_config_class,
)
from learned_schedules.policies.latent_encoder import LatentTextEncoder


@pytest.mark.parametrize("width, pooled", [(768, 768), (2048, 1280), (4096, None),
                                           (2304, None), (15360, None)])
def test_text_features_of_any_width(width, pooled):
    extra = {"pooled_output": None if pooled is None else torch.randn(1, pooled)}
    feats = conditioning_features([(torch.randn(1, 7, width), extra),
                                   (torch.randn(1, 5, width), extra)])
    assert feats["tokens"].shape == (2, 7, width)
    assert feats["token_mask"].tolist()[1] == [True] * 5 + [False] * 2
    assert ("pooled" in feats) == (pooled is not None)


def test_the_encoders_attention_mask_is_kept():
    mask = torch.tensor([[1, 1, 1, 0]])
    feats = conditioning_features([(torch.randn(1, 4, 2304), {"attention_mask": mask})])
    assert feats["token_mask"].tolist() == [[True, True, True, False]]
    none = conditioning_features([(torch.randn(1, 4, 2304), {"attention_mask": 0 * mask})])
    assert none["token_mask"].any(1).all()  # never an all-masked row


@pytest.mark.parametrize("channels, side, frames", [(4, 16, None), (16, 16, None),
                                                    (16, 16, 1), (64, 8, None),
                                                    (128, 8, None), (32, 12, None)])
def test_latent_features_of_any_channel_count(channels, side, frames):
    enc = LatentTextEncoder.for_family("tiny", latent_channels=channels, token_dim=3584,
                                       pooled_dim=0)
    shape = (2, channels, side, side) if frames is None else (2, channels, frames, side, side)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    out = enc(noise=torch.randn(shape), tokens=torch.randn(2, 6, 3584), token_mask=mask)
    assert out.shape == (2, enc.out_dim) and torch.isfinite(out).all()


def test_the_generic_preset_sizes_from_the_features():
    enc = LatentTextEncoder.for_family("generic", latent_channels=128, token_dim=15360,
                                       pooled_dim=0)
    assert enc.feature_dims() == {"noise": [128, -1, -1], "tokens": [-1, 15360]}


def test_every_row_is_complete():
    for name in SUPPORTED_FAMILIES:
        family = FAMILIES[name]
        assert family.clip_loader in ("CLIPLoader", "DualCLIPLoader", "TripleCLIPLoader",
                                      "QuadrupleCLIPLoader")
        assert family.clip_type and family.text_encoders and family.cfg >= 1.0
        for cls in family.config_classes:
            assert family_for_config_class(cls) is family
    with pytest.raises(ValueError, match="does not support a video model"):
        family_for_config_class("HunyuanVideo")
