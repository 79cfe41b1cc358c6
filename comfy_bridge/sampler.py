"""The step loop, once: a ComfyUI ``KSAMPLER`` sampler function driven by an actor.

:class:`ActorSampler` has the signature of ComfyUI's k-diffusion samplers,
``sample(model, x, sigmas, extra_args, callback, disable)``, so ``KSAMPLER(ActorSampler(...))``
(:func:`actor_ksampler`) is a ComfyUI ``SAMPLER`` that ``SamplerCustom`` /
``SamplerCustomAdvanced`` / ``CFGGuider.sample`` run like any other. At every step it calls the
model at the current sigma, asks the actor (:mod:`policies.actors`) for the next sigma of every
batch item given the denoised estimate, and takes the step. ComfyUI's models accept one sigma
per batch item, so each item follows its own schedule in one batched model call per step.

The update rules are ComfyUI's own (``comfy/k_diffusion/sampling.py``: ``sample_euler``,
``sample_heun``, ``sample_dpmpp_2m``, without churn), written per item with exactly the same
arithmetic, so a fixed schedule gives the same result as ComfyUI's sampler with that schedule
(including the first-order special cases when an item's next sigma is 0).

The incoming SIGMAS give the start (noise scaling is done by ``KSAMPLER`` with ``sigmas[0]``),
the end (the last step goes to ``sigmas[-1]``, 0 for a full denoise) and the number of steps.
Actors speak flow time; the model's sigmas are mapped with :mod:`.sigmas`. The actor sees the
sample at unit scale (:func:`unit_sample`): on flow models ``x`` itself, on discrete eps / v
models ``x / sqrt(1 + sigma^2)`` (DDPM's ``x_t``, what the network reads). After a run the
trajectory (flow times used, the actor's infos, the final samples) is in
:attr:`ActorSampler.trajectory`. The object holds no trainer state.
"""

from __future__ import annotations

from typing import Any

import torch

from ..policies.actors import (
    Actor,
    ActorStep,
    StepState,
    Trajectory,
    TrajectoryRecorder,
    check_decision,
)
from .sampling_space import is_discrete_sampling
from .sigmas import flow_to_model, model_to_flow

#: update rules the step loop implements (ComfyUI sampler names)
RULES = ("euler", "heun", "dpmpp_2m")


