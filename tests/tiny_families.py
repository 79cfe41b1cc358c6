"""Tiny random-weight models of every image architecture the pack knows, one table row each.

Each row builds the family's real network through ComfyUI's own model-config class (its
``get_model`` picks the ``comfy.ldm`` network and ``model_sampling``), fills weights and
buffers with random values, saves the diffusion model as safetensors (no key prefix, plus
the checkpoint markers ComfyUI reads, such as SDXL's ``v_pred`` / ``ztsnr``) and loads it
back through one of four paths:

* ``checkpoint``: ``CheckpointLoaderSimple``'s ``comfy.sd.load_checkpoint_guess_config``
  on a checkpoint-layout file (``model.diffusion_model.*``; SD 1.x at 320 channels);
* ``stock``: ``UNETLoader`` (``comfy.sd.load_diffusion_model``), ComfyUI's detection sizes
  the model from its weights (SD3, HunyuanImage 2.1);
* ``unet_config``: the trainer's ``--unet-config`` path
  (``training.comfy.models.load_diffusion_model``), when detection hard-codes real sizes
  (Flux's 24 heads, Flux.2's 48, Chroma, Qwen-Image, Lumina 2, HiDream, AuraFlow): ComfyUI
  still picks the config class by matching the config against its own table;
* ``config_class``: the config class named directly, when even matching needs real sizes
  (SDXL's 320 channels with 10-deep transformers; SD 2.x's v-prediction test reads the 12th
  output block, 4 levels deep; Z-Image's ``dim`` 3840); the model type still comes from
  ComfyUI's own checkpoint tests (SDXL's ``v_pred`` / ``ztsnr`` keys, SD 2.x's test).

Text: SD3 uses the stock ``CLIPLoader(type="sd3")`` on a random full-size CLIP-L, Flux a
tiny CLIP-L + T5; the ``-te`` rows have width-64 real encoders built from ComfyUI's own
classes and loaded through the trainer's ``load_text_encoders`` (``comfy.sd.load_clip``, its
detection picking the encoder, as the CLIP loader nodes): SD 1.x a CLIP-L, SDXL a CLIP-L +
CLIP-G (with v-prediction + ztsnr), Z-Image a Qwen3-4B, Lumina 2 a Gemma-2 (with a 64-piece
tokenizer trained here), HiDream CLIP-L + CLIP-G + T5-XXL + Llama-3.1. Every family also
gets CONDITIONING of its real shapes (:attr:`TinyFamily.text`), as the real encoders give
them. Not built small: Mistral-3 (Flux.2; detection needs width 5120), Qwen2.5-VL
(Qwen-Image, HunyuanImage; its vision tower has a fixed real size), a lone T5-XXL / Pile-T5
(Chroma, AuraFlow; detection needs 24 blocks of width 4096 / 2048).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from comfy_env import TINY_FLUX, _randomize, build_tiny_sd3


@dataclass(frozen=True)
class TinyFamily:
    """One tiny model: how to build and load it, and the shapes of its conditioning."""

    family: str
    """Our family name (``policies.families``)."""
    config_class: str
    """The ComfyUI model-config class it must load as."""
    unet_config: dict[str, Any]
    """The network's config (what the config class gets)."""
    loader: str
    """``checkpoint``, ``stock``, ``unet_config`` or ``config_class`` (module docstring)."""
    latent: tuple[int, ...]
    """An empty latent's shape without the batch: ``[C, H, W]`` (for 128..256 px images), a
    video's ``[C, T, H, W]`` (a few frames)."""
    text: dict[str, Any]
    """Real conditioning shapes: ``tokens`` (T, D), ``pooled`` P or None, ``mask`` (an
    ``attention_mask`` with a padded tail; ``"full"``: all ones), ``extra`` {key: shape}
    for other entries."""
    markers: dict[str, float] = field(default_factory=dict)
    """Checkpoint marker keys ComfyUI reads (``v_pred``, ``ztsnr``)."""
    text_encoder: str = "shaped"
    """``real-small`` (ComfyUI's own encoder, small config) or ``shaped`` CONDITIONING."""
    small_te: dict[str, Any] | None = None
    """Real-small encoders other than SD3's / Flux's: ``cls`` (ComfyUI's text-encoder class,
    dotted), ``clip_type`` (the loaders' ``type``), ``configs`` {part: small config} (one
    file per part, given to the loader as ``<part>_model_config``), ``aliases`` (more
    options keys), ``spiece`` (a tokenizer stored in the file)."""
    flow: bool = True
    seed: int = 0
    """The random weights' seed (two Wan 2.2 experts of one architecture differ by it)."""


