"""Rollouts through a two-expert model (Wan 2.2 A14B): high-noise expert, then low-noise one.

Every schedule first gets one step exactly on the experts' boundary
(:func:`policies.experts.snap_to_boundary`, the rule the Split Sigmas at Expert Boundary node
applies); the high-noise expert samples from the noise down to the boundary and the low-noise
expert continues from its output with no added noise, exactly what the two
``SamplerCustomAdvanced`` nodes of the two-expert graph do (the same ``CFGGuider.sample``
calls, the same latent scaling in between). Rollouts whose boundary step differs are sampled
in groups, one group per boundary step. Both experts share the conditioning, the noise and
the batching (:class:`.inputs.ModelInputs`). Step-wise actors (AdaGen) and ART's flow field
are one-model paths: they raise a plain sentence here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from ...comfy_bridge.sigmas import flow_to_model, model_to_flow, sampling_of
from ...policies.actors import Actor, FixedScheduleActor, Trajectory
from ...policies.experts import snap_to_boundary
from .contexts import PromptContexts
from .rollout import PromptTexts, Rollouts, rollouts_for


class ExpertRollouts:
    """The rollout strategy of a two-expert model: the high-noise expert's rollouts down to
    ``boundary`` (model sigma), the low-noise expert's below it."""

    stepwise = False

    def __init__(self, high: Rollouts, low: Rollouts, boundary: float):
        self.high, self.low, self.boundary = high, low, float(boundary)
        self.inputs, self.model = high.inputs, high.model

    @property
    def sampler(self) -> str:
        return self.high.sampler

    def model_sigmas(self, flow: torch.Tensor) -> torch.Tensor:
        """Policy schedules (flow time) -> the high-noise expert's sigmas (float32)."""
        return self.high.model_sigmas(flow)

    def snap(self, sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Schedules ``[N, L+1]`` with one step on the boundary, and that step per row."""
        return snap_to_boundary(sigmas, self.boundary)

    def sample_latents(self, contexts: PromptContexts, sigmas: torch.Tensor) -> torch.Tensor:
        """Denoised latents ``[N, ...]`` (CPU) for N contexts under model sigmas ``[N, L+1]``
        (or ``[L+1]`` for all): high-noise expert to the boundary, low-noise one after."""
        n = len(contexts)
        if sigmas.ndim == 1:
            sigmas = sigmas.expand(n, -1)
        snapped, index = self.snap(sigmas.cpu())
        out = torch.empty(n, *self.inputs.latent_shape)
        for k in index.unique():
            rows = torch.nonzero(index == k).flatten()
            part, cut = contexts.select(rows), int(k)
            high = self.high.sample_latents(part, snapped[rows, :cut + 1])
            out[rows] = self.low.sample_latents(part, snapped[rows, cut:], start=high)
        return out

    def sample_flow(self, contexts: PromptContexts, flow: torch.Tensor) -> torch.Tensor:
        """Denoised latents under flow schedules ``[N, L+1]``."""
        return self.sample_latents(contexts, self.model_sigmas(flow))

    def sample_actor(self, contexts: PromptContexts, actor: Actor, steps: int) -> Trajectory:
        """Fixed schedules only (the trainer's one-shot policies): their trajectory, whose
        ``sigmas`` are the snapped schedules in flow time."""
        if not isinstance(actor, FixedScheduleActor):
            raise ValueError("Step-wise (AdaGen) rollouts run on one model; with two experts "
                             "train a one-shot policy (dirichlet-reinforce / dirichlet-ppo).")
        rows = actor.schedules if actor.schedules.ndim == 2 \
            else actor.schedules.expand(len(contexts), -1)
        sampling = sampling_of(self.model)
        snapped, _ = self.snap(flow_to_model(sampling, rows.double()))
        final = self.sample_latents(contexts, snapped.float())
        return Trajectory(sigmas=model_to_flow(sampling, snapped).float(), final=final, info={})

    def flow_rollout(self, contexts: PromptContexts,
                     fn: Callable[[Any, torch.Tensor], dict[str, torch.Tensor]]
                     ) -> dict[str, torch.Tensor]:
        raise ValueError("ART's flow field runs on one model; it is not available with two "
                         "experts.")


def expert_rollouts_for(sampler: str, inputs: Any, low_model: Any, boundary: float,
                        prompt_texts: PromptTexts) -> ExpertRollouts:
    """The two-expert strategy: ``inputs`` (the high-noise expert's) and a copy of them for
    the low-noise expert ``low_model`` (same conditioning cache, noise and batching)."""
    low_inputs = copy.copy(inputs)
    low_inputs.model = low_model
    return ExpertRollouts(rollouts_for(sampler, inputs, prompt_texts),
                          rollouts_for(sampler, low_inputs, prompt_texts), boundary)


__all__ = ["ExpertRollouts", "expert_rollouts_for"]
