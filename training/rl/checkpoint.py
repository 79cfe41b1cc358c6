"""Resumable training checkpoints, in safetensors (never pickle).

A checkpoint holds the policy weights (``policy.*``), the optimiser's tensors
(``optim.<param>.<name>``), the RNG states (``rng.*`` as uint8 tensors), the algorithm's own
state when it has one (``algo.*``: e.g. a discriminator or a critic and their optimisers, see
:meth:`training.rl.algorithms.base.Algorithm.extra_state`) and a JSON metadata entry with the
iteration, the optimiser's param groups, the algorithm's metadata and the run config.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ...policies.json_io import parse_json

_META_KEY = "learned_schedules_checkpoint"


def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str
                      ) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """An optimiser's state as flat tensors ``{prefix}.<param>.<name>`` and its param groups
    (JSON-serialisable), for a safetensors checkpoint."""
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for idx, state in opt["state"].items():
        for name, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{prefix}.{idx}.{name}"] = t.detach().cpu().contiguous()
    return tensors, opt["param_groups"]


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                   prefix: str, param_groups: list[dict[str, Any]]) -> None:
    """Restore an optimiser saved by :func:`optimizer_tensors` (in place)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith(prefix + "."):
            idx, name = k[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def save_checkpoint(path: str | Path, *, policy: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, iteration: int,
                    rng: dict[str, torch.Tensor], info: dict[str, Any],
                    extra: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
                    ) -> None:
    """Write a checkpoint atomically (temporary file, then rename: a failed write leaves the
    older checkpoints as they were). ``extra``: the
    algorithm's own ``(tensors, metadata)`` (stored as ``algo.*`` and ``meta["algorithm"]``)."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in policy.state_dict().items():
        tensors[f"policy.{k}"] = v.detach().cpu().contiguous()
    optim, groups = optimizer_tensors(optimizer, "optim")
    tensors.update(optim)
    for name, state in rng.items():
        tensors[f"rng.{name}"] = state.cpu().contiguous()
    meta = {"iteration": iteration, "param_groups": groups, "info": info}
    if extra is not None:
        extra_tensors, extra_meta = extra
        tensors.update({f"algo.{k}": v.detach().cpu().contiguous()
                        for k, v in extra_tensors.items()})
        meta["algorithm"] = extra_meta
    tmp = path.with_suffix(".tmp")
    try:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta)})
        os.replace(tmp, path)
    except BaseException:  # a full disk: no half-written file left behind
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every tensor and the metadata of a checkpoint; ``ValueError`` (one sentence naming the
    file) if it is missing, truncated or not a training checkpoint."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = (f.metadata() or {}).get(_META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for bad files
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"Cannot read checkpoint {path} (truncated or damaged?): "
                         f"{reason}") from None
    if raw_meta is None:
        raise ValueError(f"{path} is not a Learned Schedules training checkpoint.")
    try:
        meta = parse_json(raw_meta, f"The metadata of checkpoint {path}")
        int(meta["iteration"])
        meta["param_groups"]  # noqa: B018
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"Checkpoint {path} has damaged metadata.") from None
    return tensors, meta


def load_checkpoint(path: str | Path, *, policy: torch.nn.Module,
                    optimizer: torch.optim.Optimizer,
                    extra: Callable[[dict[str, torch.Tensor], dict[str, Any]], None] | None = None
                    ) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]]:
    """Restore policy and optimiser in place; return ``(iteration, rng_states, info)``.
    ``extra(tensors, meta)`` restores the algorithm's own state (``algo.*`` without the prefix,
    ``meta["algorithm"]``). ``ValueError`` for an unreadable checkpoint or one that does not
    fit ``policy``."""
    path = Path(path)
    tensors, meta = read_checkpoint(path)
    weights = {k[len("policy."):]: v for k, v in tensors.items() if k.startswith("policy.")}
    expected = policy.state_dict()
    for k, v in expected.items():
        if k not in weights or tuple(weights[k].shape) != tuple(v.shape):
            got = tuple(weights[k].shape) if k in weights else "nothing"
            raise ValueError(f"Checkpoint {path} does not fit this run's policy (weight {k}: "
                             f"{got}, the policy needs {tuple(v.shape)}); was the architecture "
                             "or the back-end's features changed?")
    try:
        policy.load_state_dict(weights)
        load_optimizer(optimizer, tensors, "optim", meta["param_groups"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        reason = " ".join(str(exc).split())
        raise ValueError(f"Checkpoint {path} does not fit this run: {reason}") from None
    if extra is not None:
        try:
            extra({k[len("algo."):]: v for k, v in tensors.items() if k.startswith("algo.")},
                  meta.get("algorithm", {}))
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            reason = " ".join(str(exc).split())
            raise ValueError(f"Checkpoint {path} does not fit this run's algorithm state: "
                             f"{reason}") from None
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    if set(rng) != {"torch", "contexts"}:
        raise ValueError(f"Checkpoint {path} lacks its random-number states.")
    return int(meta["iteration"]), rng, meta.get("info", {})
