"""The trainer's configuration: one dataclass, every field documented (CleanRL style)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASELINES = ("none", "rloo", "xctx", "js")
ALGOS = ("reinforce", "ppo")


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``config.json`` in the run folder."""

    backend: str = "testbed"
    """Where rollouts come from: ``testbed`` (the exact analytic testbed, no weights)."""
    testbed_config: str | None = None
    """Path to a testbed JSON config; ``None`` uses the embedded default."""
    pool_size: int = 16384
    """Testbed: training contexts in the pool (their reference solutions are solved once)."""
    reward: str | None = None
    """Reward name (testbed: ``fidelity`` or ``likelihood``); ``None`` uses the config's."""
    steps: int = 5
    """Sampler budget L (number of sampler steps; the policy outputs L + 1 segments)."""
    algo: str = "reinforce"
    """Policy-gradient algorithm: ``reinforce`` (the paper) or ``ppo`` (TPDM-style clipped)."""
    baseline: str = "js"
    """Reward baseline: ``none``, ``rloo``, ``xctx`` (cross-context) or ``js`` (James-Stein)."""
    rollouts: int = 2
    """K: sampled schedules per context (the paper uses 2)."""
    batch: int = 16
    """B: contexts (prompt, initial noise) per iteration."""
    iterations: int = 2000
    """Number of policy updates."""
    lr: float = 3e-3
    """AdamW learning rate."""
    lr_schedule: str = "cosine"
    """Learning-rate schedule over the run: ``constant`` or ``cosine`` (decays to lr_min_frac)."""
    lr_min_frac: float = 0.1
    """Final learning rate as a fraction of lr for the cosine schedule."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Global gradient-norm clip."""
    normalize_advantages: bool = False
    """Divide advantages by the batch's reward std (off in the paper)."""
    entropy_coef: float = 0.0
    """Weight of a Dirichlet-entropy bonus (0: none, as in the paper)."""
    ppo_epochs: int = 4
    """PPO only: optimisation epochs over each batch of rollouts."""
    ppo_clip: float = 0.2
    """PPO only: ratio clip range."""
    hidden: int = 128
    """Width of the policy's encoder and head."""
    depth: int = 2
    """Number of FiLM blocks in the vector encoder."""
    init_concentration: float | None = None
    """Total Dirichlet concentration at initialisation (None: 8 * (L + 1))."""
    seed: int = 0
    """Seed for torch, numpy and python's random; also the training-context stream."""
    eval_every: int = 50
    """Evaluate the mean schedule on held-out contexts every N iterations (0: only at the end)."""
    eval_contexts: int = 256
    """Number of held-out contexts used by periodic evaluation."""
    eval_seed: int = 10_000
    """Seed of the held-out contexts (disjoint stream from training)."""
    checkpoint_every: int = 100
    """Save a resumable checkpoint every N iterations (and on Ctrl-C and at the end)."""
    keep_checkpoints: int = 3
    """How many periodic checkpoints to keep (the final policy is always kept)."""
    out: str = "runs"
    """Parent folder of run folders."""
    run_name: str | None = None
    """Run folder name; default ``{backend}-{algo}-{baseline}-L{steps}__{seed}__{time}``."""
    device: str = "cpu"
    """Torch device for the policy and the testbed."""
    progress: bool = True
    """Show a progress bar."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Back-end specific options (kept verbatim in the run's config)."""

    def validate(self) -> None:
        """Raise ``ValueError`` with a plain sentence for an impossible configuration."""
        if self.steps < 1 or self.steps > 1000:
            raise ValueError(f"steps must be between 1 and 1000, got {self.steps}.")
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}.")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}.")
        if self.rollouts < 1 or self.batch < 1 or self.iterations < 0:
            raise ValueError("rollouts and batch must be >= 1 and iterations >= 0.")
        if self.baseline in ("rloo", "js") and self.rollouts < 2:
            raise ValueError(f"The {self.baseline} baseline needs at least 2 rollouts per context.")
        if self.baseline in ("xctx", "js") and self.batch * self.rollouts < 2:
            raise ValueError(f"The {self.baseline} baseline needs at least 2 rollouts in a batch.")
        if self.lr <= 0:
            raise ValueError("lr must be positive.")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got "
                             f"{self.lr_schedule!r}.")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"Unknown config fields: {', '.join(unknown)}.")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
