"""The ``calibrate`` command's flags (tyro over :class:`CalibrateArgs`, the ComfyUI section's
flags flat as in ``train``) and their checks (a user mistake is one ``ValueError`` line)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from ...calibration.run import SEARCHES
from ..comfy.config import ComfyConfig

METHODS = ("teacher", "art")
"""``teacher``: match the model's own many-step result (default, measured better:
docs/calibrate.md); ``art``: ART's direct solver through the trainer (``--algo art
--art.solver direct``)."""
BUNDLED_PROMPTS = Path(__file__).resolve().parents[1] / "prompts" / "calibration.txt"


@dataclass
class CalibrateArgs:
    """Calibrate a sampling schedule for your model from the model alone: the few-step Euler
    result is matched to the model's own many-step result (same noise, same prompt) by a
    grid search over the many-step run's sigmas and a gradient refinement; writes a policy
    file (stored schedules, node-loadable, `learned:<name>`) and an evaluation table against
    every ComfyUI scheduler that applies to the model."""

    backend: str = "comfy"
    """``comfy`` (a ComfyUI model: the model options below) or ``testbed`` (the analytic
    testbed: no weights)."""
    steps: tuple[int, ...] = (8,)
    """Sampler steps L to calibrate for (one or several: --steps 4 6 8)."""
    method: str = "teacher"
    """``teacher`` (match the many-step result; the default, better by the benchmark) or
    ``art`` (ART's direct solver through the trainer)."""
    per_image: bool = False
    """Also train a per-image policy (a small network from noise and prompt to the schedule,
    by gradients through the sampler), one file per step count."""
    search: str = "dp+gradient"
    """Global search: ``dp+gradient`` (grid search then gradient refinement), ``dp`` or
    ``gradient`` (from the model's default schedule)."""
    budget: float = 600.0
    """Model calls per calibration context for the global schedules, teacher included (a
    batched forward is one call, a backward two)."""
    minutes: float = 0.0
    """Wall-clock limit of the global calibration in minutes (0: none)."""
    contexts: int = 32
    """Calibration contexts (prompt x seed pairs of the training prompts)."""
    teacher_steps: int = 30
    """Steps of the many-step teacher run (the model's default scheduler)."""
    iterations: int = 150
    """At most this many gradient iterations per step count (global refinement)."""
    lr: float = 0.05
    """Adam learning rate of the global refinement (on segment logits)."""
    per_image_iterations: int = 100
    """Gradient iterations of the per-image policy per step count."""
    per_image_lr: float = 1e-2
    """AdamW learning rate of the per-image policy."""
    eval_contexts: int = 40
    """Held-out contexts of the evaluation table (0: no table)."""
    eval_seed: int = 10_000
    """First seed of the held-out contexts."""
    name: str | None = None
    """Policy name (file stem; default calibrated_<family>)."""
    out: str = "runs/calibrate"
    """Output folder: the policy file(s), calibration.md and calibration.json."""
    teacher_cache: str | None = None
    """Folder of the cached many-step runs (default ~/.cache/learned_schedules/teacher)."""
    seed: int = 0
    """Seed of the calibration contexts and the per-image fit."""
    threads: int = 0
    """CPU threads for torch (0: torch's default)."""
    testbed_config: str | None = None
    """Testbed JSON (``--backend testbed``; default: the bundled one)."""
    config: str | None = None
    """JSON file with the ComfyUI options (a train config such as
    training/configs/digits_reference.json; only its ComfyUI entries are read; flags
    override)."""
    comfy: Annotated[ComfyConfig, tyro.conf.OmitArgPrefixes] = field(
        default_factory=ComfyConfig)
    """The model options, as ``train``'s."""

    def check(self) -> None:
        """``ValueError`` with a plain sentence for any value that cannot run."""
        if self.backend not in ("comfy", "testbed"):
            raise ValueError(f"Unknown backend {self.backend!r}; expected comfy or testbed.")
        if not self.steps or any(s < 1 or s > 200 for s in self.steps) or \
                len(set(self.steps)) != len(self.steps):
            raise ValueError(f"--steps takes distinct step counts from 1 to 200, got "
                             f"{list(self.steps)}.")
        if self.method not in METHODS:
            raise ValueError(f"Unknown method {self.method!r}; expected one of "
                             f"{', '.join(METHODS)}.")
        if self.search not in SEARCHES:
            raise ValueError(f"Unknown search {self.search!r}; expected one of "
                             f"{', '.join(SEARCHES)}.")
        if self.method == "art" and self.per_image:
            raise ValueError("--per-image is a teacher-matching fit; use --method teacher.")
        for flag, value, low in (("--budget", self.budget, 1e-9), ("--contexts", self.contexts, 4),
                                 ("--eval-contexts", self.eval_contexts, 0),
                                 ("--minutes", self.minutes, 0), ("--threads", self.threads, 0),
                                 ("--iterations", self.iterations, 0),
                                 ("--per-image-iterations", self.per_image_iterations, 0)):
            if value < low:
                raise ValueError(f"{flag} must be >= {low:g}, got {value}.")
        if self.teacher_steps <= max(self.steps):
            raise ValueError(f"--teacher-steps ({self.teacher_steps}) must exceed the largest "
                             f"--steps ({max(self.steps)}).")
        if self.backend == "comfy" and self.comfy.sampler != "euler":
            raise ValueError(f"calibrate targets the euler sampler, got --sampler "
                             f"{self.comfy.sampler}.")
        if self.name is not None and (not self.name or "/" in self.name or "\\" in self.name):
            raise ValueError(f"--name must be a plain file stem, got {self.name!r}.")
        for flag, path in (("--testbed-config", self.testbed_config),
                           ("--prompts", self.comfy.prompts)):
            if path is not None and not _exists(path):
                raise ValueError(f"{flag}: file not found: {path}.")
        self.comfy.validate()


def _exists(path: str) -> bool:
    from ..comfy.prompts import PACKAGE

    return Path(path).is_file() or (PACKAGE / path).is_file()


def finish(args: CalibrateArgs) -> CalibrateArgs:
    """The bundled prompts when a ComfyUI run names none, then :meth:`CalibrateArgs.check`."""
    if args.backend == "comfy" and args.comfy.prompts is None:
        args.comfy.prompts = str(BUNDLED_PROMPTS)
    args.check()
    return args


__all__ = ["METHODS", "BUNDLED_PROMPTS", "CalibrateArgs", "finish"]