def _unet(context: int, linear: bool, channels: int = 32, adm: int | None = None,
          levels: int = 2, **extra: Any) -> dict[str, Any]:
    """A small SD-style UNet config (one res block and one transformer per level)."""
    cfg = {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True,
           "legacy": False, "in_channels": 4, "out_channels": 4, "model_channels": channels,
           "num_res_blocks": [1] * levels, "channel_mult": [1] * levels,
           "transformer_depth": [1] * levels, "transformer_depth_output": [1] * (2 * levels),
           "transformer_depth_middle": 1, "use_linear_in_transformer": linear,
           "context_dim": context, "adm_in_channels": adm, "use_temporal_resblock": False,
           "use_temporal_attention": False}
    if adm is not None:
        cfg["num_classes"] = "sequential"
    return cfg | extra


# SD 2.x's v-prediction test reads output_blocks.11's transformer: 4 levels x 2 blocks
# (the output list is consumed from its end: its first entries are the last blocks)
_SD2 = _unet(1024, True, channels=64, levels=4, num_res_blocks=[2] * 4,
             transformer_depth=[1, 1] + [0] * 6, transformer_depth_output=[1] * 3 + [0] * 9)
_ZIMAGE = {  # dim >= 256: Z-Image's modulation reads a 256-wide timestep embedding
    "image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256,
    "cap_feat_dim": 2560, "n_layers": 1, "n_refiner_layers": 1, "qk_norm": True, "n_heads": 2,
    "n_kv_heads": 2, "axes_dims": [32, 48, 48], "axes_lens": [1536, 512, 512],
    "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0, "z_image_modulation": True,
    "time_scale": 1000.0}
_LUMINA2 = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 64,
            "cap_feat_dim": 2304, "n_layers": 1, "n_refiner_layers": 1, "qk_norm": True,
            "n_heads": 2, "n_kv_heads": 1, "axes_dims": [8, 12, 12],
            "axes_lens": [300, 512, 512], "rope_theta": 10000.0, "ffn_dim_multiplier": 4.0}
# Qwen3-4B at width 64 (3 layers: ComfyUI reads the second-to-last); its full vocabulary
_QWEN3_TE = {"cls": "comfy.text_encoders.z_image.ZImageTEModel", "clip_type": "lumina2",
             "configs": {"qwen3_4b": {"hidden_size": 64, "intermediate_size": 128,
                                      "num_hidden_layers": 3, "num_attention_heads": 2,
                                      "num_key_value_heads": 1}}}
# Gemma-2 at width 64 with a 64-piece sentencepiece tokenizer trained here, stored in the
# file as real Gemma files store theirs (``spiece_model``)
_GEMMA_TE = {"cls": "comfy.text_encoders.lumina2.LuminaModel", "clip_type": "lumina2",
             "spiece": True,
             "configs": {"gemma2_2b": {"vocab_size": 64, "hidden_size": 64,
                                       "intermediate_size": 128, "num_hidden_layers": 3,
                                       "num_attention_heads": 2, "num_key_value_heads": 1}}}
# CLIP-L (3 layers) and CLIP-G (32 layers: ComfyUI detects CLIP-G by its 31st layer) at
# width 64; CLIP-L's options key differs between ComfyUI's code paths, so every spelling
_CLIP = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
         "num_hidden_layers": 3, "projection_dim": 64}
_CLIP_L_ALIASES = {"model_config": _CLIP, "_model_config": _CLIP}
_SD1_TE = {"cls": "comfy.sd1_clip.SD1ClipModel", "clip_type": "stable_diffusion",
           "configs": {"clip_l": _CLIP}, "aliases": _CLIP_L_ALIASES}
_SDXL_TE = {"cls": "comfy.sdxl_clip.SDXLClipModel", "clip_type": "sdxl",
            "configs": {"clip_l": _CLIP, "clip_g": {**_CLIP, "num_hidden_layers": 32}},
            "aliases": _CLIP_L_ALIASES}
