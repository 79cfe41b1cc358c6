"""Every policy kind, registered: import this module to fill :data:`contract.POLICY_KINDS`.

A new policy kind is a module that decorates its class with
:func:`policies.contract.register_policy`; list it here. (The contract itself imports no
policy, so policy modules can import the contract without an import circle.)
"""

from __future__ import annotations

from . import (
    art,  # noqa: F401  (registers "art-clock" and "art-global")
    dirichlet,  # noqa: F401  (registers "dirichlet")
    stepwise,  # noqa: F401  (registers "adagen-step")
    stored,  # noqa: F401  (registers "stored-schedules")
)
from .contract import POLICY_KINDS, policy_from_config, register_policy

__all__ = ["POLICY_KINDS", "policy_from_config", "register_policy"]
