"""The policy file of a global calibration: one stored schedule per step count (kind
``stored-schedules``), ``global_schedule`` = the first count's (so it is listed as
``learned:<name>`` and loads in the Learned Schedule node). The one writer that the
``calibrate`` command and the Calibrate Schedule node share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from ..policies.policy_file import save_policy
from ..policies.stored import StoredSchedules


def save_calibrated(path: str | Path, flows: dict[int, Tensor], *, method: str, family: str,
                    training: dict[str, Any], summary: dict[str, Any]) -> Path:
    """Write the calibrated flow schedules ``{L: [L+1]}`` (the first count's is the
    ``global_schedule``) with the calibration's ``summary`` under the metadata key
    ``calibration``, atomically; returns the path."""
    counts = list(flows)
    policy = StoredSchedules(counts, {c: flows[c].float() for c in counts})
    path = Path(path)
    save_policy(path, policy, method=method, model_family=family, training=training,
                reward="reference", global_schedule=flows[counts[0]],
                extra={"calibration": summary})
    return path


__all__ = ["save_calibrated"]
