"""The trainer's configuration: run settings here, every other section beside its code.

:class:`TrainConfig` holds the run settings (CleanRL style: every field documented) and nests
the sections owned elsewhere: ``comfy`` (:class:`training.comfy.config.ComfyConfig`),
``policy`` (:class:`policies.config.PolicyConfig`) and one options section per registered
algorithm (:mod:`training.rl.algorithms.registry`; ``config.ppo``, ``config.section`` for the
active one). Types, ranges and choices are declared on the fields
(:func:`policies.fields.option`) and checked in one loop; cross-field rules are small
``validate`` methods on the section that owns them. ``config.json`` nests the sections and
carries a ``config_version``; older flat files are migrated by
:func:`training.rl.config_migration.migrate`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...policies.config import PolicyConfig
from ...policies.fields import check_types, check_values, json_type, option
from ...policies.json_io import read_json  # also imported from here (its old home)
from ..comfy.config import ComfyConfig
from .config_migration import CONFIG_VERSION, migrate

DEFAULT_SEEDS_PER_PROMPT = 4
"""Seeds per prompt in a batch when a grouped baseline is chosen and ``seeds_per_prompt=0``."""

RESUME_FIXED = ("backend", "algo", "steps", "policy.hidden", "policy.depth",
                "policy.encoder_preset", "policy.init_schedule", "policy.init_concentration",
                "seed", "pool_size", "policy.concentration", "seeds_per_prompt")
"""Fields a ``--resume`` may not change: they fix the policy's architecture, its algorithm or
the training stream (every other field, e.g. iterations, lr, eval cadence, may change)."""


def check_device(device: str, available: bool = True) -> None:
    """``ValueError`` for a device name torch does not know, or (``available``) one this
    machine lacks (the trainer checks that before it starts; a config file naming ``cuda``
    is still valid on a machine without one)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got "
                         f"{device!r}.") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'mps', got {device!r}.")
    if dev.type == "cpu" and dev.index is not None:
        raise ValueError(f"device {device!r}: the CPU has no index (use --device cpu).")
    if dev.type == "cpu" or not available:
        return
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} is not available: this machine has no CUDA "
                             "GPU (use --device cpu).")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} is not available: this machine has "
                             f"{torch.cuda.device_count()} CUDA GPU(s).")
        return
    if not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} is not available on this machine.")


def _algorithms() -> dict[str, Any]:
    """The registry (imported when first needed: importing the package registers the built-in
    algorithms, whose modules read this one)."""
    from .algorithms.registry import ALGORITHMS

    return ALGORITHMS


