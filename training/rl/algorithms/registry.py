"""The algorithm registry: each algorithm declares itself once, in its own module.

An algorithm module defines its options dataclass and an :class:`~.base.Algorithm` subclass
whose class attributes say everything the rest of the trainer derives from it: ``name`` (the
``--algo`` value and its config section, ``--<name>.<option>``), ``aliases`` (other names
``--algo`` / ``--method`` accept), ``method`` (written into policy files), ``policy_kind``
(the policy kind it trains) and ``options_class`` (its options dataclass). Decorating the
class with :func:`register_algorithm` adds it; ``algorithms/__init__.py`` imports one module
per built-in algorithm.
"""

from __future__ import annotations

from typing import Any, TypeVar

A = TypeVar("A", bound=type)

ALGORITHMS: dict[str, Any] = {}
"""Algorithm classes (:class:`~.base.Algorithm` subclasses) by name (``TrainConfig.algo``), in
registration order. This module imports nothing of the pack, so the config can read it
without an import circle (``training.rl.algorithms`` registers the built-in ones)."""


def register_algorithm(cls: A) -> A:
    """Class decorator: add an algorithm under its ``name`` (``ValueError`` if its name or
    an alias is taken)."""
    taken = {n for other in ALGORITHMS.values() if other is not cls for n in names_of(other)}
    clash = sorted(set(names_of(cls)) & taken)
    if clash:
        raise ValueError(f"Algorithm name {clash[0]!r} is already registered.")
    ALGORITHMS[cls.name] = cls
    return cls


def names_of(cls: Any) -> tuple[str, ...]:
    """The names ``--algo`` accepts for ``cls``: its name, its aliases and its method."""
    return tuple(dict.fromkeys((cls.name, *cls.aliases, cls.method)))


def algorithm_choices() -> str:
    """Every accepted name, for messages (``reinforce (dirichlet-reinforce), ppo ...``)."""
    parts = []
    for name, cls in ALGORITHMS.items():
        others = [n for n in names_of(cls) if n != name]
        parts.append(f"{name} ({', '.join(others)})" if others else name)
    return ", ".join(parts)


def resolve_algorithm(name: str) -> str:
    """The registered name for ``name`` (a name, an alias or a method); ``ValueError`` with
    a sentence listing the choices otherwise."""
    for registered, cls in ALGORITHMS.items():
        if name in names_of(cls):
            return registered
    raise ValueError(f"Unknown algorithm {name!r}; choose one of {algorithm_choices()}.")


__all__ = ["ALGORITHMS", "algorithm_choices", "names_of", "register_algorithm",
           "resolve_algorithm"]
