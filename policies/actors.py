"""The step-wise rollout seam: an *actor* chooses the next sigma at every sampler step.

A one-shot policy (Dirichlet, distilled ART) decides the whole schedule before sampling; a
step-wise policy (AdaGen) decides each next step from what the sample looks like now. Both run
through the same step loop: at step ``l`` the sampler calls the model at ``sigma_l`` (which gives
the denoised estimate ``x0_hat``), asks the actor for ``sigma_{l+1}`` given that state, and takes
the step. A fixed schedule is the trivial actor (:class:`FixedScheduleActor`).

Conventions:

* sigmas handed to and returned by an actor are **flow time** ``t in [0, 1]`` (1 = pure noise,
  0 = data), one per batch item ``[N]``; the caller maps them to a model's own sigma space.
* a rollout has a fixed number of steps ``L``; the actor must return 0 at the last step
  (``step == steps - 1``) and values strictly below the current sigma otherwise.
* an actor returns an :class:`ActorStep`; tensors in its ``info`` (actions, log-probs,
  observations...) are stacked over steps by the loop into :attr:`Trajectory.info`
  (``[N, L, ...]``), which is what an algorithm learns from.

Actors hold no trainer state and no ComfyUI objects, so the same actor serves the trainer's
rollouts, the ComfyUI ``SAMPLER`` of the nodes and the analytic testbed. Pure torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass
class StepState:
    """What an actor sees before choosing the next sigma."""

    step: int
    """Index ``l`` of the step about to be taken (0-based)."""
    steps: int
    """Total number of steps ``L`` of this rollout."""
    x: Tensor
    """Current samples ``[N, ...]`` at ``sigma``."""
    sigma: Tensor
    """Current flow time per item ``[N]``."""
    denoised: Tensor
    """The model's estimate of the clean sample at ``sigma`` ``[N, ...]`` (computed by the step
    anyway, so reading it costs no extra model call)."""


@dataclass
class ActorStep:
    """An actor's decision for one step."""

    sigma_next: Tensor
    """Next flow time per item ``[N]`` (0 on the last step)."""
    info: dict[str, Tensor] = field(default_factory=dict)
    """Per-item tensors ``[N, ...]`` to keep in the trajectory (action, log-prob, value...)."""


@runtime_checkable
class Actor(Protocol):
    """Chooses the next sigma from the current state (see the module docstring)."""

    def next_sigma(self, state: StepState) -> ActorStep:
        """The next flow time of every item."""


@dataclass
class Trajectory:
    """One batch of rollouts through the step loop."""

    sigmas: Tensor
    """Flow times actually used ``[N, L+1]`` (from the start down to 0)."""
    final: Tensor
    """Final samples ``[N, ...]``."""
    info: dict[str, Tensor] = field(default_factory=dict)
    """Each key of the actor's :attr:`ActorStep.info`, stacked over steps: ``[N, L, ...]``."""
    reward: Tensor | None = None
    """Reward of each final sample ``[N]``, when the back-end scored it."""


class TrajectoryRecorder:
    """Collects the sigmas and infos a step loop produced (used by every step loop)."""

    def __init__(self, start: Tensor):
        self._sigmas = [start]
        self._info: dict[str, list[Tensor]] = {}

    def add(self, decision: ActorStep) -> None:
        self._sigmas.append(decision.sigma_next)
        for key, value in decision.info.items():
            self._info.setdefault(key, []).append(value)

    def finish(self, final: Tensor) -> Trajectory:
        return Trajectory(sigmas=torch.stack(self._sigmas, dim=1), final=final,
                          info={k: torch.stack(v, dim=1) for k, v in self._info.items()})


def check_decision(sigma_next: Tensor, state: StepState) -> Tensor:
    """Validate an actor's next sigma ``[N]``: 0 on the last step, otherwise in ``[0, sigma)``.

    Raises ``ValueError`` with a plain sentence (an actor bug must not silently sample a
    schedule that goes backwards).
    """
    n = state.sigma.shape[0]
    if sigma_next.shape != (n,):
        raise ValueError(f"An actor must return one next sigma per item ({n}), got shape "
                         f"{tuple(sigma_next.shape)}.")
    if not torch.isfinite(sigma_next).all():
        raise ValueError(f"The actor returned a non-finite sigma at step {state.step}.")
    if state.step == state.steps - 1:
        if (sigma_next != 0).any():
            raise ValueError("The last step must end at sigma 0.")
    elif (sigma_next >= state.sigma).any() or (sigma_next < 0).any():
        raise ValueError(f"The actor's sigma at step {state.step} does not decrease.")
    return sigma_next


class FixedScheduleActor:
    """The trivial actor: follows given flow-time schedules ``[N, L+1]`` (or one ``[L+1]``)."""

    def __init__(self, schedules: Tensor):
        if schedules.ndim not in (1, 2) or schedules.shape[-1] < 2:
            raise ValueError(f"Schedules must be [L+1] or [N, L+1], got {tuple(schedules.shape)}.")
        self.schedules = schedules
        self.steps = schedules.shape[-1] - 1

    def start(self, n: int) -> Tensor:
        """The first flow time of every item ``[n]``."""
        return self._column(0, n)

    def next_sigma(self, state: StepState) -> ActorStep:
        return ActorStep(self._column(state.step + 1, state.sigma.shape[0]).to(state.sigma))

    def _column(self, index: int, n: int) -> Tensor:
        s = self.schedules
        return s[index].expand(n) if s.ndim == 1 else s[:, index]


__all__ = ["StepState", "ActorStep", "Actor", "Trajectory", "TrajectoryRecorder",
           "FixedScheduleActor", "check_decision"]
