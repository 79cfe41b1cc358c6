"""Declared types, ranges and choices of config dataclass fields, checked in one loop.

A config section (:class:`policies.config.PolicyConfig`, the trainer's sections) declares each
field once: its type annotation, its default, and (:func:`option`) its range or choices. The
checks below read those declarations; no field has a hand-written check. Every message is one
sentence naming the field (``prefix`` + name: ``ppo.clip``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any


def option(default: Any = dataclasses.MISSING, *, ge: float | None = None,
           gt: float | None = None, le: float | None = None, lt: float | None = None,
           choices: tuple[Any, ...] | None = None,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its allowed range (``ge``/``gt``/``le``/``lt``) or ``choices``
    (checked by :func:`check_values`)."""
    meta = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt),
                              ("choices", choices)) if v is not None}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def json_type(value: Any) -> str:
    """How JSON calls ``value``'s type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
          dict: "a JSON object"}


def _fits(value: Any, kind: Any) -> bool:
    """Strict JSON typing: ints pass as floats, booleans never as numbers, no str-as-number."""
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    origin = typing.get_origin(kind) or kind
    return isinstance(origin, type) and isinstance(value, origin)


def _alternatives(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def check_types(obj: Any, prefix: str = "") -> None:
    """``ValueError`` naming the first field of ``obj`` (a dataclass) whose value does not fit
    its declared type."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value, kinds = getattr(obj, f.name), _alternatives(hints[f.name])
        if any(_fits(value, k) for k in kinds):
            continue
        words = [_WORDS.get(typing.get_origin(k) or k, "a JSON object") for k in kinds
                 if k is not type(None)]
        if type(None) in kinds:
            words.append("null")
        raise ValueError(f"{prefix}{f.name} must be {' or '.join(words)}, got {value!r} "
                         f"({json_type(value)}).")


def check_number(name: str, value: Any, *, ge: float | None = None, gt: float | None = None,
                 le: float | None = None, lt: float | None = None) -> None:
    """``ValueError`` naming ``name`` unless ``value`` (None passes) is finite and in range."""
    if value is None:
        return
    rules = [f"{op} {bound if isinstance(bound, int) else format(bound, 'g')}"
             for op, bound in ((">=", ge), (">", gt), ("<=", le), ("<", lt)) if bound is not None]
    ok = math.isfinite(value) and (ge is None or value >= ge) and (gt is None or value > gt) \
        and (le is None or value <= le) and (lt is None or value < lt)
    if not ok:
        what = "" if isinstance(value, int) else "a finite number "
        raise ValueError(f"{name} must be {what}{' and '.join(rules)}, got {value!r}.")


def check_values(obj: Any, prefix: str = "") -> None:
    """Types, then every declared range and choice of ``obj``'s fields."""
    check_types(obj, prefix)
    for f in dataclasses.fields(obj):
        meta, value = f.metadata, getattr(obj, f.name)
        if "choices" in meta and value not in meta["choices"]:
            raise ValueError(f"{prefix}{f.name} must be one of {meta['choices']}, got "
                             f"{value!r}.")
        bounds = {k: meta[k] for k in ("ge", "gt", "le", "lt") if k in meta}
        if bounds:
            check_number(prefix + f.name, value, **bounds)


__all__ = ["check_number", "check_types", "check_values", "json_type", "option"]