# HiDream's four: CLIP-L, CLIP-G, T5-XXL (24 blocks: HiDream's loader routes a T5 file by its
# 24th block) and Llama-3.1 (3 layers, every layer's output is conditioning_llama3)
_HIDREAM_TE = {"cls": "comfy.text_encoders.hidream.HiDreamTEModel", "clip_type": "hidream",
               "configs": {"clip_l": _CLIP, "clip_g": {**_CLIP, "num_hidden_layers": 32},
                           "t5xxl": {"d_model": 64, "d_ff": 128, "d_kv": 32, "num_heads": 2,
                                     "num_layers": 24},
                           "llama": {"hidden_size": 64, "intermediate_size": 128,
                                     "num_hidden_layers": 3, "num_attention_heads": 2,
                                     "num_key_value_heads": 1}},
               "aliases": _CLIP_L_ALIASES}
_HIDREAM = {"image_model": "hidream", "patch_size": 2, "in_channels": 16, "out_channels": 16,
            "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 32,
            "num_attention_heads": 2, "caption_channels": [4096, 4096], "text_emb_dim": 2048,
            "num_routed_experts": 2, "num_activated_experts": 1, "axes_dims_rope": [16, 8, 8],
            "max_resolution": [128, 128], "llama_layers": [0, 31]}
_HIDREAM_TINY_TE = {**_HIDREAM, "caption_channels": [64, 64], "text_emb_dim": 128,
                    "llama_layers": [0, 2]}
_LLAMA = {"tokens": (16, 4096), "pooled": 2048, "extra": {"conditioning_llama3": (32, 16, 4096)}}

# Wan 2.1 / the Wan 2.2 A14B experts (detection: heads = dim / 128), text width 4096 (umT5-XXL)
_WAN = {"image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2), "in_dim": 16,
        "dim": 128, "ffn_dim": 256, "freq_dim": 256, "text_dim": 4096, "out_dim": 16,
        "num_heads": 1, "num_layers": 1, "window_size": (-1, -1), "qk_norm": True,
        "cross_attn_norm": True, "eps": 1e-6}
# HunyuanVideo 1.5: 3-D patches (detection: axes 16 + 56 + 56 = one 128-wide head), Qwen2.5-VL
# tokens (3584), byT5 (1472), SigLIP image features (1152); input = noise 32 + image 32 + mask
_HV15 = {"image_model": "hunyuan_video", "in_channels": 65, "out_channels": 32,
         "patch_size": [1, 1, 1], "vec_in_dim": None, "context_in_dim": 3584,
         "hidden_size": 128, "mlp_ratio": 4.0, "num_heads": 1, "depth": 1,
         "depth_single_blocks": 1, "axes_dim": [16, 56, 56], "theta": 256, "qkv_bias": True,
         "guidance_embed": False, "byt5": True, "meanflow": False,
         "use_cond_type_embedding": True, "vision_in_dim": 1152}
# LTX-Video: 32 heads of width 4 (detection: head width = to_k rows / 32), T5-XXL tokens
_LTXV = {"image_model": "ltxv", "in_channels": 128, "num_layers": 1, "attention_head_dim": 4,
         "cross_attention_dim": 128, "caption_channels": 4096}
_UMT5 = {"tokens": (16, 4096)}

