"""A ComfyUI ``SAMPLER`` driven by a learned policy: per-image schedules inside any sampler node.

:class:`PolicySampler` is a KSAMPLER sampler function (``sample(model, x, sigmas, extra_args,
callback, disable)``) that runs the step loop of :class:`.sampler.ActorSampler` with an actor
built from a policy file when the sampler is called:

* a **step-wise** policy (AdaGen, :func:`policies.contract.is_stepwise`) decides every next
  sigma of every image from its current sample; the incoming SIGMAS give the start, the end and
  the number of steps, and (in flow time) the base schedule its residual is applied to;
* a **one-shot** policy (Dirichlet, ART's clocks: :func:`policies.contract.has_schedule`,
  through :func:`.service.policy_flow`) gives every image of the batch its own schedule from its
  own initial noise (the ``Learned Schedule`` node can only give one SIGMAS per batch),
  resampled to the incoming length; the start and the end are the incoming SIGMAS'.

The policy's features are the sampler's initial ``x`` at unit scale
(:func:`.sampler.unit_sample`: the initial noise at full denoise, as the Learned Schedule node
reads it, on flow and discrete models alike) and the text features of the node's conditioning.
After a run, :attr:`PolicySampler.last` holds the sigmas every image used (model sigma space)
and is sent to the node's plot
(``PromptServer.send_sync("learned_schedules.sampler_sigmas", ...)``) when a server runs.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..policies.actors import FixedScheduleActor
from ..policies.contract import is_stepwise
from ..policies.device import module_device
from ..policies.schedule import resample_schedule
from .sampler import RULES, ActorSampler, unit_sample
from .service import check_family, check_feature_dims, policy_flow
from .sigmas import flow_to_model, model_to_flow

log = logging.getLogger("learned_schedules")

EVENT = "learned_schedules.sampler_sigmas"
"""The websocket event that carries the sigmas each image used to the node's plot."""


class PolicySampler:
    """KSAMPLER sampler function running ``loaded`` (a :class:`LoadedPolicy`) step by step."""

    def __init__(self, loaded: Any, text: dict[str, torch.Tensor], rule: str = "euler",
                 mode: str = "mean", scale: float = 1.0, name: str = "policy",
                 node_id: str | None = None):
        if rule not in RULES:
            raise ValueError(f"The learned sampler implements {', '.join(RULES)}; got {rule!r}.")
        if mode not in ("mean", "sample"):
            raise ValueError(f"mode must be 'mean' or 'sample', got {mode!r}.")
        self.loaded, self.text, self.rule, self.mode = loaded, text, rule, mode
        self.scale, self.name, self.node_id = float(scale), name, node_id
        self.last: dict[str, Any] | None = None
        self.trajectory = None

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The policy's features for the sampler's batch ``x [N, C, H, W]`` (at unit scale,
        :func:`.sampler.unit_sample`)."""
        n = x.shape[0]
        feats = {"noise": x.detach().float().cpu(),
                 **{k: v.expand(n, *v.shape[1:]).contiguous() for k, v in self.text.items()}}
        meta = self.loaded.metadata
        check_feature_dims(meta, feats, self.name)
        if "pooled" not in meta.get("feature_dims", {}):
            feats.pop("pooled", None)
        return feats

    def actor(self, sampling: Any, x: torch.Tensor, sigmas: torch.Tensor,
              seed: int | None) -> Any:
        """The step-wise policy's actor, or the one-shot policy's per-image schedules."""
        policy = self.loaded.policy
        feats = self.features(unit_sample(sampling, sigmas[0], x))
        steps = len(sigmas) - 1
        base = model_to_flow(sampling, sigmas.detach().double().cpu())  # may end above 0
        if is_stepwise(policy):
            device = module_device(policy)
            feats = {k: v.to(device) for k, v in feats.items()}
            generator = None
            if self.mode == "sample" and seed is not None:
                generator = torch.Generator(device=device).manual_seed(int(seed) % (2**63))
            return policy.actor(feats, mode=self.mode, base=base, scale=self.scale,
                                generator=generator)
        flow = policy_flow(policy, feats, self.mode, seed)  # [N, L+1] from 1 to 0
        if flow.shape[-1] - 1 != steps:
            flow = resample_schedule(flow, steps)
        # mapped into the incoming range [start, end] (a start below 1: denoise); the last
        # step goes to 0 for the actor (the sampler ends it at sigmas[-1])
        start, end = float(base[0]), float(model_to_flow(sampling, sigmas[-1:].double().cpu()))
        flow = end + (start - end) * flow
        flow[:, -1] = 0.0
        return FixedScheduleActor(flow)

    @torch.no_grad()
    def __call__(self, model: Any, x: torch.Tensor, sigmas: torch.Tensor,
                 extra_args: dict | None = None, callback: Any = None,
                 disable: bool | None = None) -> torch.Tensor:
        extra_args = {} if extra_args is None else extra_args
        base_model = model.inner_model.inner_model
        check_family(self.loaded.metadata, base_model, self.name)
        sampling = base_model.model_sampling
        seed = extra_args.get("seed")
        inner = ActorSampler(self.actor(sampling, x, sigmas, seed), self.rule)
        out = inner(model, x, sigmas, extra_args, callback, disable)
        self.trajectory = inner.trajectory
        used = flow_to_model(sampling, inner.trajectory.sigmas.double()).float()
        used[:, -1] = sigmas[-1].float().cpu()
        self.last = {"sigmas": used[0].tolist(), "items": used.tolist(),
                     "default_sigmas": sigmas.float().cpu().tolist(),
                     "label": self.name, "default_label": "incoming sigmas",
                     "steps": len(sigmas) - 1, "policy": self.name,
                     "family": self.loaded.metadata.get("model_family", ""),
                     "method": self.loaded.metadata.get("method", ""),
                     "trained_steps": int(self.loaded.metadata.get("steps", 0)),
                     "resampling": ""}  # the plot counts the images and their spread
        _send(self.node_id, self.last)
        return out


def _send(node_id: str | None, payload: dict[str, Any]) -> None:
    """Send the sigmas to the node's plot when a ComfyUI server runs (no-op otherwise)."""
    try:
        from server import PromptServer
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    if server is None:
        return
    try:
        server.send_sync(EVENT, {"node": node_id, "learned_schedule": [payload]})
    except Exception:  # noqa: BLE001 - a plot must never break a finished sampling run
        log.exception("Learned Sampler: could not send the sigmas to the node's plot")


def policy_ksampler(loaded: Any, text: dict[str, torch.Tensor], **options: Any) -> Any:
    """A ComfyUI ``SAMPLER`` (``KSAMPLER``) running :class:`PolicySampler`; after sampling,
    ``.sampler_function.last`` holds the sigmas each image used."""
    import comfy.samplers

    return comfy.samplers.KSAMPLER(PolicySampler(loaded, text, **options))


__all__ = ["PolicySampler", "policy_ksampler", "EVENT"]
