"""A weighted sum of several rewards, e.g. ``0.7*pickscore+0.3*aesthetic``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Reward, check_inputs


def format_spec(components: Sequence[tuple[float, str]]) -> str:
    """``[(0.7, "pickscore"), (0.3, "aesthetic")]`` -> ``"0.7*pickscore+0.3*aesthetic"``."""
    out = ""
    for i, (w, name) in enumerate(components):
        sign = "-" if w < 0 else ("+" if i else "")
        out += f"{sign}{abs(w):g}*{name}"
    return out


class WeightedSum:
    """``sum_i w_i * reward_i(images, prompts)``; the last call's parts: ``last_components``."""

    def __init__(self, components: Sequence[tuple[float, Reward]]) -> None:
        if not components:
            raise ValueError("A weighted reward needs at least one component.")
        names = [r.name for _, r in components]
        if len(set(names)) != len(names):
            raise ValueError(f"A weighted reward lists the same reward twice: {names}.")
        self.components = [(float(w), r) for w, r in components]
        self.name = format_spec([(w, r.name) for w, r in self.components])
        self.last_components: dict[str, torch.Tensor] = {}

    @property
    def weights(self) -> dict[str, float]:
        """Component name -> weight."""
        return {r.name: w for w, r in self.components}

    def __call__(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """The weighted sum ``[N]`` (float32, CPU) of the components' scores."""
        images, prompts = check_inputs(images, prompts)
        parts = {r.name: r(images, prompts).float().cpu() for _, r in self.components}
        total = torch.zeros(images.shape[0], dtype=torch.float32)
        for w, r in self.components:
            total += w * parts[r.name]
        self.last_components = parts
        return total

    def __repr__(self) -> str:
        return f"WeightedSum({self.name!r})"
