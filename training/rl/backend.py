"""Rollout back-ends: where contexts, features and rewards come from.

The RL engine only talks to this interface, so the same engine trains on the exact analytic
testbed (no weights, the embedded default) and on real ComfyUI models
(:mod:`training.comfy.backend`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...policies.actors import Actor, Trajectory
from ...policies.device import module_device

if TYPE_CHECKING:
    from .config import TrainConfig
    from .flow_error import FlowField


class Backend:
    """What the engine, the algorithms and ``eval`` need from a back-end.

    Required: the attributes and the methods that raise ``NotImplementedError`` here.
    Optional capabilities are declared here too, with a default that says "not available"
    (``None`` / an empty dict), so callers never probe with ``hasattr``.

    Schedules are always in **flow time** (``[..., L+1]`` from 1 down to 0); a back-end maps
    them to its model's own sigmas.
    """

    model_family: str
    """Model family written into policy files (``testbed``, ``flux-dev``, ``sd3``...)."""
    reward_name: str
    """Name of the reward being maximised (written into policy files)."""

    # -- contexts and features -------------------------------------------------------------
    def draw_contexts(self, n: int, generator: torch.Generator) -> Any:
        """Draw ``n`` training contexts (prompt, initial noise) from a seeded stream."""
        raise NotImplementedError

    def held_out_contexts(self, n: int, seed: int) -> Any:
        """``n`` held-out contexts, reproducible from ``seed`` (disjoint from training)."""
        raise NotImplementedError

    def features(self, contexts: Any) -> dict[str, torch.Tensor]:
        """Policy inputs for a batch of contexts (keyword arguments of the encoder)."""
        raise NotImplementedError

    def build_encoder(self, hidden: int, depth: int) -> nn.Module:
        """A fresh feature encoder sized for this back-end's features."""
        raise NotImplementedError

    # -- rollouts ---------------------------------------------------------------------------
    def rewards(self, contexts: Any, schedules: torch.Tensor) -> torch.Tensor:
        """Sample every context with each of its schedules ``[B, K, L+1]``; rewards ``[B, K]``."""
        raise NotImplementedError

    def rollout(self, contexts: Any, actor: Actor, steps: int) -> Trajectory:
        """Sample every context once, asking ``actor`` for the next sigma at every step (the
        step-wise seam, :mod:`policies.actors`); the trajectory carries the rewards."""
        raise NotImplementedError

    # -- optional capabilities ----------------------------------------------------------------
    def default_segments(self, steps: int) -> torch.Tensor | None:
        """Segments ``[L+1]`` of the model's own default schedule (where a policy starts with
        ``init_schedule=default``), or None when the back-end has no default schedule."""
        return None

    def reference_samples(self, contexts: Any, source: str = "default") -> torch.Tensor | None:
        """Samples ``[N, ...]`` (the shape of a rollout's ``final``) that the policy's samples
        should look like, one per context (the same prompt / class): AdaGen's discriminator
        learns to tell the two apart. ``source``: ``default`` (the back-end's own: true data
        on the testbed, the model's many-step samples on ComfyUI) or a back-end specific data
        set (``digits``: real digits for the digits model). None when the back-end has none;
        ``ValueError`` for a source it does not know."""
        return None

    def has_reference_samples(self) -> bool:
        """Whether :meth:`reference_samples` is available (without drawing any)."""
        return type(self).reference_samples is not Backend.reference_samples

    def comparators(self, steps: int, contexts: Any, **options: Any) -> dict[str, torch.Tensor]:
        """Reference schedules ``eval`` reports beside a policy: name -> ``[L+1]`` (one for
        every context) or ``[N, L+1]`` (per context). Back-ends take the ``options`` they know
        and ignore the others. Empty when the back-end has none."""
        return {}

    def held_out_count(self) -> int | None:
        """How many distinct held-out prompts there are (``eval`` draws seeds for each), or
        None when held-out contexts are unlimited (the testbed)."""
        return None

    def eval_metrics(self, contexts: Any, schedules: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra per-context measures ``[N]`` for schedules ``[N, L+1]`` (e.g. the testbed's
        squared error to the exact solution; positive values are summarised by their geometric
        mean). Empty by default."""
        return {}

    def set_metrics(self, contexts: Any, schedules: dict[str, torch.Tensor]
                    ) -> dict[str, dict[str, SetMetric]]:
        """Set-level measures (e.g. the digits model's Fréchet distance and per-class coverage)
        of the outputs of each schedule over all ``contexts``: schedule name -> metric ->
        :class:`SetMetric`; ``schedules``: name -> ``[N, L+1]`` flow time (lengths may differ
        between names). Bootstrap replicates use the same resamples of the contexts for every
        schedule, so differences between schedules get paired standard errors. Empty by
        default (no set-level measures)."""
        return {}

    def ceiling_schedule(self, steps: int, **options: Any) -> tuple[str, torch.Tensor] | None:
        """The model's default schedule at ``steps`` steps (the quality ceiling ``eval`` reports
        beside the L-step schedules): ``(name of the comparator it is the many-step version of,
        flow schedule [steps+1])``; ``options`` as for :meth:`comparators`. None when the
        back-end has no default schedule."""
        return None

    def describe_contexts(self, contexts: Any) -> list[dict[str, Any]] | None:
        """One dict per context for the per-context CSV of ``eval`` (e.g. prompt and seed), or
        None to write no such file."""
        return None

    def write_eval_artifacts(self, out_dir: Path, contexts: Any,
                             schedules: dict[str, torch.Tensor],
                             rewards: dict[str, torch.Tensor], **options: Any) -> list[Path]:
        """Back-end specific ``eval`` outputs (plots, image grids) in ``out_dir``; returns the
        files written. ``schedules``: name -> ``[N, L+1]`` flow time; ``options`` as for
        :meth:`comparators` (each back-end takes those it knows)."""
        return []

    def write_samples(self, policy: nn.Module, path: Path) -> Path | None:
        """Save sample images of the policy's schedules (None: the back-end has no images)."""
        return None

    def context_groups(self, contexts: Any) -> torch.Tensor | None:
        """The prompt-group id of every context, ``LongTensor [B]`` (contexts sharing a prompt
        and differing in their noise share an id), for the grouped baselines; None when the
        back-end has no notion of prompt."""
        return None

    def draw_grouped_contexts(self, prompts: int, seeds: int,
                              generator: torch.Generator) -> Any:
        """``prompts * seeds`` training contexts: ``prompts`` distinct prompts (fewer only if
        there are fewer), ``seeds`` noises each, prompt-major. ``ValueError`` when the
        back-end cannot group by prompt."""
        raise ValueError("This back-end cannot draw batches grouped by prompt: set "
                         "seeds_per_prompt to 0 and use a baseline that is not grouped.")

    def flow_rollout(self, contexts: Any,
                     fn: Callable[[FlowField, torch.Tensor], dict[str, torch.Tensor]]
                     ) -> dict[str, torch.Tensor] | None:
        """Run ``fn(field, rows)`` on the contexts' differentiable, forward-AD capable
        probability-flow field (:class:`training.rl.flow_error.FlowField`: the initial noise
        and ``v(x, sigma)`` in flow time), e.g. an ART trajectory with its error signal;
        ``rows`` are the indices of the contexts the field covers. ``fn`` returns tensors with
        the field's batch first; a back-end that needs several fields for one batch (prompts
        of different lengths) concatenates their results in context order. None when the
        back-end has no such field."""
        return None


def grouped_indices(pool_groups: torch.Tensor, prompts: int, seeds: int,
                    generator: torch.Generator) -> torch.Tensor:
    """Indices into a context pool whose group ids are ``pool_groups [N]``: ``prompts``
    distinct groups (drawn without replacement while there are enough, then with), ``seeds``
    members of each, drawn with replacement; prompt-major ``[prompts * seeds]``."""
    ids, inverse = torch.unique(pool_groups, return_inverse=True)
    n = len(ids)
    if prompts <= n:
        chosen = torch.randperm(n, generator=generator)[:prompts]
    else:
        chosen = torch.randint(n, (prompts,), generator=generator)
    out = []
    for g in chosen.tolist():
        members = torch.nonzero(inverse == g).flatten()
        out.append(members[torch.randint(len(members), (seeds,), generator=generator)])
    return torch.cat(out)


@dataclass
class SetMetric:
    """A set-level measure of one schedule's outputs: its value on all contexts and its
    bootstrap ``replicates`` ``[R]`` (the value on R resamples of the contexts, the same
    resamples for every schedule of one :meth:`Backend.set_metrics` call)."""

    value: float
    replicates: torch.Tensor

    @property
    def se(self) -> float:
        """Bootstrap standard error."""
        r = self.replicates.double()
        r = r[torch.isfinite(r)]
        return float(r.std()) if r.numel() > 1 else 0.0

    def diff_se(self, other: SetMetric) -> float:
        """Standard error of ``self.value - other.value``, paired on the same resamples."""
        d = (self.replicates.double() - other.replicates.double())
        d = d[torch.isfinite(d)]
        return float(d.std()) if d.numel() > 1 else 0.0


def policy_features(policy: nn.Module, backend: Backend, contexts: Any
                    ) -> dict[str, torch.Tensor]:
    """The back-end's features for ``contexts``, on the policy's device."""
    device = module_device(policy)
    return {k: v.to(device) for k, v in backend.features(contexts).items()}


#: back-end name -> "module:class" (relative to ``training``), imported on first use so the
#: RL core never imports a back-end (nor ComfyUI) it is not asked for
BACKENDS: dict[str, str] = {"testbed": "testbed.backend:TestbedBackend",
                            "comfy": "comfy.backend:ComfyBackend"}


def make_backend(config: TrainConfig) -> Backend:
    """The back-end a config names; ``ValueError`` for an unknown one."""
    import importlib

    if config.backend not in BACKENDS:
        raise ValueError(f"Unknown backend {config.backend!r}; available: "
                         f"{', '.join(BACKENDS)}.")
    module, cls = BACKENDS[config.backend].split(":")
    package = __package__.rsplit(".", 1)[0]  # learned_schedules.training
    return getattr(importlib.import_module(f"{package}.{module}"), cls).from_config(config)
