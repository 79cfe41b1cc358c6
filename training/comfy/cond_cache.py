"""On-disk cache of text conditioning (T5 is the expensive part of a Flux/SD3 rollout).

One safetensors file per (text encoders, prompt): the tokens ``[1, T, D]``, the pooled output
and any other tensor the text encoder put in the conditioning; plain values go in the JSON
metadata. The key hashes the *identity* of the text-encoder files (name, size and their
safetensors header, so moving a file keeps its cache and replacing its weights does not) and
the prompt. ``encodes`` counts the prompts actually encoded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ...policies.json_io import parse_json

log = logging.getLogger("learned_schedules.training")

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/learned_schedules/conditioning`` (``~/.cache/...``)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "learned_schedules" / "conditioning"


def file_identity(path: str | os.PathLike) -> str:
    """A cheap fingerprint of a weights file: name, size and a hash of its first MiB (for a
    safetensors file, its header: every tensor's name, shape, dtype and offset)."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if path.suffix == ".safetensors" and len(head) == 8:
            n = int.from_bytes(head, "little")
            blob = f.read(min(n, 100_000_000))
        else:
            blob = head + f.read(1 << 20)
    return f"{path.name}:{size}:{hashlib.sha256(blob).hexdigest()[:16]}"


Conditioning = tuple[torch.Tensor, dict[str, Any]]


class ConditioningCache:
    """Prompt -> (tokens, extras) with an in-memory layer over an on-disk folder."""

    def __init__(self, folder: str | os.PathLike | None, identity: str):
        self.folder = Path(folder) if folder is not None else None
        self.identity = identity
        self.encodes = 0
        self.hits = 0
        self._memory: dict[str, Conditioning] = {}

    def key(self, prompt: str) -> str:
        blob = json.dumps([CACHE_VERSION, self.identity, prompt]).encode()
        return hashlib.sha256(blob).hexdigest()

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}.safetensors"

    def get(self, prompt: str, encode: Callable[[str], Conditioning]) -> Conditioning:
        """The conditioning of ``prompt``: from memory, from disk, or ``encode(prompt)``."""
        key = self.key(prompt)
        if key in self._memory:
            return self._memory[key]
        cond = self._read(key, prompt)
        if cond is None:
            cond = encode(prompt)
            self.encodes += 1
            self._write(key, prompt, cond)
        else:
            self.hits += 1
        self._memory[key] = cond
        return cond

    def _read(self, key: str, prompt: str) -> Conditioning | None:
        if self.folder is None:
            return None
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = parse_json((f.metadata() or {}).get("learned_schedules_cond", "{}"),
                                  f"Conditioning cache entry {path}")
                if meta.get("prompt") != prompt or meta.get("identity") != self.identity:
                    return None
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # a damaged entry is re-encoded, not fatal
            log.warning("conditioning cache entry %s unreadable (%s); re-encoding", path, exc)
            return None
        extra: dict[str, Any] = dict(meta.get("values", {}))
        extra.update({k[len("extra."):]: v for k, v in tensors.items()
                      if k.startswith("extra.")})
        return tensors["tokens"], extra

    def _write(self, key: str, prompt: str, cond: Conditioning) -> None:
        if self.folder is None:
            return
        tokens, extra = cond
        tensors = {"tokens": tokens.detach().cpu().contiguous()}
        values = {}
        for k, v in extra.items():
            if torch.is_tensor(v):
                tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
            elif isinstance(v, (int, float, str, bool)) or v is None:
                values[k] = v
            else:
                log.debug("conditioning entry %r (%s) is not cached", k, type(v).__name__)
        meta = {"prompt": prompt, "identity": self.identity, "values": values,
                "version": CACHE_VERSION}
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # ranks of one run may write at once
        save_file(tensors, str(tmp), metadata={"learned_schedules_cond": json.dumps(meta)})
        os.replace(tmp, path)