def _items(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-item values ``[N]`` shaped to broadcast against ``x [N, ...]``."""
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def unit_sample(sampling: Any, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The sample ``x`` at unit scale, as policies read it: ``x`` itself on flow (and other
    continuous) models; on discrete eps / v models, whose ``x`` is ``x_0 + sigma eps``, the
    network's input ``x / sqrt(1 + sigma^2)`` (``sampling.calculate_input``; ``sigma`` one per
    item or one for all). At full denoise of an empty latent that is the initial noise."""
    if not is_discrete_sampling(sampling):
        return x
    return sampling.calculate_input(sigma.to(x.device), x)


def _to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """k-diffusion's ``to_d`` with one sigma per item."""
    return (x - denoised) / _items(sigma, x)


class ActorSampler:
    """A k-diffusion-style sampler function whose sigmas an actor chooses step by step."""

    def __init__(self, actor: Actor, rule: str = "euler"):
        if rule not in RULES:
            raise ValueError(f"The step-wise sampler implements {', '.join(RULES)}; got "
                             f"{rule!r}.")
        self.actor = actor
        self.rule = rule
        self.trajectory: Trajectory | None = None

    @torch.no_grad()
    def __call__(self, model: Any, x: torch.Tensor, sigmas: torch.Tensor,
                 extra_args: dict | None = None, callback: Any = None,
                 disable: bool | None = None) -> torch.Tensor:
        from tqdm.auto import trange

        extra_args = {} if extra_args is None else extra_args
        sampling = model.inner_model.inner_model.model_sampling
        n, steps = x.shape[0], len(sigmas) - 1
        end = sigmas[-1]
        sigma = (sigmas[0] * x.new_ones([n])).to(sigmas.dtype)
        t = model_to_flow(sampling, sigma)
        recorder = TrajectoryRecorder(t)
        prev_sigma = old_denoised = None
        for i in trange(steps, disable=disable):
            denoised = model(x, sigma, **extra_args)
            state = StepState(step=i, steps=steps, x=unit_sample(sampling, sigma, x), sigma=t,
                              denoised=denoised)
            decision = self.actor.next_sigma(state)
            t_next = check_decision(decision.sigma_next.to(t), state)
            if i == steps - 1:
                sigma_next = end.expand(n).to(sigma.dtype)
                t_next = model_to_flow(sampling, sigma_next)
            else:
                sigma_next = flow_to_model(sampling, t_next).to(sigma.dtype)
                if bool((sigma_next <= end).any()):
                    raise ValueError(f"The actor's sigma at step {i} is below the end of the "
                                     "incoming sigmas.")
            recorder.add(ActorStep(t_next, decision.info))
            if callback is not None:
                callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma,
                          "denoised": denoised})
            if self.rule == "euler":
                x = x + _to_d(x, sigma, denoised) * _items(sigma_next - sigma, x)
            elif self.rule == "heun":
                x = self._heun(model, x, sigma, sigma_next, denoised, extra_args)
            else:
                x = self._dpmpp_2m(x, sigma, sigma_next, prev_sigma, denoised, old_denoised)
                prev_sigma, old_denoised = sigma, denoised
            sigma, t = sigma_next, t_next
        self.trajectory = recorder.finish(x)
        return x

    @staticmethod
    def _heun(model: Any, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
              denoised: torch.Tensor, extra_args: dict) -> torch.Tensor:
        """``sample_heun``'s step: Euler for items whose next sigma is 0, Heun otherwise."""
        d = _to_d(x, sigma, denoised)
        dt = _items(sigma_next - sigma, x)
        x_2 = x + d * dt
        last = sigma_next == 0
        if bool(last.all()):
            return x_2
        # items that end here are evaluated at their current sigma (output discarded), so the
        # batch keeps its size and no item is ever called at sigma 0
        s_2 = torch.where(last, sigma, sigma_next)
        denoised_2 = model(x_2, s_2, **extra_args)
        d_2 = _to_d(x_2, s_2, denoised_2)
        d_prime = (d + d_2) / 2
        x_heun = x + d_prime * dt
        return torch.where(_items(last, x), x_2, x_heun)

    @staticmethod
    def _dpmpp_2m(x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
                  prev_sigma: torch.Tensor | None, denoised: torch.Tensor,
                  old_denoised: torch.Tensor | None) -> torch.Tensor:
        """``sample_dpmpp_2m``'s step: first order on the first step and for items whose
        next sigma is 0, second order otherwise."""
        def sigma_fn(t: torch.Tensor) -> torch.Tensor:
            return t.neg().exp()

        def t_fn(s: torch.Tensor) -> torch.Tensor:
            return s.log().neg()

        t, t_next = t_fn(sigma), t_fn(sigma_next)
        h = t_next - t
        ratio = _items(sigma_fn(t_next) / sigma_fn(t), x)
        coeff = _items((-h).expm1(), x)
        if old_denoised is None:
            return ratio * x - coeff * denoised
        h_last = t - t_fn(prev_sigma)
        r = h_last / h
        denoised_d = (_items(1 + 1 / (2 * r), x) * denoised
                      - _items(1 / (2 * r), x) * old_denoised)
        denoised_d = torch.where(_items(sigma_next == 0, x), denoised, denoised_d)
        return ratio * x - coeff * denoised_d


def actor_ksampler(actor: Actor, rule: str = "euler") -> Any:
    """A ComfyUI ``SAMPLER`` (``KSAMPLER``) running :class:`ActorSampler`; after sampling,
    ``.sampler_function.trajectory`` holds the trajectory."""
    import comfy.samplers

    return comfy.samplers.KSAMPLER(ActorSampler(actor, rule))


__all__ = ["RULES", "ActorSampler", "actor_ksampler", "unit_sample"]
