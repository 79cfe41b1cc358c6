"""How the ComfyUI back-end samples: one rollout strategy, chosen from the sampler's name.

Every rollout has its own sigmas. For ``euler``, ``heun`` and ``dpmpp_2m`` the back-end runs
the step-wise sampler of :mod:`comfy_bridge.sampler` (:class:`StepLoopRollouts`: the per-item
step loop, one batched model call per step, and an actor may choose each next sigma); for
every other sampler it runs ComfyUI's own sampler, per rollout, in lockstep threads
(:class:`LockstepRollouts`, :mod:`training.comfy.sampling`). :func:`rollouts_for` picks the
strategy once; every caller goes through it. No gradient flows through the model, except in
:meth:`Rollouts.flow_rollout` (the differentiable flow field, ART's error signal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...comfy_bridge.sampler import RULES, actor_ksampler
from ...comfy_bridge.sigmas import flow_to_model, model_to_flow, sampling_of
from ...policies.actors import Actor, FixedScheduleActor, Trajectory
from .contexts import PromptContexts
from .inputs import ModelInputs

PromptTexts = Callable[[PromptContexts], list[str]]


class Rollouts:
    """The rollout paths every sampler has: ComfyUI's own sampler (one schedule for all, or
    per-rollout sigmas in lockstep threads) and the differentiable flow field."""

    stepwise = False
    """Whether an actor can choose the sigmas step by step (:meth:`sample_actor`)."""

    def __init__(self, inputs: ModelInputs, sampler: str, prompt_texts: PromptTexts):
        self.inputs, self.sampler, self.prompt_texts = inputs, sampler, prompt_texts
        self.model = inputs.model

    def model_sigmas(self, flow: torch.Tensor) -> torch.Tensor:
        """Policy schedules (flow time) -> this model's sigmas (float32)."""
        return flow_to_model(sampling_of(self.model), flow.double()).float()

    def _noise_and_start(self, contexts: PromptContexts, start: torch.Tensor | None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """The noise and latent a sampler run is given: each seed's x_T and an empty latent,
        or, continuing from ``start`` latents (the second expert of a two-expert model, as
        ``DisableNoise`` + the first sampler's output in a graph), zeros and ``start``."""
        if start is None:
            noise = self.inputs.noise(contexts.seeds)
            return noise, torch.zeros_like(noise)
        return torch.zeros_like(start), start

    def _comfy_latents(self, contexts: PromptContexts, sigmas: torch.Tensor,
                       start: torch.Tensor | None = None) -> torch.Tensor:
        """ComfyUI's sampler: one batched run per batch of rollouts (lockstep threads when
        their sigmas ``[N, L+1]`` differ)."""
        from .sampling import sample_rollouts

        n = len(contexts)
        prompts = self.prompt_texts(contexts)
        noise, latent = self._noise_and_start(contexts, start)
        out = torch.empty(n, *self.inputs.latent_shape)
        for idx in self.inputs.batches(prompts):
            latents = sample_rollouts(
                self.model, self.inputs.batched_cond([prompts[int(i)] for i in idx]),
                self.inputs.negative(len(idx)), noise[idx], sigmas[idx].cpu(),
                [int(s) for s in contexts.seeds[idx]], self.sampler, self.inputs.cfg,
                latent_image=latent[idx])
            out[idx] = latents.float().cpu()
        return out

    def sample_latents(self, contexts: PromptContexts, sigmas: torch.Tensor,
                       start: torch.Tensor | None = None) -> torch.Tensor:
        """Denoised latents ``[N, ...]`` (CPU) for N contexts, each with its own sigmas
        ``[N, L+1]`` (or one schedule ``[L+1]`` for all), in the model's sigma space; from
        ``start`` latents with no added noise when given (see :meth:`_noise_and_start`)."""
        if sigmas.ndim == 1:
            sigmas = sigmas.expand(len(contexts), -1)
        return self._comfy_latents(contexts, sigmas, start)

    def sample_flow(self, contexts: PromptContexts, flow: torch.Tensor) -> torch.Tensor:
        """Denoised latents ``[N, ...]`` (CPU) under flow schedules ``[N, L+1]``."""
        return self.sample_latents(contexts, self.model_sigmas(flow))

    def sample_actor(self, contexts: PromptContexts, actor: Actor, steps: int,
                     start: torch.Tensor | None = None) -> Trajectory:
        """Sample every context, the actor choosing each next sigma (step-wise samplers)."""
        raise ValueError(f"Step-wise rollouts use the samplers {', '.join(RULES)}; the "
                         f"back-end's sampler is {self.sampler}.")

    def flow_rollout(self, contexts: PromptContexts,
                     fn: Callable[[Any, torch.Tensor], dict[str, torch.Tensor]]
                     ) -> dict[str, torch.Tensor]:
        """Run ``fn(field, rows)`` on the model's differentiable flow field (through
        ``apply_model`` inside ``CFGGuider.sample``, :mod:`.flow_field`), once per group of
        contexts whose prompts batch together; the results are reassembled in context
        order."""
        from .flow_field import run_flow_field

        prompts = self.prompt_texts(contexts)
        noise = self.inputs.noise(contexts.seeds)
        out: dict[str, torch.Tensor] = {}
        for idx in self.inputs.batches(prompts):
            part = run_flow_field(
                self.model, self.inputs.batched_cond([prompts[int(i)] for i in idx]),
                self.inputs.negative(len(idx)), self.inputs.cfg, noise[idx],
                lambda field, rows=idx: fn(field, rows), seed=int(contexts.seeds[idx[0]]))
            for key, value in part.items():
                if key not in out:
                    out[key] = value.new_empty((len(contexts), *value.shape[1:]), device="cpu")
                out[key][idx] = value.detach().cpu()
        return out


class LockstepRollouts(Rollouts):
    """Samplers without a per-item step loop: ComfyUI's own code, in lockstep threads."""


class StepLoopRollouts(Rollouts):
    """``euler`` / ``heun`` / ``dpmpp_2m``: the bridge's per-item step loop
    (:func:`comfy_bridge.sampler.actor_ksampler`), an actor choosing each next sigma."""

    stepwise = True

    def sample_latents(self, contexts: PromptContexts, sigmas: torch.Tensor,
                       start: torch.Tensor | None = None) -> torch.Tensor:
        """As :meth:`Rollouts.sample_latents`; different sigmas per rollout go through the
        step loop (one schedule for all: ComfyUI's batched sampler, as ``SamplerCustom``)."""
        n = len(contexts)
        if sigmas.ndim == 1:
            sigmas = sigmas.expand(n, -1)
        if n > 1 and not bool((sigmas == sigmas[:1]).all()):
            actor = FixedScheduleActor(model_to_flow(sampling_of(self.model), sigmas.cpu()))
            return self.sample_actor(contexts, actor, sigmas.shape[1] - 1, start).final
        return self._comfy_latents(contexts, sigmas, start)

    def sample_flow(self, contexts: PromptContexts, flow: torch.Tensor) -> torch.Tensor:
        return self.sample_actor(contexts, FixedScheduleActor(flow.cpu()),
                                 flow.shape[1] - 1).final

    def sample_actor(self, contexts: PromptContexts, actor: Actor, steps: int,
                     start: torch.Tensor | None = None) -> Trajectory:
        """Sample every context with the step-wise sampler, the actor choosing each next
        sigma; the trajectory's ``final`` holds the latents (CPU). From ``start`` latents
        with no added noise when given (:meth:`Rollouts._noise_and_start`)."""
        from .sampling import make_guider

        n = len(contexts)
        prompts = self.prompt_texts(contexts)
        noise, latent = self._noise_and_start(contexts, start)
        sampling = sampling_of(self.model)
        out = torch.empty(n, *self.inputs.latent_shape)
        flow = torch.empty(n, steps + 1)
        info: dict[str, torch.Tensor] = {}
        for idx in self.inputs.batches(prompts):
            sub, first = _actor_rows(actor, idx, steps)
            ksampler = actor_ksampler(sub, self.sampler)
            latents = make_guider(
                self.model, self.inputs.batched_cond([prompts[int(i)] for i in idx]),
                self.inputs.negative(len(idx)), self.inputs.cfg).sample(
                noise[idx], latent[idx], ksampler,
                flow_to_model(sampling, first), disable_pbar=True,
                seed=int(contexts.seeds[idx[0]]))
            out[idx] = latents.float().cpu()
            traj = ksampler.sampler_function.trajectory
            flow[idx] = traj.sigmas.float().cpu()
            for key, value in traj.info.items():
                if key not in info:
                    info[key] = value.new_empty((n, *value.shape[1:]), device="cpu")
                info[key][idx] = value.cpu()
        return Trajectory(sigmas=flow, final=out, info=info)


def rollouts_for(sampler: str, inputs: ModelInputs, prompt_texts: PromptTexts) -> Rollouts:
    """The rollout strategy of a ComfyUI sampler name (the step loop for the rules the
    bridge's sampler implements, lockstep threads for the others)."""
    kind = StepLoopRollouts if sampler in RULES else LockstepRollouts
    return kind(inputs, sampler, prompt_texts)


def _actor_rows(actor: Actor, idx: torch.Tensor, steps: int) -> tuple[Actor, torch.Tensor]:
    """The actor for rollouts ``idx`` of a batch, and the flow schedule ``[L+1]`` whose start,
    end and length the sampler is given: a fixed-schedule actor's rows (their first one; all
    must start at the same time), otherwise the actor itself from t = 1."""
    if isinstance(actor, FixedScheduleActor):
        if actor.steps != steps:
            raise ValueError(f"{actor.steps}-step schedules for a {steps}-step rollout.")
        rows = actor.schedules[idx] if actor.schedules.ndim == 2 else actor.schedules[None]
        if bool((rows[:, 0] != rows[0, 0]).any()):
            raise ValueError("Schedules sampled in one batch must start at the same sigma.")
        return FixedScheduleActor(rows if actor.schedules.ndim == 2 else actor.schedules), \
            rows[0]
    select = getattr(actor, "select", None)  # a batch-bound actor (AdaGen's StepActor)
    if callable(select):
        return select(idx), torch.linspace(1.0, 0.0, steps + 1)
    return actor, torch.linspace(1.0, 0.0, steps + 1)


__all__ = ["Rollouts", "LockstepRollouts", "StepLoopRollouts", "rollouts_for"]
