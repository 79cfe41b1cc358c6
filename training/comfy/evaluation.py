"""``eval`` on a ComfyUI model: comparators, set-level measures, image grids and samples.

Comparators are ComfyUI's own schedulers (``BasicScheduler``'s sigmas, in flow time) and
fixed schedules given by the user; the ceiling is the default scheduler at many steps.
Set-level measures are a declared option of the config (``set_metrics``: ``digits`` gives
the digits model's Fréchet distance, per-class coverage and accuracy; ``shapes`` the shapes
model's exact prompt-following scores); their images are
remembered per (prompt, seed, schedule) so that ``eval``'s rewards and set measures sample
each only once. Artefacts: ``grid.png`` (one row per schedule) and the trainer's sample grids
(default schedule above, learned below).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...comfy_bridge import service
from ...comfy_bridge.sigmas import default_flow, flow_to_model, model_to_flow, sampling_of
from ...plots import image_grid
from ...policies.contract import is_stepwise
from ..rl.backend import SetMetric
from ..rl.stepwise import policy_rollout
from .config import SET_METRICS
from .contexts import PromptContexts
from .memo import SampleMemo

if TYPE_CHECKING:
    from ..rl.config import TrainConfig

SetMeasures = Callable[[dict[str, torch.Tensor], list[str]],
                       dict[str, dict[str, tuple[float, torch.Tensor]]]]
"""Images by schedule name + prompts -> name -> metric -> (value, bootstrap replicates)."""


IMAGE_MEMO_LIMIT = 12_000
"""Images :meth:`Evaluation.images` remembers (32x32 digits: ~12 KB each)."""


def check_scheduler_names(names: Sequence[str]) -> None:
    """``ValueError`` naming ComfyUI's schedulers unless ``names`` are some of them."""
    import comfy.samplers

    unknown = [n for n in names if n not in comfy.samplers.SCHEDULER_NAMES]
    if unknown or not names:
        raise ValueError(f"Unknown scheduler(s) {', '.join(unknown) or '(none given)'}; "
                         f"ComfyUI's are: {', '.join(comfy.samplers.SCHEDULER_NAMES)}.")


def set_metrics_option(config: TrainConfig) -> str | None:
    """The set-level measures a config asks for (``comfy.set_metrics``): ``digits``,
    ``shapes`` or None
    (configs from before the option are migrated once, in
    :mod:`training.rl.config_migration`)."""
    choice = config.comfy.set_metrics
    return None if choice == "none" else choice


def set_measures_for(choice: str | None) -> SetMeasures | None:
    """The set measures of a ``set_metrics`` choice (:func:`set_metrics_option`)."""
    if choice is None:
        return None
    if choice not in SET_METRICS:
        raise ValueError(f"set_metrics must be one of {', '.join(SET_METRICS)}, got {choice!r}.")
    if choice == "shapes":
        from ..rewards.shapes import ShapesSetMeasures

        return ShapesSetMeasures()
    from ..rewards.digits import DigitSetMeasures

    return DigitSetMeasures()


