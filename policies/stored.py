"""A stored global schedule per step count: what ``calibrate`` deploys (kind
``stored-schedules``).

One flow schedule per calibrated step count (buffers ``schedule_<L>``, ``L + 1`` flow times
each); ``steps`` (the policy's ``L``) is the first. ``schedule(features, steps)`` returns the
stored schedule for that count when there is one, else the stored schedule of the nearest
count resampled by :func:`policies.schedule.resample_schedule` (linear in the normalised step
position). The same for every context (no features): a deterministic one-shot policy.
ART's ``art-global`` stores one count and resamples log-linearly; this kind keeps every
calibrated count exactly.

Pure torch; no ComfyUI and no trainer import.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .contract import Features, features_argument, kind_options, register_policy
from .schedule import resample_schedule, validate_schedule


@register_policy
class StoredSchedules(nn.Module):
    """Fixed flow schedules by step count (see the module docstring)."""

    kind = "stored-schedules"

    def __init__(self, counts: list[int], schedules: dict[int, Tensor] | None = None):
        super().__init__()
        counts = [int(c) for c in counts]
        if not counts or any(c < 1 or c > 1000 for c in counts) or len(set(counts)) != len(
                counts):
            raise ValueError(f"StoredSchedules needs distinct step counts from 1 to 1000, got "
                             f"{counts}.")
        self.counts = counts
        self.steps = counts[0]
        for c in counts:
            value = torch.linspace(1.0, 0.0, c + 1) if schedules is None else \
                torch.as_tensor(schedules[c], dtype=torch.float32).clone()
            if value.shape != (c + 1,):
                raise ValueError(f"The {c}-step schedule needs {c + 1} flow times, got "
                                 f"{tuple(value.shape)}.")
            if schedules is not None:
                validate_schedule(value.double(), sigma_max=1.0)
            self.register_buffer(f"schedule_{c}", value)

    def stored(self, steps: int) -> Tensor:
        """The flow schedule ``[steps+1]`` for a step count (resampled from the nearest
        stored count when it is not stored)."""
        if steps in self.counts:
            return getattr(self, f"schedule_{steps}")
        nearest = min(self.counts, key=lambda c: (abs(c - steps), -c))
        return resample_schedule(getattr(self, f"schedule_{nearest}"), steps)

    def feature_dims(self) -> dict[str, list[int]]:
        return {}

    def schedule(self, features: Features | str | None = None, steps: int | None = None,
                 mode: str = "mean", **legacy: Tensor) -> Tensor:
        """The stored schedule for every context ``[B, steps+1]`` (``mean`` and ``sample``
        agree)."""
        features, mode = features_argument(features, mode, legacy)
        if mode not in ("mean", "sample"):
            raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}.")
        batch = next((int(v.shape[0]) for v in features.values()), 1)
        return self.stored(self.steps if steps is None else int(steps))[None].expand(
            batch, -1).clone()

    def config(self) -> dict[str, Any]:
        return {"policy": self.kind, "steps": self.steps, "counts": list(self.counts)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StoredSchedules:
        cfg = kind_options(cls, config)
        counts = cfg.get("counts", [cfg.get("steps")])
        if cfg.get("steps") != counts[0]:
            raise ValueError("A stored-schedules config's steps must be its first count.")
        return cls(counts)

    @classmethod
    def for_training(cls, encoder: Any, steps: int, *, hidden: int = 0,
                     init_segments: Tensor | None = None, **options: Any) -> StoredSchedules:
        """A uniform schedule for ``steps`` (the encoder is not used; nothing trains it but
        ``calibrate``)."""
        return cls([steps])


__all__ = ["StoredSchedules"]
