"""Training algorithms, by name: each supplies a policy, ``collect`` and ``update``
(:class:`.base.Algorithm`) and declares its names, options and policy kind once, in its own
module (:mod:`.registry`). One import line per built-in algorithm registers it."""

from __future__ import annotations

from typing import TYPE_CHECKING

# one line per built-in algorithm, in the order --help and messages list them
# isort: off
from .reinforce import Reinforce
from .ppo import PPO
from .art import ART
from .adagen import AdaGen

# isort: on
from .base import Algorithm, Batch, RolloutBatch
from .registry import ALGORITHMS, register_algorithm, resolve_algorithm

if TYPE_CHECKING:
    from ..config import TrainConfig


def make_algorithm(config: TrainConfig) -> Algorithm:
    """The algorithm a config names; ``ValueError`` for an unknown one."""
    if config.algo not in ALGORITHMS:
        raise ValueError(f"algo must be one of {tuple(ALGORITHMS)}, got {config.algo!r}.")
    return ALGORITHMS[config.algo](config)


__all__ = ["ALGORITHMS", "Algorithm", "Batch", "RolloutBatch", "make_algorithm",
           "register_algorithm", "resolve_algorithm", "Reinforce", "PPO", "ART", "AdaGen"]