def default_sections() -> dict[str, Any]:
    """Default options of every registered algorithm, by name."""
    return {name: cls.options_class() for name, cls in _algorithms().items()}


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``config.json`` in the run folder."""

    backend: str = option("testbed", choices=("testbed", "comfy"))
    """Where rollouts come from: ``testbed`` (the exact analytic testbed, no weights) or
    ``comfy`` (a model of any supported family, loaded with ComfyUI's loaders)."""
    testbed_config: str | None = None
    """Path to a testbed JSON config; ``None`` uses the embedded default."""
    pool_size: int = option(16384, ge=1, le=100_000_000)
    """Training contexts in the pool: testbed (noise, class) pairs whose reference solutions
    are solved once; comfy (prompt, seed) pairs drawn from the training prompts."""
    reward: str | None = None
    """Reward. Testbed: ``fidelity`` or ``likelihood`` (``None``: the testbed config's).
    Comfy: ``pickscore``, ``clip``, ``aesthetic``, ``hpsv2``, ``imagereward``, ``ocr``,
    ``reference`` (PSNR to the reference_steps-step sample of the same prompt and seed), or a
    weighted sum such as ``0.7*pickscore+0.3*aesthetic``."""
    steps: int = option(5, ge=1, le=1000)
    """Sampler budget L (number of sampler steps; the policy outputs L + 1 segments)."""
    algo: str = "reinforce"
    """Training algorithm: ``reinforce`` (the paper), ``ppo`` (TPDM-style clipped), ``art``
    (continuous-time actor-critic on the clock) or ``adagen`` (step-wise PPO, adversarial
    reward), or any registered one; its options are the config section of the same name
    (``--reinforce.*``, ``--ppo.*``, ``--art.*``, ``--adagen.*``)."""
    rollouts: int = option(2, ge=1, le=100_000)
    """K: sampled schedules per context (the paper uses 2)."""
    batch: int = option(16, ge=1, le=1_000_000)
    """B: contexts (prompt, initial noise) per iteration."""
    iterations: int = option(2000, ge=0)
    """Number of policy updates."""
    lr: float = option(3e-3, gt=0, le=10)
    """AdamW learning rate."""
    lr_schedule: str = option("cosine", choices=("constant", "cosine"))
    """Learning-rate schedule over the run: ``constant`` or ``cosine`` (decays to lr_min_frac)."""
    lr_min_frac: float = option(0.1, ge=0, le=1)
    """Final learning rate as a fraction of lr for the cosine schedule."""
    weight_decay: float = option(1e-4, ge=0)
    """AdamW weight decay."""
    grad_clip: float = option(1.0, gt=0)
    """Global gradient-norm clip."""
    seeds_per_prompt: int = option(0, ge=0)
    """Draw each batch as ``batch / seeds_per_prompt`` distinct prompts (testbed: classes) x
    ``seeds_per_prompt`` noises each; 0: independent contexts, or 4 seeds per prompt when the
    baseline is grouped (``js_group``, ``js_group_pooled``)."""
    seed: int = option(0, ge=0, le=2**63 - 1)
    """Seed for torch, numpy and python's random; also the training-context stream."""
    eval_every: int = option(50, ge=0)
    """Evaluate the mean schedule on held-out contexts every N iterations (0: only at the end)."""
    eval_contexts: int = option(256, ge=1, le=10_000_000)
    """Number of held-out contexts used by periodic evaluation."""
    eval_seed: int = option(10_000, ge=0, le=2**63 - 1)
    """Seed of the held-out contexts (disjoint stream from training)."""
    checkpoint_every: int = option(100, ge=0)
    """Save a resumable checkpoint every N iterations (and on Ctrl-C and at the end)."""
    keep_checkpoints: int = option(3, ge=1)
    """How many periodic checkpoints to keep (the final policy is always kept)."""
    out: str = "runs"
    """Parent folder of run folders."""
    run_name: str | None = None
    """Run folder name; default ``{backend}-{algo}-{baseline}-L{steps}__{seed}__{time}``."""
    device: str = "cpu"
    """Torch device for the policy and the testbed."""
    threads: int = option(0, ge=0, le=4096)
    """torch CPU threads while training (0: 1 on the testbed, whose small tensors only contend
    for cores with more threads — 10-15x slower on a busy 2-core machine,
    bench/thread_contention.py; torch's default on other back-ends)."""
    progress: bool = True
    """Show a progress bar."""
    comfy: ComfyConfig = field(default_factory=ComfyConfig)
    """ComfyUI back-end options (``--backend comfy``): model files, sampler, guidance, prompts,
    caches (:mod:`training.comfy.config`)."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Policy options: network size and the Dirichlet policy's concentration
    (:mod:`policies.config`)."""
    sections: dict[str, Any] = field(default_factory=default_sections)
    """Every registered algorithm's options, by algorithm name (``config.ppo`` reads
    ``sections["ppo"]``; ``config.json`` writes each as a top-level section)."""

    def __getattr__(self, name: str) -> Any:
        """``config.<algorithm>``: that algorithm's options section."""
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def options(self, name: str) -> Any:
        """The options section of the algorithm ``name``."""
        if name not in self.sections:
            raise ValueError(f"algo must be one of {tuple(self.sections)}, got {name!r}.")
        return self.sections[name]

    @property
    def section(self) -> Any:
        """The active algorithm's options section."""
        return self.options(self.algo)

    def validate(self) -> None:
        """Raise ``ValueError`` with a plain sentence naming the field, for a configuration of
        the wrong types, out-of-range or non-finite numbers, or impossible settings."""
        self.check_types()
        check_values(self)
        self.comfy.validate()
        self.policy.validate(self.steps)
        for name, section in self.sections.items():
            if hasattr(section, "check"):
                section.check(f"{name}.")
            else:
                check_values(section, f"{name}.")
        if self.algo not in _algorithms():
            raise ValueError(f"algo must be one of {tuple(_algorithms())}, got {self.algo!r}.")
        if self.seeds_per_prompt > self.batch:
            raise ValueError(f"seeds_per_prompt must be between 0 and batch ({self.batch}), "
                             f"got {self.seeds_per_prompt}.")
        if hasattr(self.section, "validate"):
            self.section.validate(self)
        shape = self.grouped_draw()
        if shape is not None and (shape[1] < 1 or self.batch % shape[1]):
            raise ValueError(f"batch ({self.batch}) must be a multiple of seeds_per_prompt "
                             f"({shape[1]}) to draw prompts x seeds.")
        self._check_paths()
        check_device(self.device, available=False)

    def check_types(self) -> None:
        """Every field (and every section's field) of its declared JSON type."""
        check_types(self)
        check_types(self.comfy)  # flat names, as their flags are
        check_types(self.policy)
        for name, section in self.sections.items():
            check_types(section, f"{name}.")

    def _check_paths(self) -> None:
        """The run folder's parent and name can hold a run folder."""
        out = Path(self.out)
        for parent in (out, *out.parents):
            if parent.exists():
                if not parent.is_dir():
                    raise ValueError(f"out must be a folder, but {parent} is a file.")
                break
        if self.run_name is not None and (
                not self.run_name.strip() or self.run_name in (".", "..")
                or any(sep in self.run_name for sep in ("/", "\\"))):
            raise ValueError(f"run_name must be a plain folder name, got {self.run_name!r}.")

    def grouped_draw(self) -> tuple[int, int] | None:
        """``(prompts, seeds_per_prompt)`` of a batch drawn grouped by prompt, or None for
        independent contexts (see ``seeds_per_prompt``)."""
        seeds = self.seeds_per_prompt
        if not seeds and getattr(self.sections.get(self.algo), "grouped", False):
            seeds = min(DEFAULT_SEEDS_PER_PROMPT, self.batch)
        if not seeds:
            return None
        return max(1, self.batch // seeds), seeds

    @classmethod
    def run_fields(cls) -> tuple[str, ...]:
        """Names of the run settings (the fields that are not sections)."""
        return tuple(f.name for f in dataclasses.fields(cls)
                     if f.name not in ("comfy", "policy", "sections"))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict: run settings, then the nested sections, then the layout's
        ``config_version``."""
        data: dict[str, Any] = {name: getattr(self, name) for name in self.run_fields()}
        data["comfy"] = dataclasses.asdict(self.comfy)
        data["policy"] = dataclasses.asdict(self.policy)
        data.update({name: dataclasses.asdict(s) for name, s in self.sections.items()})
        data["config_version"] = CONFIG_VERSION
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], strict: bool = True) -> TrainConfig:
        """Build from a dict of any layout (:func:`~.config_migration.migrate`: old flat keys
        go into their sections), so old ``config.json`` files and configs keep working.
        ``strict``: unknown keys are an error (else ignored: a policy file's training config
        from another version)."""
        if not isinstance(data, dict):
            raise ValueError(f"A training config must be a JSON object, got "
                             f"{json_type(data)}.")
        data = migrate(data)
        data.pop("config_version")
        unknown: list[str] = []
        classes = {"comfy": ComfyConfig, "policy": PolicyConfig,
                   **{name: a.options_class for name, a in _algorithms().items()}}
        built = {name: _section(name, section_cls, data.pop(name, None), unknown)
                 for name, section_cls in classes.items()}
        unknown[:0] = sorted(set(data) - set(cls.run_fields()))
        if unknown and strict:
            raise ValueError(f"Unknown config fields: {', '.join(unknown)}.")
        data = {k: v for k, v in data.items() if k in cls.run_fields()}
        comfy, policy = built.pop("comfy"), built.pop("policy")
        return cls(**data, comfy=comfy, policy=policy, sections=built)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a config JSON file; every problem is a ``ValueError`` naming the file."""
        path = Path(path)
        data = read_json(path, "Config file")
        try:
            config = cls.from_dict(data)
            config.check_types()  # a wrong type is the file's mistake (ranges: validate)
            return config
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Config file {path}: {exc}") from None

    def changes_refused_on_resume(self, saved: TrainConfig) -> list[str]:
        """``field (old -> new)`` for every :data:`RESUME_FIXED` field that differs (named as
        its flag is: ``hidden``, not ``policy.hidden``)."""
        changed = []
        for path in RESUME_FIXED:
            old, new = _lookup(saved, path), _lookup(self, path)
            if old != new:
                changed.append(f"{path.rsplit('.', 1)[-1]} ({old!r} -> {new!r})")
        return changed


def _lookup(config: TrainConfig, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _section(name: str, section_cls: type, value: Any, unknown: list[str]) -> Any:
    """A section from its dict (unknown keys added to ``unknown`` as ``name.key``)."""
    if value is None:
        return section_cls()
    if isinstance(value, section_cls):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object of {name} options, got {value!r} "
                         f"({json_type(value)}).")
    fields = {f.name for f in dataclasses.fields(section_cls)}
    unknown += [f"{name}.{k}" for k in sorted(set(value) - fields)]
    return section_cls(**{k: v for k, v in value.items() if k in fields})


__all__ = ["DEFAULT_SEEDS_PER_PROMPT", "RESUME_FIXED", "TrainConfig", "check_device",
           "default_sections", "read_json"]
