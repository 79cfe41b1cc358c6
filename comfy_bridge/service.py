"""Policy -> SIGMAS for this model, this prompt and this noise: the one service the node
(``Learned Schedule``), the trainer's eval and its sample grids all call.

A policy decides a flow-time schedule for its own step count; this module asks it for the
features of each context, resamples the schedule to another step count and applies
``denoise`` exactly like ComfyUI's ``BasicScheduler`` (a schedule of ``int(steps / denoise)``
steps of which the last ``steps`` are kept), and maps it to the model's sigmas.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..policies.contract import has_schedule
from ..policies.device import module_device
from ..policies.schedule import validate_schedule
from .features import initial_noise, model_family, text_features
from .sigmas import default_sigmas, sampling_of, schedule_to_model, step_counts

log = logging.getLogger("learned_schedules")


def policy_flow(policy: torch.nn.Module, features: dict[str, torch.Tensor], mode: str = "mean",
                seed: int | None = None, steps: int | None = None) -> torch.Tensor:
    """A one-shot policy's flow-time schedules ``[N, L+1]`` (float64, CPU) for a batch of
    features (``ValueError``, a plain sentence, for a step-wise policy).

    ``mode``: ``mean`` (deterministic) or ``sample`` (a draw; with ``seed`` the draw is
    reproducible and the global RNG is left as it was). ``steps``: another step count, which
    the policy reaches by its own rule (``[N, steps+1]``; e.g. ART's log-linear
    interpolation)."""
    if mode not in ("mean", "sample"):
        raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}.")
    if not has_schedule(policy):
        raise ValueError("This is an AdaGen step-wise policy: it chooses each step while "
                         "sampling, so it has no schedule before sampling; use the Learned "
                         "Sampler node (or backend.rollout with policy.actor(...)).")
    device = module_device(policy)
    feats = {k: v.to(device) for k, v in features.items()}

    def call() -> torch.Tensor:
        return policy.schedule(feats, steps=steps, mode=mode)

    with torch.inference_mode():
        if mode == "sample" and seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed) % (2**63))
                flow = call()
        else:
            flow = call()
    return flow.double().cpu()


def schedule_sigmas(model: Any, flow: torch.Tensor, steps: int = 0, denoise: float = 1.0
                    ) -> torch.Tensor:
    """Flow schedules ``[..., L+1]`` -> a MODEL's sigmas ``[..., steps+1]`` (float32), see
    :func:`.sigmas.schedule_to_model`."""
    return schedule_to_model(sampling_of(model), flow, steps, denoise)


def policy_sigmas(model: Any, policy: torch.nn.Module, features: dict[str, torch.Tensor], *,
                  steps: int = 0, denoise: float = 1.0, mode: str = "mean",
                  seed: int | None = None) -> torch.Tensor:
    """The policy's sigmas ``[N, steps+1]`` (model sigma space, float32) for N contexts'
    features (see :func:`policy_flow` and :func:`schedule_sigmas`)."""
    total = step_counts(steps, denoise) if steps else None
    return schedule_sigmas(model, policy_flow(policy, features, mode, seed, total), steps, denoise)


def check_feature_dims(meta: dict, feats: dict[str, torch.Tensor], name: str) -> None:
    """``ValueError`` (naming what differs) unless the features fit the policy file's
    ``feature_dims``."""
    dims = meta.get("feature_dims", {})
    noise = feats["noise"]
    if "noise" in dims and dims["noise"][0] != noise.shape[1]:
        raise ValueError(f"{name} expects a {dims['noise'][0]}-channel latent; this model's "
                         f"latent has {noise.shape[1]} channels.")
    if "tokens" in dims and dims["tokens"][-1] != feats["tokens"].shape[-1]:
        raise ValueError(f"{name} expects text tokens of width {dims['tokens'][-1]}; the "
                         f"conditioning has width {feats['tokens'].shape[-1]} (another text "
                         "encoder?).")
    if "pooled" in dims:
        pooled = feats.get("pooled")
        if pooled is None:
            raise ValueError(f"{name} needs a pooled text embedding; the conditioning has "
                             "none.")
        if dims["pooled"][-1] != pooled.shape[-1]:
            raise ValueError(f"{name} expects a pooled embedding of width {dims['pooled'][-1]}"
                             f"; the conditioning has width {pooled.shape[-1]}.")


def check_family(meta: dict, model: Any, name: str) -> None:
    """``ValueError`` (a plain sentence) unless the policy was trained for this model's family
    (the Learned Schedule node and the Learned Sampler give the same one)."""
    family = model_family(model)
    if meta.get("model_family") != family:
        raise ValueError(f"{name} was trained for {meta.get('model_family')}, but the model "
                         f"is {family}; choose a policy trained for this model family.")


def node_sigmas(model: Any, positive: Any, noise: Any, latent_image: dict, loaded: Any,
                name: str, steps: int = 0, mode: str = "mean", denoise: float = 1.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """What the ``Learned Schedule`` node outputs: the learned sigmas ``[steps+1]`` of the
    first batch item (its noise, its prompt) and ComfyUI's default (``simple``) sigmas for
    the same steps and denoise. ``loaded`` is a :class:`policies.policy_file.LoadedPolicy`;
    ``name`` names it in messages. ``ValueError`` with a plain sentence for every bad input.
    """
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise}.")
    if mode not in ("mean", "sample"):
        raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}.")
    meta = loaded.metadata
    check_family(meta, model, name)
    x_t = initial_noise(model, noise, latent_image)
    if x_t.shape[0] > 1:
        log.info("Learned Schedule: batch of %d; using the schedule of the first item",
                 x_t.shape[0])
    feats = {"noise": x_t[:1].float(), **text_features(positive)}
    check_feature_dims(meta, feats, name)
    if "pooled" not in meta.get("feature_dims", {}):
        feats.pop("pooled", None)
    policy_steps = int(meta["steps"])
    steps = steps or policy_steps
    total = step_counts(steps, denoise)
    if total != policy_steps:
        log.info("Learned Schedule: %s was trained for %d steps; resampling its schedule to %d",
                 name, policy_steps, total)
    flow = policy_flow(loaded.policy, feats, mode, seed=int(getattr(noise, "seed", 0)),
                       steps=total)
    sigmas = schedule_sigmas(model, flow[0], steps, denoise)
    validate_schedule(sigmas, sigma_max=float(sigmas[0]))
    return sigmas, default_sigmas(model, steps, "simple", denoise).float()


__all__ = ["policy_flow", "schedule_sigmas", "policy_sigmas", "check_feature_dims",
           "node_sigmas"]