TINY_FAMILIES: dict[str, TinyFamily] = {f"{f.family}{'' if not k else '-' + k}": f for k, f in (
    # 320 channels (what SD15's detection needs), one level: 26M parameters
    ("", TinyFamily("sd1", "SD15", _unet(768, False, channels=320, levels=1), "checkpoint",
                    (4, 16, 16), {"tokens": (77, 768), "pooled": 768}, flow=False)),
    ("te", TinyFamily("sd1", "SD15", _unet(64, False), "config_class", (4, 16, 16),
                      {"tokens": (77, 64), "pooled": 64}, text_encoder="real-small",
                      small_te=_SD1_TE, flow=False)),
    ("", TinyFamily("sd2", "SD20", _SD2, "config_class", (4, 16, 16),
                    {"tokens": (77, 1024), "pooled": 1024}, markers={"v_test": 1.0},
                    flow=False)),
    ("", TinyFamily("sdxl", "SDXL", _unet(2048, True, channels=64, adm=2816), "config_class",
                    (4, 16, 16), {"tokens": (77, 2048), "pooled": 1280}, flow=False)),
    ("vpred", TinyFamily("sdxl", "SDXL", _unet(2048, True, channels=64, adm=2816),
                         "config_class", (4, 16, 16), {"tokens": (77, 2048), "pooled": 1280},
                         markers={"v_pred": 1.0, "ztsnr": 1.0}, flow=False)),
    # the tiny CLIP-L + CLIP-G: tokens 64 + 64, pooled 64 (+ 6 x 256 size embeddings)
    ("te", TinyFamily("sdxl", "SDXL", _unet(128, True, channels=64, adm=64 + 6 * 256),
                      "config_class", (4, 16, 16), {"tokens": (77, 128), "pooled": 64},
                      markers={"v_pred": 1.0, "ztsnr": 1.0}, text_encoder="real-small",
                      small_te=_SDXL_TE, flow=False)),
    ("", TinyFamily("sd3", "SD3", {}, "stock", (16, 16, 16),
                    {"tokens": (154, 4096), "pooled": 2048}, text_encoder="real-small")),
    ("", TinyFamily("flux-dev", "Flux", TINY_FLUX, "unet_config", (16, 16, 16),
                    {"tokens": (256, 64), "pooled": 64}, text_encoder="real-small")),
    ("kontext", TinyFamily("flux-dev", "Flux", TINY_FLUX, "unet_config", (16, 16, 16),
                           {"tokens": (256, 64), "pooled": 64}, text_encoder="real-small")),
    ("", TinyFamily("flux-schnell", "FluxSchnell", {**TINY_FLUX, "guidance_embed": False},
                    "unet_config", (16, 16, 16), {"tokens": (256, 64), "pooled": 64},
                    text_encoder="real-small")),
    ("", TinyFamily("flux2", "Flux2", {
        "image_model": "flux2", "in_channels": 128, "out_channels": 128, "patch_size": 1,
        "vec_in_dim": None, "context_in_dim": 15360, "hidden_size": 64, "mlp_ratio": 3.0,
        "num_heads": 2, "depth": 1, "depth_single_blocks": 1, "axes_dim": [8, 8, 8, 8],
        "theta": 2000, "qkv_bias": False, "guidance_embed": True, "global_modulation": True,
        "mlp_silu_act": True, "ops_bias": False, "default_ref_method": "index",
        "ref_index_scale": 10.0}, "unet_config", (128, 8, 8), {"tokens": (32, 15360)})),
    ("", TinyFamily("chroma", "Chroma", {
        "image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": 4096,
        "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2, "depth": 1,
        "depth_single_blocks": 1, "axes_dim": [4, 14, 14], "theta": 10000, "patch_size": 2,
        "qkv_bias": True, "in_dim": 64, "out_dim": 64, "hidden_dim": 32, "n_layers": 1},
        "unet_config", (16, 16, 16), {"tokens": (32, 4096), "mask": True})),
    ("", TinyFamily("qwen-image", "QwenImage", {
        "image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16,
        "num_layers": 1, "attention_head_dim": 32, "num_attention_heads": 2,
        "joint_attention_dim": 3584, "axes_dims_rope": [8, 12, 12]}, "unet_config",
        (16, 16, 16), {"tokens": (32, 3584)})),
    ("", TinyFamily("z-image", "ZImage", _ZIMAGE, "config_class", (16, 16, 16),
                    {"tokens": (32, 2560), "mask": True})),
    ("te", TinyFamily("z-image", "ZImage", {**_ZIMAGE, "cap_feat_dim": 64}, "config_class",
                      (16, 16, 16), {"tokens": (13, 64), "mask": True},
                      text_encoder="real-small", small_te=_QWEN3_TE)),
    ("", TinyFamily("hidream", "HiDream", _HIDREAM, "unet_config", (16, 16, 16), _LLAMA)),
    ("te", TinyFamily("hidream", "HiDream", _HIDREAM_TINY_TE, "unet_config", (16, 16, 16),
                      {"tokens": (128, 64), "pooled": 128}, text_encoder="real-small",
                      small_te=_HIDREAM_TE)),
    ("", TinyFamily("lumina2", "Lumina2", _LUMINA2, "unet_config", (16, 16, 16),
                    {"tokens": (32, 2304), "mask": True})),
    ("te", TinyFamily("lumina2", "Lumina2", {**_LUMINA2, "cap_feat_dim": 64}, "unet_config",
                      (16, 16, 16), {"tokens": (19, 64), "mask": True},
                      text_encoder="real-small", small_te=_GEMMA_TE)),
    ("", TinyFamily("hunyuan-image-2.1", "HunyuanImage21", {
        "image_model": "hunyuan_video", "in_channels": 64, "out_channels": 64,
        "patch_size": [1, 1], "vec_in_dim": None, "context_in_dim": 3584, "hidden_size": 128,
        "mlp_ratio": 4.0, "num_heads": 1, "depth": 1, "depth_single_blocks": 1,
        "axes_dim": [64, 64], "theta": 256, "qkv_bias": True, "guidance_embed": False,
        "byt5": True, "meanflow": False, "use_cond_type_embedding": False,
        "vision_in_dim": None}, "stock", (64, 8, 8),
        # Qwen2.5-VL's mask is all ones (no padding; ComfyUI's model cannot mask + byT5)
        {"tokens": (32, 3584), "mask": "full",
         "extra": {"conditioning_byt5small": (16, 1472)}})),
    ("", TinyFamily("auraflow", "AuraFlow", {
        "in_channels": 4, "out_channels": 4, "patch_size": 2, "dim": 64, "n_layers": 2,
        "n_double_layers": 1, "n_heads": 2, "global_conddim": 64, "cond_seq_dim": 2048,
        "max_seq": 256}, "unet_config", (4, 16, 16), {"tokens": (32, 2048)})),
    # video: UNETLoader's detection sizes every one; 3 latent frames (9 video frames)
    ("", TinyFamily("wan", "WAN21_T2V", _WAN, "stock", (16, 3, 8, 8), _UMT5)),
    # Wan 2.2 A14B's low-noise expert: the same architecture, other weights
    ("low", TinyFamily("wan", "WAN21_T2V", _WAN, "stock", (16, 3, 8, 8), _UMT5, seed=7)),
    # image-to-video (Wan 2.2 A14B I2V's layout: noise 16 + mask 4 + image 16, no CLIP vision;
    # ComfyUI detects it as a text-to-video class whose input takes the concat image)
    ("i2v", TinyFamily("wan", "WAN21_T2V", {**_WAN, "in_dim": 36}, "stock", (16, 3, 8, 8),
                       _UMT5, seed=3)),
    ("", TinyFamily("wan2.2-5b", "WAN22_T2V", {**_WAN, "in_dim": 48, "out_dim": 48}, "stock",
                    (48, 3, 8, 8), _UMT5)),
    ("", TinyFamily("hunyuan-video-1.5", "HunyuanVideo15", _HV15, "stock", (32, 2, 8, 8),
                    # no mask: ComfyUI's model cannot mask + byT5 (as HunyuanImage 2.1)
                    {"tokens": (32, 3584), "extra": {"conditioning_byt5small": (16, 1472)}})),
    ("", TinyFamily("ltxv", "LTXV", _LTXV, "stock", (128, 2, 8, 8),
                    {"tokens": (32, 4096), "mask": True})),
)}
"""Tiny models by key (the family name, ``-vpred`` / ``-kontext`` for variants)."""

