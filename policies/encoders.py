"""Feature encoders for schedule policies: they turn (initial noise, prompt) into one vector.

All encoders share one interface: ``encoder(**features) -> Tensor[B, out_dim]`` and a
``config()`` dict from which :func:`build_encoder` rebuilds them. Two kinds:

* :class:`VectorEncoder` for vector contexts (the analytic testbed): ``noise [B, d]`` and
  ``cond [B, e]`` (a prompt embedding).
* :class:`LatentTextEncoder` (``policies/latent_encoder.py``) for image latents and text
  tokens (Flux, SD3).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .checks import check_sizes


class VectorEncoder(nn.Module):
    """Noise-and-prompt encoder for vector contexts, with multiplicative (FiLM) conditioning.

    A plain MLP on ``concat(noise, cond)`` must learn products of noise and prompt features
    to tell where *this* noise goes under *this* prompt; FiLM makes those products explicit:
    each hidden layer on the noise is scaled and shifted by functions of the prompt
    embedding, and a bilinear term ``(W_n noise) * (W_c cond)`` feeds the first layer.
    The prompt embedding alone also reaches the output through a skip path.
    """

    kind = "vector"

    def __init__(self, noise_dim: int, cond_dim: int, hidden: int = 128, depth: int = 2):
        super().__init__()
        check_sizes("VectorEncoder", noise_dim=noise_dim, cond_dim=cond_dim, hidden=hidden,
                    depth=depth)
        self.noise_dim, self.cond_dim, self.hidden, self.depth = noise_dim, cond_dim, hidden, depth
        self.noise_in = nn.Linear(noise_dim, hidden)
        self.cond_in = nn.Linear(cond_dim, hidden)
        self.bilinear_n = nn.Linear(noise_dim, hidden, bias=False)
        self.bilinear_c = nn.Linear(cond_dim, hidden, bias=False)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.film = nn.ModuleList(nn.Linear(cond_dim, 2 * hidden) for _ in range(depth))
        for f in self.film:  # start as identity modulation
            nn.init.zeros_(f.weight)
            nn.init.zeros_(f.bias)
        self.norm = nn.LayerNorm(hidden)
        self.out_dim = 2 * hidden

    def forward(self, noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = self.cond_in(cond)
        h = torch.nn.functional.silu(self.noise_in(noise) + c
                                     + self.bilinear_n(noise) * self.bilinear_c(cond))
        for layer, film in zip(self.layers, self.film, strict=False):
            scale, shift = film(cond).chunk(2, dim=-1)
            h = h + torch.nn.functional.silu(layer(self.norm(h)) * (1 + scale) + shift)
        return torch.cat([h, torch.nn.functional.silu(c)], dim=-1)

    def config(self) -> dict[str, Any]:
        return {"type": self.kind, "noise_dim": self.noise_dim, "cond_dim": self.cond_dim,
                "hidden": self.hidden, "depth": self.depth}

    def feature_dims(self) -> dict[str, list[int]]:
        """Per-feature trailing shapes this encoder expects (for the policy file metadata)."""
        return {"noise": [self.noise_dim], "cond": [self.cond_dim]}


def build_encoder(config: dict[str, Any]) -> nn.Module:
    """Rebuild an encoder from its ``config()``; ``ValueError`` for an unknown type."""
    if not isinstance(config, dict):
        raise ValueError(f"An encoder config must be an object, got {config!r}.")
    cfg = dict(config)
    kind = cfg.pop("type", None)
    if kind == VectorEncoder.kind:
        return VectorEncoder(**cfg)
    if kind == "latent_text":
        from .latent_encoder import LatentTextEncoder

        return LatentTextEncoder(**cfg)
    raise ValueError(f"Unknown encoder type {kind!r}.")
