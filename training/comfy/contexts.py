"""The ComfyUI back-end's contexts: (prompt, seed) pairs, the training pool and held-out sets.

A context is a prompt index (into the back-end's prompt list: training prompts first, then the
held-out ones) and a seed (ComfyUI's ``RandomNoise`` seed, hence x_T). With held-out *seeds*
instead of held-out prompts, every prompt trains and evaluates, training seeds lying at or
above :data:`HELD_OUT_SEED_LIMIT` and held-out seeds below it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..rl.backend import grouped_indices
from .prompts import load_prompts, split_prompts

if TYPE_CHECKING:
    from ..rl.config import TrainConfig

HELD_OUT_SEED_LIMIT = 2**30
"""With held-out seeds, held-out contexts use seeds below this and training contexts above."""


@dataclass
class PromptContexts:
    """A batch of contexts: prompt indices (into the back-end's prompt list) and seeds."""

    prompt_ids: torch.Tensor
    seeds: torch.Tensor

    def __len__(self) -> int:
        return int(self.prompt_ids.shape[0])

    def select(self, index: torch.Tensor | Sequence[int]) -> PromptContexts:
        index = torch.as_tensor(index, dtype=torch.long)
        return PromptContexts(self.prompt_ids[index], self.seeds[index])

    def repeat(self, k: int) -> PromptContexts:
        """Each context ``k`` times in a row (rollout order ``[B, K]`` flattened)."""
        return PromptContexts(self.prompt_ids.repeat_interleave(k),
                              self.seeds.repeat_interleave(k))


class PromptContextPool:
    """The context part of the ComfyUI back-end (the :class:`training.rl.backend.Backend`
    methods about contexts): the prompts, the training pool, training and grouped draws,
    held-out contexts and their descriptions. Set up by :meth:`init_contexts`."""

    prompts: list[str]
    """Training prompts, then held-out prompts."""
    n_train: int
    """How many of :attr:`prompts` are training prompts."""
    held_out_seeds: bool
    """Hold out seeds instead of prompts (every prompt trains and evaluates)."""
    pool_size: int
    pool_seed: int
    _pool: PromptContexts | None = None

    def init_contexts(self, train_prompts: list[str], eval_prompts: list[str], *,
                      held_out_seeds: bool, pool_size: int, pool_seed: int) -> None:
        """``ValueError`` unless there are prompts to train on and to evaluate with."""
        if held_out_seeds:
            eval_prompts = []  # every prompt trains and evaluates, on disjoint seed streams
        if not train_prompts or (not eval_prompts and not held_out_seeds):
            raise ValueError("Need at least one training and one held-out prompt.")
        self.prompts = list(train_prompts) + list(eval_prompts)
        self.n_train = len(train_prompts)
        self.held_out_seeds = held_out_seeds
        self.pool_size, self.pool_seed = pool_size, pool_seed
        self._pool = None

    @property
    def pool(self) -> PromptContexts:
        """The training (prompt, seed) pairs: ``pool_size`` of them, from ``pool_seed``. With
        held-out seeds, training seeds are drawn from ``[2**30, 2**31 - 1)``, disjoint from the
        held-out seeds (below ``2**30``)."""
        if self._pool is None:
            g = torch.Generator().manual_seed(self.pool_seed)
            low = HELD_OUT_SEED_LIMIT if self.held_out_seeds else 0
            self._pool = PromptContexts(torch.randint(self.n_train, (self.pool_size,),
                                                      generator=g),
                                        torch.randint(low, 2**31 - 1, (self.pool_size,),
                                                      generator=g))
        return self._pool

    def draw_contexts(self, n: int, generator: torch.Generator) -> PromptContexts:
        """``n`` contexts of the pool, drawn with replacement."""
        return self.pool.select(torch.randint(self.pool_size, (n,), generator=generator))

    def context_groups(self, contexts: PromptContexts) -> torch.Tensor:
        """The prompt index of every context."""
        return contexts.prompt_ids.long()

    def draw_grouped_contexts(self, prompts: int, seeds: int,
                              generator: torch.Generator) -> PromptContexts:
        """``prompts`` distinct training prompts x ``seeds`` pool seeds of each."""
        return self.pool.select(grouped_indices(self.pool.prompt_ids, prompts, seeds,
                                                generator))

    def held_out_contexts(self, n: int, seed: int) -> PromptContexts:
        """``n`` held-out contexts: the held-out prompts in turn, seeds ``seed, seed+1, ...``
        per round over the prompts. With held-out seeds: every prompt in turn, with seeds
        ``seed, seed+1, ...`` that must stay below ``2**30`` (training seeds lie above)."""
        if self.held_out_seeds:
            i = torch.arange(n)
            seeds = seed + i // self.n_train
            if n and int(seeds[-1]) >= HELD_OUT_SEED_LIMIT:
                raise ValueError(f"Held-out seeds must stay below {HELD_OUT_SEED_LIMIT} "
                                 f"(training seeds lie above); got seed {seed}.")
            return PromptContexts(i % self.n_train, seeds)
        n_held = len(self.prompts) - self.n_train
        i = torch.arange(n)
        return PromptContexts(self.n_train + i % n_held, seed + i // n_held)

    def held_out_count(self) -> int:
        """The number of held-out prompts (``eval`` samples each with several seeds); with
        held-out seeds, every prompt."""
        if self.held_out_seeds:
            return self.n_train
        return len(self.prompts) - self.n_train

    def prompt_texts(self, contexts: PromptContexts) -> list[str]:
        """The prompt of every context."""
        return [self.prompts[int(i)] for i in contexts.prompt_ids]

    def describe_contexts(self, contexts: PromptContexts) -> list[dict[str, Any]]:
        """``{"prompt", "seed"}`` of every context (``eval``'s per-context CSV)."""
        return [{"prompt": p, "seed": int(s)}
                for p, s in zip(self.prompt_texts(contexts), contexts.seeds, strict=True)]


def prompts_from_config(config: TrainConfig) -> tuple[list[str], list[str], bool]:
    """``(training prompts, held-out prompts, held-out seeds?)`` of a config: ``eval_prompts``
    when given, else a ``held_out`` split of ``prompts``, or (``held_out == 0``) every prompt
    with held-out seeds."""
    if not config.comfy.prompts:
        raise ValueError("The comfy back-end needs --prompts (a .txt, .jsonl or .csv file).")
    prompts = load_prompts(config.comfy.prompts)
    if config.comfy.eval_prompts:
        held = load_prompts(config.comfy.eval_prompts)
        train_prompts = [p for p in prompts if p not in set(held)]
        if not train_prompts:
            raise ValueError("Every training prompt is also in --eval-prompts.")
    elif config.comfy.held_out == 0:
        train_prompts, held = prompts, []  # held-out seeds, not prompts
    else:
        train_prompts, held = split_prompts(prompts, config.comfy.held_out, seed=config.seed)
    return train_prompts, held, config.comfy.held_out == 0 and not config.comfy.eval_prompts


__all__ = ["HELD_OUT_SEED_LIMIT", "PromptContexts", "PromptContextPool", "prompts_from_config"]