FLOW_KEYS = tuple(k for k, f in TINY_FAMILIES.items() if f.flow and len(f.latent) == 3)
DISCRETE_KEYS = tuple(k for k, f in TINY_FAMILIES.items() if not f.flow)
VIDEO_KEYS = tuple(k for k, f in TINY_FAMILIES.items() if len(f.latent) == 4)
"""The video rows (their latents ``[C, T, H, W]``)."""


def _config_class(name: str):
    import comfy.supported_models as sm

    return getattr(sm, name)


def _network_state(spec: TinyFamily, seed: int, std: float) -> dict[str, torch.Tensor]:
    """The random state dict of the family's network, built by its config class."""
    if spec.family == "sd3":
        raise AssertionError("SD3 is built by comfy_env.build_tiny_sd3")
    config = _config_class(spec.config_class)(dict(spec.unet_config))
    config.set_inference_dtype(torch.float32, None)
    with torch.device("cpu"):
        model = config.get_model({}, "")
    return _randomize(model.diffusion_model, seed, std)


def build_tiny(spec: TinyFamily, path: Path, seed: int = 0, std: float = 0.05) -> Path:
    """Write the tiny model's safetensors (diffusion model keys, no prefix, plus markers)."""
    if spec.family == "sd3":
        return build_tiny_sd3(path, seed=seed, std=0.1)
    sd = _network_state(spec, seed + spec.seed, std)
    if spec.loader == "checkpoint":  # a full checkpoint's layout (no text encoder, no VAE)
        sd = {f"model.diffusion_model.{k}": v for k, v in sd.items()}
    if spec.markers.get("v_test"):  # SD 2.x: ComfyUI's own v-prediction test on block 11
        key = "output_blocks.11.1.transformer_blocks.0.norm1.bias"
        sd[key] = torch.randn(sd[key].shape, generator=torch.Generator().manual_seed(seed))
    for key in ("v_pred", "ztsnr"):
        if spec.markers.get(key):
            sd[key] = torch.tensor([])
    save_file(sd, str(path))
    return path


