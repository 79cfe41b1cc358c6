"""Module-level cache of loaded policies, keyed by path and modification time.

Nodes execute on shallow clones of their classes, so state stored on ``cls`` does not
persist; this dictionary does. An edited file (new mtime) is loaded again.
"""

from __future__ import annotations

import os
import threading

from ..policies.policy_file import LoadedPolicy, load_policy

_CACHE: dict[str, tuple[float, LoadedPolicy]] = {}
_LOCK = threading.Lock()
MAX_ENTRIES = 8


def get_policy(path: str) -> LoadedPolicy:
    """The loaded policy at ``path`` (from the cache when the file has not changed)."""
    try:
        mtime = os.path.getmtime(path)
    except OSError as exc:
        raise ValueError(f"Policy file not found: {path}") from exc
    with _LOCK:
        hit = _CACHE.get(path)
        if hit is not None and hit[0] == mtime:
            return hit[1]
    loaded = load_policy(path)
    with _LOCK:
        if len(_CACHE) >= MAX_ENTRIES:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[path] = (mtime, loaded)
    return loaded


def clear() -> None:
    with _LOCK:
        _CACHE.clear()
