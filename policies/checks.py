"""Argument checks shared by the policy modules (hand-made policy files must give plain
errors, never a half-built network)."""

from __future__ import annotations

from typing import Any


def check_sizes(owner: str, minimum: int = 1, **sizes: Any) -> None:
    """``ValueError`` naming the first size that is not an integer >= ``minimum`` (a bool, a
    string or a float from a hand-made file is refused, not coerced)."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}.")