def load_tiny(spec: TinyFamily, path: Path):
    """Load a tiny model file through the path its row names -> a ComfyUI MODEL."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sd
    import comfy.utils

    if spec.loader == "stock":
        return comfy.sd.load_diffusion_model(str(path))
    if spec.loader == "checkpoint":  # CheckpointLoaderSimple's function
        return comfy.sd.load_checkpoint_guess_config(str(path), output_vae=False,
                                                     output_clip=False)[0]
    if spec.loader == "unet_config":
        from learned_schedules.training.comfy.models import load_diffusion_model

        return load_diffusion_model(str(path), unet_config=dict(spec.unet_config))
    sd = comfy.utils.load_torch_file(str(path), safe_load=True)
    config = _config_class(spec.config_class)(dict(spec.unet_config))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model(sd, "")  # the model type from ComfyUI's own checkpoint tests
    model.load_model_weights(sd, "")
    cpu = mm.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu,
                                            offload_device=mm.unet_offload_device())


def shaped_conditioning(spec: TinyFamily, seed: int = 0, batch: int = 1) -> list:
    """CONDITIONING with the real encoders' shapes for this family (random values)."""
    g = torch.Generator().manual_seed(seed)
    t, d = spec.text["tokens"]
    extras: dict[str, Any] = {"pooled_output": None}  # as CLIP.encode_from_tokens_scheduled
    if spec.text.get("pooled"):
        extras["pooled_output"] = torch.randn(batch, spec.text["pooled"], generator=g)
    if spec.text.get("mask"):
        mask = torch.ones(batch, t, dtype=torch.long)
        if spec.text["mask"] != "full":
            mask[:, t - t // 4:] = 0  # a padded tail, as the padding tokenizers give
        extras["attention_mask"] = mask
    for key, shape in spec.text.get("extra", {}).items():
        extras[key] = torch.randn(batch, *shape, generator=g)
    return [[torch.randn(batch, t, d, generator=g), extras]]




def _tiny_sentencepiece(vocab: int) -> torch.Tensor:
    """A character-level sentencepiece model of at most ``vocab`` pieces, as bytes."""
    import io

    import sentencepiece as spm

    text = ["a red fox in snow", "a photo of a cat", "a lighthouse at dusk",
            "an oil painting of a harbour, bright colours"] * 20
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=buf,
                                   vocab_size=vocab, model_type="char", pad_id=0, eos_id=1,
                                   bos_id=2, unk_id=3, hard_vocab_limit=False, minloglevel=2)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def small_text_encoder(spec: TinyFamily, folder: Path):
    """The family's real text encoders at a small width, one file per encoder (key prefix
    stripped, as the files users download), saved once and loaded through the trainer's
    ``load_text_encoders`` (``comfy.sd.load_clip``, as the CLIP loader nodes) with the small
    configs in ``model_options`` (the trainer's ``--text-encoder-options``)."""
    import importlib

    te = spec.small_te
    options = {f"{key}_model_config": dict(cfg) for key, cfg in te["configs"].items()}
    options |= {k: dict(v) for k, v in te.get("aliases", {}).items()}
    paths = [folder / f"tiny_{spec.family}_{key}.safetensors" for key in te["configs"]]
    if not all(p.exists() for p in paths):
        module, name = te["cls"].rsplit(".", 1)
        sd = _randomize(getattr(importlib.import_module(module), name)(model_options=options),
                        seed=1)
        folder.mkdir(parents=True, exist_ok=True)
        for key, path in zip(te["configs"], paths, strict=True):
            prefix = f"{key}.transformer."
            part = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            if te.get("spiece"):
                part["spiece_model"] = _tiny_sentencepiece(te["configs"][key]["vocab_size"])
            save_file(part, str(path))
    from learned_schedules.training.comfy.models import load_text_encoders

    return load_text_encoders([str(p) for p in paths], te["clip_type"], options)


