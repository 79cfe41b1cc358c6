"""JSON read with caps: a size and a nesting depth checked before parsing.

Python's ``json`` recurses once per nesting level, so a file nested 100,000 deep ends in a
``RecursionError`` traceback, and a multi-gigabyte file is read whole. Every JSON file we read
(training configs, testbed configs, prompt ``.jsonl`` lines, a policy file's metadata, a run's
``config.json``) goes through :func:`parse_json` or :func:`read_json`, which refuse both in one
sentence (a ``ValueError`` naming the file) before ``json`` sees the text.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from pathlib import Path
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting of objects and arrays accepted (our files nest 4 or 5 levels)."""
MAX_BYTES = 16 * 1024 * 1024
"""Largest JSON text accepted (16 MiB)."""

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def nesting_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in JSON text, brackets inside strings ignored
    (linear time, no recursion; text that is not JSON gets a meaningless but finite answer)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets), initial=0))


def parse_json(text: str | bytes, what: str, *, max_bytes: int = MAX_BYTES,
               max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON ``text``; ``ValueError`` starting with ``what`` (e.g. "Config file x.json")
    if it is larger than ``max_bytes``, nested deeper than ``max_depth`` or not JSON."""
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > max_bytes:
        raise ValueError(f"{what} is too large ({size:,} bytes; the limit is {max_bytes:,}).")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValueError(f"{what} is not UTF-8 text (is it a binary file?).") from None
    depth = nesting_depth(text)
    if depth > max_depth:
        raise ValueError(f"{what} is nested too deeply ({depth} levels of objects or arrays; "
                         f"the limit is {max_depth}).")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                         f"{exc.msg}).") from None
    except RecursionError:  # a deeper interpreter stack than the cap assumes: still one line
        raise ValueError(f"{what} is nested too deeply to read.") from None


def read_json(path: str | Path, what: str, *, max_bytes: int = MAX_BYTES,
              max_depth: int = MAX_DEPTH) -> Any:
    """A JSON file's content; ``ValueError`` naming the file (``what``: "Config file"...) if
    it is missing, not a file, too large, too deeply nested, not UTF-8 or not JSON."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{what} not found: {path}.")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a file.")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ValueError(f"{what} {path} is too large ({size:,} bytes; the limit is "
                             f"{max_bytes:,}).")
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{what} {path} cannot be read: {exc.strerror}.") from None
    return parse_json(raw, f"{what} {path}", max_bytes=max_bytes, max_depth=max_depth)


__all__ = ["MAX_BYTES", "MAX_DEPTH", "nesting_depth", "parse_json", "read_json"]