class Evaluation:
    """A ComfyUI back-end's ``eval`` capabilities (see the module docstring). ``backend``: the
    :class:`.backend.ComfyBackend` they belong to (its public methods)."""

    def __init__(self, backend: Any, comparator_schedulers: Sequence[str],
                 set_measures: SetMeasures | None = None):
        check_scheduler_names(comparator_schedulers)
        self.backend = backend
        self.comparator_schedulers = tuple(comparator_schedulers)
        self.set_measures = set_measures
        self._images = SampleMemo(limit=IMAGE_MEMO_LIMIT)

    def comparators(self, steps: int, *, schedulers: Sequence[str] | None = None,
                    fixed_schedules: dict[str, Sequence[float]] | None = None
                    ) -> dict[str, torch.Tensor]:
        """ComfyUI's schedulers (``schedulers``, default ``comparator_schedulers``) for
        ``steps`` steps, plus ``fixed_schedules`` (name -> L+1 model sigmas, e.g. a fitted
        best global schedule): name -> flow-time schedule ``[L+1]``."""
        model = self.backend.model
        names = tuple(schedulers) if schedulers else self.comparator_schedulers
        check_scheduler_names(names)
        out = {name: default_flow(model, steps, name).float() for name in names}
        for name, values in (fixed_schedules or {}).items():
            sig = torch.tensor([float(v) for v in values], dtype=torch.float64)
            if sig.numel() != steps + 1:
                raise ValueError(f"The schedule {name!r} has {sig.numel()} sigmas; a {steps}-step "
                                 f"policy needs {steps + 1}.")
            if bool((sig[1:] > sig[:-1]).any()) or float(sig[-1]) != 0.0:
                raise ValueError(f"The schedule {name!r} must not increase and must end at 0.")
            out[name] = model_to_flow(sampling_of(model), sig).float()
        return out

    def ceiling_schedule(self, steps: int, *, schedulers: Sequence[str] | None = None
                         ) -> tuple[str, torch.Tensor]:
        """The first comparator scheduler (the model's default, ``simple``) at ``steps``."""
        name = (tuple(schedulers) if schedulers else self.comparator_schedulers)[0]
        check_scheduler_names((name,))
        return name, default_flow(self.backend.model, steps, name).float()

    @torch.inference_mode()
    def images(self, contexts: PromptContexts, flow: torch.Tensor) -> torch.Tensor:
        """Images of contexts under flow schedules ``[N, L+1]`` (the rollout path of
        ``rewards``), remembered per (prompt, seed, schedule)."""
        flow = flow.float().cpu()
        keys = [(int(p), int(s), row.numpy().tobytes())
                for p, s, row in zip(contexts.prompt_ids, contexts.seeds, flow, strict=True)]
        b = self.backend
        return self._images.get(keys, lambda rows: b.decode(b.rollouts.sample_flow(
            contexts.select(torch.tensor(rows)), flow[torch.tensor(rows)])), once_per_key=False)

    def set_metrics(self, contexts: PromptContexts, schedules: dict[str, torch.Tensor]
                    ) -> dict[str, dict[str, SetMetric]]:
        """The set measures of each schedule's images; empty without set measures."""
        if self.set_measures is None:
            return {}
        n = len(contexts)
        images = {name: self.images(contexts, s if s.ndim == 2 else s.expand(n, -1))
                  for name, s in schedules.items()}
        found = self.set_measures(images, self.backend.prompt_texts(contexts))
        return {name: {m: SetMetric(value, reps) for m, (value, reps) in ms.items()}
                for name, ms in found.items()}

    def write_eval_artifacts(self, out_dir: Path, contexts: PromptContexts,
                             schedules: dict[str, torch.Tensor], *, grid_columns: int = 6
                             ) -> list[Path]:
        """``grid.png``: the first ``grid_columns`` contexts, one row per schedule (each image
        with its schedule drawn in the corner, as in the paper's Figure 1)."""
        b = self.backend
        show = max(1, min(grid_columns, len(contexts)))
        ctx = contexts.select(torch.arange(show))
        rows = []
        for name, flow in schedules.items():
            sigmas = b.model_sigmas(flow[:show])
            rows.append((name, b.images(ctx, sigmas), sigmas))
        path = out_dir / "grid.png"
        image_grid(rows).save(path)
        return [path]

    def policy_sigmas(self, policy: nn.Module, contexts: PromptContexts) -> torch.Tensor:
        """The policy's mean schedules for contexts, in the model's sigma space ``[N, L+1]``
        (the bridge's service, as in the node). A step-wise policy (AdaGen): the sigmas its
        rollout of the contexts used (the same images as with these sigmas)."""
        b = self.backend
        if is_stepwise(policy):
            flow = policy_rollout(policy, b, contexts).sigmas
            return flow_to_model(sampling_of(b.model), flow.double()).float()
        return service.policy_sigmas(b.model, policy, b.features(contexts), mode="mean")

    def write_samples(self, policy: nn.Module, path: Path, n: int = 4, seed: int = 10_000
                      ) -> Path:
        """Sample images of ``n`` held-out contexts (default schedule above, learned below,
        each with its schedule in the corner) -> PNG."""
        b = self.backend
        was_training = policy.training
        policy.eval()
        try:
            ctx = b.held_out_contexts(n, seed)
            learned = self.policy_sigmas(policy, ctx)
            default = b.default_sigmas(learned.shape[1] - 1)
            grid = image_grid([("default", b.images(ctx, default), default),
                               ("learned", b.images(ctx, learned), learned)])
        finally:
            policy.train(was_training)
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
        return path


__all__ = ["SetMeasures", "Evaluation", "check_scheduler_names",
           "set_metrics_option", "set_measures_for"]