def build_tiny_wan_vae(path: Path, dim: int = 16, seed: int = 2) -> Path:
    """A random Wan 2.1 VAE (ComfyUI's own class, width ``dim``: ComfyUI sizes it from
    ``decoder.head.0.gamma``): Qwen-Image's VAE, the one that decodes its 5-D latents
    ``[B, 16, 1, h, w]``. Fan-in scaled weights, unit RMS-norm gains."""
    from comfy.ldm.wan.vae import WanVAE

    net = WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in net.state_dict().items():
        if k.endswith("gamma"):
            sd[k] = torch.ones(v.shape)
        elif v.ndim > 1:
            sd[k] = (torch.randn(v.shape, generator=g) / v[0].numel() ** 0.5).contiguous()
        else:
            sd[k] = torch.zeros(v.shape)
    save_file(sd, str(path))
    return path


def build_tiny_taehv(path: Path, latent_channels: int, seed: int = 2) -> Path:
    """A random TAEHV (ComfyUI's own tiny video autoencoder class, which ``comfy.sd.VAE``
    detects by ``decoder.22.bias``): Wan 2.2's 48 channels and HunyuanVideo 1.5's 32 at 16x
    (its 12-output head), any other channel count (LTX-Video's 128) at 8x."""
    from comfy.taesd.taehv import TAEHV

    net = TAEHV(latent_channels=latent_channels)
    save_file(_randomize(net, seed, 0.05), str(path))
    return path


def tiny_vae_name(spec: TinyFamily) -> str:
    """The file name (in ``models/vae``) of the tiny VAE that decodes this family's latents:
    a TAESD of its latent channel count, the tiny Wan 2.1 VAE for 16-channel 5-D latents
    (Qwen-Image, Wan 2.1), a random TAEHV of the channel count for other videos."""
    import comfy.supported_models as sm

    if getattr(sm, spec.config_class).latent_format.latent_dimensions == 3:
        if spec.latent[0] == 16:
            return "tiny_wan21_vae.safetensors"
        return f"tiny_taehv_{spec.latent[0]}.safetensors"
    return f"tiny_taesd_{spec.latent[0]}.safetensors"


def write_tiny_vae(models: Path, spec: TinyFamily) -> str:
    """The family's tiny VAE in ``models/vae`` (kept when already written); its name."""
    from comfy_env import build_tiny_vae

    name = tiny_vae_name(spec)
    path = models / "vae" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.startswith("tiny_wan21"):
            build_tiny_wan_vae(path)
        elif name.startswith("tiny_taehv"):
            build_tiny_taehv(path, spec.latent[0])
        else:
            build_tiny_vae(path, latent_channels=spec.latent[0])
    return name


def write_tiny_models(models: Path) -> dict[str, Path]:
    """Every tiny model file in ``models/diffusion_models`` (kept when already written, so
    a session builds each once); returns key -> path."""
    folder = models / "diffusion_models"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, spec in TINY_FAMILIES.items():
        path = folder / f"tiny_{key}.safetensors"
        if not path.exists():
            build_tiny(spec, path)
        paths[key] = path
    return paths


__all__ = ["TinyFamily", "TINY_FAMILIES", "FLOW_KEYS", "DISCRETE_KEYS", "build_tiny",
           "build_tiny_taehv", "build_tiny_wan_vae", "load_tiny", "VIDEO_KEYS",
           "shaped_conditioning", "small_text_encoder", "tiny_vae_name", "write_tiny_vae",
           "write_tiny_models"]
