"""Training algorithms, by name: each supplies a policy, ``collect`` and ``update``
(:class:`.base.Algorithm`) and has a config section of the same name in
:class:`training.rl.config.TrainConfig`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .adagen import AdaGen
from .art import ART
from .base import Algorithm, Batch, RolloutBatch
from .ppo import PPO
from .reinforce import Reinforce

if TYPE_CHECKING:
    from ..config import TrainConfig

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls
                                          for cls in (Reinforce, PPO, ART, AdaGen)}
"""Algorithm classes by name (``TrainConfig.algo``)."""


def make_algorithm(config: TrainConfig) -> Algorithm:
    """The algorithm a config names; ``ValueError`` for an unknown one."""
    if config.algo not in ALGORITHMS:
        raise ValueError(f"algo must be one of {tuple(ALGORITHMS)}, got {config.algo!r}.")
    return ALGORITHMS[config.algo](config)


__all__ = ["ALGORITHMS", "Algorithm", "Batch", "RolloutBatch", "make_algorithm", "Reinforce", "PPO",
           "ART", "AdaGen"]
