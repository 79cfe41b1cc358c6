"""Checks ComfyUI's own input validation lets through: NaN passes a FLOAT's min / max check
(every comparison with NaN is false), and an API-format prompt may name inputs a node does
not declare. Each gets one plain sentence (a ``ValueError``) instead of a crash or a run."""

from __future__ import annotations

import math
from typing import Any


def number_in_range(name: str, value: Any, low: float, high: float) -> float:
    """``value`` as a float in ``[low, high]``; ``ValueError`` naming the input otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and low <= number <= high):
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}.")
    return number


def no_unknown_inputs(node: str, given: dict[str, Any], known: list[str]) -> None:
    """``ValueError`` naming the inputs of ``given`` the node does not declare."""
    if given:
        raise ValueError(f"{node} has no input {', '.join(sorted(given))}; its inputs are "
                         f"{', '.join(known)}.")
