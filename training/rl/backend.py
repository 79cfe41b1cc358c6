"""Rollout back-ends: where contexts, features and rewards come from.

The RL engine only talks to this interface, so the same engine trains on the exact analytic
testbed (no weights, the embedded default) and, later, on real ComfyUI models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:
    from .config import TrainConfig


@runtime_checkable
class Backend(Protocol):
    """What the engine needs from a back-end."""

    model_family: str
    """Model family written into policy files (``testbed``, ``flux-dev``, ``sd3``...)."""
    reward_name: str
    """Name of the reward being maximised (written into policy files)."""

    def draw_contexts(self, n: int, generator: torch.Generator) -> Any:
        """Draw ``n`` training contexts (prompt, initial noise) from a seeded stream."""

    def held_out_contexts(self, n: int, seed: int) -> Any:
        """``n`` held-out contexts, reproducible from ``seed`` (disjoint from training)."""

    def features(self, contexts: Any) -> dict[str, torch.Tensor]:
        """Policy inputs for a batch of contexts (keyword arguments of the encoder)."""

    def rewards(self, contexts: Any, schedules: torch.Tensor) -> torch.Tensor:
        """Sample every context with each of its schedules ``[B, K, L+1]``; rewards ``[B, K]``."""

    def build_encoder(self, hidden: int, depth: int) -> nn.Module:
        """A fresh feature encoder sized for this back-end's features."""


#: back-end name -> "module:class" (relative to ``training``), imported on first use so the
#: RL core never imports a back-end (nor ComfyUI) it is not asked for
BACKENDS: dict[str, str] = {"testbed": "testbed.backend:TestbedBackend",
                            "comfy": "comfy.backend:ComfyBackend"}


def make_backend(config: TrainConfig) -> Backend:
    """The back-end a config names; ``ValueError`` for an unknown one."""
    import importlib

    if config.backend not in BACKENDS:
        raise ValueError(f"Unknown backend {config.backend!r}; available: "
                         f"{', '.join(BACKENDS)}.")
    module, cls = BACKENDS[config.backend].split(":")
    package = __package__.rsplit(".", 1)[0]  # learned_schedules.training
    return getattr(importlib.import_module(f"{package}.{module}"), cls).from_config(config)
