"""Samples remembered per context, computed in one batch for the contexts not yet seen.

The ComfyUI back-end samples some things once per context and reuses them: the many-step
reference of a (prompt, seed) pair (the ``reference`` reward, AdaGen's references) and the
images of a (prompt, seed, schedule) during ``eval`` (its rewards and set measures read the
same images). :class:`SampleMemo` is that cache, written once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch

from .contexts import PromptContexts


def context_keys(contexts: PromptContexts) -> list[tuple[int, int]]:
    """``(prompt index, seed)`` of every context."""
    return [(int(p), int(s)) for p, s in zip(contexts.prompt_ids, contexts.seeds, strict=True)]


class SampleMemo:
    """Key -> sample (one tensor per key), filled in batches by a ``compute`` callback.

    ``limit`` > 0: the memo is emptied before it would hold more than ``limit`` samples.
    """

    def __init__(self, limit: int = 0):
        self.limit = limit
        self._known: dict[Hashable, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._known)

    def clear(self) -> None:
        """Forget every sample."""
        self._known.clear()

    def get(self, keys: Sequence[Hashable], compute: Callable[[list[int]], torch.Tensor], *,
            once_per_key: bool = True) -> torch.Tensor:
        """The samples of ``keys``, stacked ``[len(keys), ...]``. ``compute(rows)`` returns the
        samples of ``keys[rows]`` for the rows not yet known, in one batch (with
        ``once_per_key``, only the first row of a repeated key; otherwise every row)."""
        if once_per_key:
            first: dict[Hashable, int] = {}
            for i, key in enumerate(keys):
                if key not in self._known:
                    first.setdefault(key, i)
            missing = list(first.values())
        else:
            missing = [i for i, key in enumerate(keys) if key not in self._known]
        if missing:
            found = compute(missing)
            if self.limit and len(self._known) + len(missing) > self.limit:
                self._known.clear()
            for i, sample in zip(missing, found, strict=True):
                self._known[keys[i]] = sample
        return torch.stack([self._known[key] for key in keys])


__all__ = ["SampleMemo", "context_keys"]
