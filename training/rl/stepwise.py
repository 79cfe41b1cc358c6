"""Schedules and rewards of any deployable policy, one-shot or step-wise, on a back-end.

A one-shot policy (:func:`policies.contract.has_schedule`) gives its schedules from the
features; a step-wise one (:func:`policies.contract.is_stepwise`) only while sampling, so its
schedules are the flow times a rollout through ``backend.rollout`` actually used. The engine's
held-out evaluation, the policy file's ``global_schedule`` and ``eval`` go through
:func:`policy_schedules`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...policies.actors import Trajectory
from ...policies.contract import has_schedule, is_stepwise
from .backend import Backend, policy_features


def check_deployable(policy: Any) -> None:
    """``TypeError`` unless ``policy`` is one-shot or step-wise (what a caller that runs any
    deployable policy needs)."""
    if not (has_schedule(policy) or is_stepwise(policy)):
        raise TypeError(f"{type(policy).__name__} is neither a one-shot policy (schedule) nor "
                        "a step-wise one (actor): it cannot be deployed.")


@torch.no_grad()
def policy_rollout(policy: nn.Module, backend: Backend, contexts: Any, mode: str = "mean",
                   **actor_options: Any) -> Trajectory:
    """A step-wise policy's rollout of ``contexts`` (one per context) on ``backend``."""
    actor = policy.actor(policy_features(policy, backend, contexts), mode=mode, **actor_options)
    return backend.rollout(contexts, actor, actor.steps)


@torch.no_grad()
def policy_schedules(policy: nn.Module, backend: Backend, contexts: Any,
                     mode: str = "mean") -> torch.Tensor:
    """Flow-time schedules ``[N, L+1]`` of ``policy`` for ``contexts`` (a step-wise policy's:
    those its rollout used)."""
    check_deployable(policy)
    if is_stepwise(policy):
        return policy_rollout(policy, backend, contexts, mode).sigmas.float()
    return policy.schedule(policy_features(policy, backend, contexts), mode=mode)


__all__ = ["policy_rollout", "policy_schedules", "check_deployable"]
