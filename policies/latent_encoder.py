"""Encoder for image latents + text tokens (Flux, SD3): the paper's policy architecture.

A conv pyramid reads the initial noise latent ``x_T [B, C, H, W]`` (a patchifying stride-2
stem, then ``levels`` stride-2 blocks with GroupNorm + SiLU), the final map is pooled to a
``grid x grid`` set of image tokens, which cross-attend to the projected text tokens
``[B, T, D]`` (T5 / joint tokens). An optional pooled text embedding (CLIP-L / CLIP-G pooled)
is added to every image token. Mean and max pooling over image tokens give the output.
Any latent size (``H, W >= 8``; ``>= 4`` for the one-level ``small`` preset), any channel
count and token width (set from the model's features), any token count work; a video latent
``[B, C, T, H, W]`` (any T; Qwen-Image's images are T = 1) is read frame by frame by the same
pyramid and pooled over time and space (the mean over frames of each frame's pooled map), so
one encoder serves any frame count and a one-frame latent reads exactly as an image.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .checks import check_sizes

PRESETS: dict[str, dict[str, Any]] = {
    # Flux: 16-channel latent, T5-XXL tokens (4096), CLIP-L pooled (768)
    "flux": {"latent_channels": 16, "token_dim": 4096, "pooled_dim": 768, "width": 384,
             "levels": 4, "heads": 6, "grid": 4},
    # SD3 / SD3.5: 16-channel latent, joint CLIP-L/G + T5 tokens (4096), pooled 2048
    "sd3": {"latent_channels": 16, "token_dim": 4096, "pooled_dim": 2048, "width": 384,
            "levels": 4, "heads": 6, "grid": 4},
    # any other family: the widths of the two above, every feature size from the model
    "generic": {"latent_channels": 16, "token_dim": 4096, "pooled_dim": 0, "width": 384,
                "levels": 4, "heads": 6, "grid": 4},
    # tests: real channel count, small everything else
    "tiny": {"latent_channels": 16, "token_dim": 32, "pooled_dim": 16, "width": 32,
             "levels": 2, "heads": 2, "grid": 2},
    # tiny latents (the digits model: 16x4x4): one stride-2 level, works from 4x4 latent pixels
    "small": {"latent_channels": 16, "token_dim": 32, "pooled_dim": 16, "width": 64,
              "levels": 1, "heads": 4, "grid": 2},
}


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """A video ``[B, C, T, H, W]`` as a batch of frames ``[B*T, C, H, W]`` (images as they
    are)."""
    if x.ndim != 5:
        return x
    return x.transpose(1, 2).flatten(0, 1)


def unfold_frames(h: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """Per-frame results ``[B*T, D, ...]`` of :func:`fold_frames` back to ``[B, D, T, ...]``
    (the time axis third, as in ``video``)."""
    b, t = video.shape[0], video.shape[2]
    return h.reshape(b, t, *h.shape[1:]).transpose(1, 2)


def _groups(ch: int) -> int:
    for g in (32, 16, 8, 4, 2, 1):
        if ch % g == 0:
            return g
    return 1


class LatentTextEncoder(nn.Module):
    """Conv pyramid over the noise latent, cross-attention to text tokens, pooled text added."""

    kind = "latent_text"

    def __init__(self, latent_channels: int = 16, token_dim: int = 4096, pooled_dim: int = 0,
                 width: int = 256, levels: int = 3, heads: int = 4, grid: int = 4):
        super().__init__()
        check_sizes("LatentTextEncoder", latent_channels=latent_channels, token_dim=token_dim,
                    width=width, levels=levels, heads=heads, grid=grid)
        check_sizes("LatentTextEncoder", 0, pooled_dim=pooled_dim)
        if levels > 12 or grid > 64:
            raise ValueError(f"LatentTextEncoder: levels (<= 12) or grid (<= 64) too large: "
                             f"{levels}, {grid}.")
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}.")
        self.latent_channels, self.token_dim, self.pooled_dim = latent_channels, token_dim, \
            pooled_dim
        self.width, self.levels, self.heads, self.grid = width, levels, heads, grid
        chans = [max(width // 2 ** (levels - i), 16) for i in range(levels)] + [width]
        self.stem = nn.Conv2d(latent_channels, chans[0], kernel_size=2, stride=2)
        blocks = []
        for i in range(levels):
            blocks += [nn.GroupNorm(_groups(chans[i]), chans[i]), nn.SiLU(),
                       nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1)]
        self.pyramid = nn.Sequential(*blocks)
        self._per_group = [chans[i] // _groups(chans[i]) for i in range(levels)]
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.pos = nn.Parameter(torch.zeros(1, grid * grid, width))
        self.text_proj = nn.Sequential(nn.LayerNorm(token_dim), nn.Linear(token_dim, width))
        self.pooled_proj = nn.Linear(pooled_dim, width) if pooled_dim else None
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_q = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.SiLU(),
                                 nn.Linear(2 * width, width))
        self.out_dim = 2 * width

    def forward(self, noise: torch.Tensor, tokens: torch.Tensor,
                pooled: torch.Tensor | None = None,
                token_mask: torch.Tensor | None = None) -> torch.Tensor:
        if noise.ndim not in (4, 5) or noise.shape[1] != self.latent_channels:
            raise ValueError(f"Expected a noise latent [B, {self.latent_channels}, H, W] or a "
                             f"video [B, {self.latent_channels}, T, H, W], got "
                             f"{tuple(noise.shape)}.")
        if tokens.ndim != 3 or tokens.shape[-1] != self.token_dim:
            raise ValueError(f"Expected text tokens [B, T, {self.token_dim}], got "
                             f"{tuple(tokens.shape)}.")
        h_in, w_in = int(noise.shape[-2]), int(noise.shape[-1])
        if not self.fits(h_in, w_in):
            side = self.min_latent_size()
            raise ValueError(f"The latent is {h_in}x{w_in}, too small for this policy's encoder: "
                             f"it needs at least {side}x{side} latent pixels ({8 * side}x"
                             f"{8 * side} image pixels with an 8x VAE such as Flux's or SD3's).")
        h = self.pool(self.pyramid(self.stem(fold_frames(noise))))  # [B*T, width, g, g]
        h = unfold_frames(h, noise).mean(2) if noise.ndim == 5 else h  # [B, width, g, g]
        q = h.flatten(2).transpose(1, 2) + self.pos  # [B, g*g, width]
        if self.pooled_proj is not None:
            if pooled is None:
                raise ValueError("This policy needs the pooled text embedding.")
            q = q + self.pooled_proj(pooled)[:, None, :]
        kv = self.text_proj(tokens)
        pad = None if token_mask is None else ~token_mask.bool()
        att, _ = self.attn(self.norm_q(q), kv, kv, key_padding_mask=pad, need_weights=False)
        q = q + att
        q = q + self.mlp(q)
        return torch.cat([q.mean(1), q.amax(1)], dim=-1)

    def fits(self, height: int, width: int) -> bool:
        """Whether a ``height x width`` latent passes the pyramid: the stem needs 2x2, and every
        GroupNorm more than one value per group."""
        h, w = height // 2, width // 2  # the stride-2 patchifying stem
        if h < 1 or w < 1:
            return False
        for per_group in self._per_group:
            if per_group * h * w <= 1:
                return False
            h, w = (h + 1) // 2, (w + 1) // 2  # a 3x3 stride-2 conv with padding 1
        return True

    def min_latent_size(self) -> int:
        """The smallest square latent side this encoder accepts."""
        side = 2
        while not self.fits(side, side):
            side += 1
        return side

    def config(self) -> dict[str, Any]:
        return {"type": self.kind, "latent_channels": self.latent_channels,
                "token_dim": self.token_dim, "pooled_dim": self.pooled_dim,
                "width": self.width, "levels": self.levels, "heads": self.heads,
                "grid": self.grid}

    def feature_dims(self) -> dict[str, list[int]]:
        dims = {"noise": [self.latent_channels, -1, -1], "tokens": [-1, self.token_dim]}
        if self.pooled_dim:
            dims["pooled"] = [self.pooled_dim]
        return dims

    @classmethod
    def for_family(cls, family: str, **overrides: Any) -> LatentTextEncoder:
        """A preset sized for ``flux``, ``sd3``, ``tiny`` (tests) or ``small`` (tiny latents),
        with overrides."""
        if family not in PRESETS:
            raise ValueError(f"No encoder preset for {family!r}; choose from {sorted(PRESETS)}.")
        return cls(**{**PRESETS[family], **overrides})
