"""The schedule-policy contract and the registry of policy kinds.

Every schedule policy (Dirichlet today; ART, AdaGen... later) is a ``torch.nn.Module`` that
follows :class:`SchedulePolicy`, so the trainer's algorithms, the policy file format, the nodes
and eval never name a concrete policy. The policy file format rebuilds a policy from its
``config()`` through :data:`POLICY_KINDS` (as ComfyUI's ``SCHEDULER_HANDLERS`` is a dict of
schedulers): a policy module registers its class with :func:`register_policy`, and
:mod:`policies.kinds` imports every module that does.

Conventions:

* ``features`` is a dict of named tensors with a leading batch dimension ``B`` (what a back-end's
  ``features(contexts)`` or the node's CONDITIONING -> features step gives).
* ``actions`` are whatever the policy samples (Dirichlet: simplex segments ``[B, K, L+1]``);
  only the policy interprets them. ``K`` samples are drawn per context.
* schedules are **flow time** ``[..., L+1]`` from 1 down to 0 (see :mod:`policies.schedule`).

Step-wise policies (AdaGen, :mod:`policies.stepwise`) decide each step while sampling, so they
have no schedule before sampling. They say so with a class attribute ``stepwise = True`` and
follow :class:`StepwisePolicy` instead of ``sample`` / ``schedule``: ``actor(features, ...)``
binds them to a batch and returns an :class:`policies.actors.Actor` that a step loop
(``Backend.rollout``, the nodes' ``SAMPLER``) drives; callers test :func:`is_stepwise`.

Pure torch; no ComfyUI and no trainer import.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from torch import Tensor

Features = dict[str, Tensor]
"""Named policy inputs, each ``[B, ...]``."""


@runtime_checkable
class SchedulePolicy(Protocol):
    """What every schedule policy provides (implementations are ``nn.Module`` s)."""

    kind: ClassVar[str]
    """Registry name, written into ``config()["policy"]``."""
    steps: int
    """The sampler budget ``L`` the policy was built for."""

    def config(self) -> dict[str, Any]:
        """Enough to rebuild the policy with ``from_config`` (JSON-serialisable)."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SchedulePolicy:
        """Rebuild from ``config()`` (weights not included)."""

    @classmethod
    def for_training(cls, encoder: Any, steps: int, *, hidden: int,
                     init_segments: Tensor | None = None, **options: Any) -> SchedulePolicy:
        """A fresh policy for the trainer around ``encoder`` (a :mod:`policies.encoders`
        module); its mean schedule starts at ``init_segments [L+1]`` when given."""

    def feature_dims(self) -> dict[str, list[int]]:
        """Trailing shape of every input feature (-1 for free sizes), for policy files."""

    def sample(self, features: Features, k: int) -> tuple[Tensor, Tensor]:
        """``k`` actions per context: ``(actions [B, K, ...], log_prob [B, K])``."""

    def log_prob(self, features: Features, actions: Tensor) -> Tensor:
        """Log-probability ``[B, K]`` of ``actions [B, K, ...]`` (differentiable)."""

    def entropy(self, features: Features) -> Tensor:
        """Entropy of the action distribution of each context ``[B]``."""

    def evaluate_actions(self, features: Features, actions: Tensor) -> tuple[Tensor, Tensor]:
        """``(log_prob [B, K], entropy [B])`` from one forward pass (what a loss needs)."""

    def diagnostics(self, features: Features) -> dict[str, float]:
        """Scalars worth logging about the policy's distribution on ``features`` (may be
        empty)."""

    def actions_to_schedules(self, actions: Tensor) -> Tensor:
        """Flow-time schedules ``[B, K, L+1]`` of ``actions [B, K, ...]``."""

    def schedule(self, features: Features, steps: int | None = None,
                 mode: str = "mean") -> Tensor:
        """One schedule per context ``[B, steps+1]`` (``steps`` defaults to ``L``; another
        count is resampled from the ``L``-step schedule, by
        :func:`policies.schedule.resample_schedule` unless the kind defines its own
        ``resample(schedule, steps)``, e.g. ART's log-linear rule). ``mode``: ``mean``
        (deterministic) or ``sample``."""


@runtime_checkable
class StepwisePolicy(Protocol):
    """What a step-wise policy provides (besides ``kind``, ``steps``, ``config``,
    ``from_config``, ``for_training``, ``feature_dims`` and ``diagnostics`` as above)."""

    kind: ClassVar[str]
    stepwise: ClassVar[bool]
    """True: the policy chooses each next sigma while sampling."""
    steps: int

    def actor(self, features: Features, mode: str = "mean", base: Tensor | None = None,
              scale: float = 1.0) -> Any:
        """An :class:`policies.actors.Actor` for the contexts of ``features`` (``mode``:
        ``mean`` or ``sample``; ``base``: flow-time base schedules the steps are decided around,
        default the policy's own; ``scale``: strength of the learned residual)."""

    def evaluate_steps(self, features: Features, info: dict[str, Tensor]
                       ) -> tuple[Tensor, Tensor, Tensor]:
        """``(log_prob, entropy, value)`` ``[N, L]`` of a trajectory's recorded steps."""


def is_stepwise(policy: Any) -> bool:
    """Whether ``policy`` decides its steps while sampling (a :class:`StepwisePolicy`)."""
    return bool(getattr(policy, "stepwise", False))


POLICY_KINDS: dict[str, type] = {}
"""Registered policy classes by ``kind`` (filled by :func:`register_policy`)."""

P = TypeVar("P", bound=type)


def register_policy(cls: P) -> P:
    """Class decorator: make ``cls`` buildable from its config by :func:`build_policy`."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"{cls.__name__} needs a non-empty string 'kind' to be registered.")
    if POLICY_KINDS.get(kind, cls) is not cls:
        raise ValueError(f"Policy kind {kind!r} is already registered by "
                         f"{POLICY_KINDS[kind].__name__}.")
    POLICY_KINDS[kind] = cls
    return cls


def build_policy(config: dict[str, Any]) -> Any:
    """Rebuild any registered policy from its ``config()``; ``ValueError`` for an unknown kind.

    Import :mod:`policies.kinds` (as the policy file format does) to have every kind
    registered.
    """
    kind = config.get("policy")
    if kind not in POLICY_KINDS:
        raise ValueError(f"Unknown policy kind {kind!r}; known kinds: "
                         f"{', '.join(sorted(POLICY_KINDS)) or 'none'}.")
    return POLICY_KINDS[kind].from_config(config)


def kind_options(cls: type, config: Any) -> dict[str, Any]:
    """A policy config's options without its ``policy`` key (what a kind's ``from_config``
    passes on), after checking it is an object written for ``cls.kind``; ``ValueError``
    otherwise."""
    if not isinstance(config, dict):
        raise ValueError(f"A {cls.kind} policy config must be an object.")
    options = dict(config)
    if options.pop("policy", cls.kind) != cls.kind:
        raise ValueError(f"Not a {cls.kind} policy config.")
    return options


def features_argument(features: Features | str | None, mode: str,
                      legacy: dict[str, Tensor]) -> tuple[Features, str]:
    """Normalise ``schedule``'s arguments, keeping the old keyword style working.

    New style: ``schedule(features, steps=None, mode=...)``. Old style (before the contract):
    ``schedule(mode=..., **features)`` or ``schedule("sample", **features)``.
    """
    if isinstance(features, str):  # old positional mode
        features, mode = None, features
    if features is None:
        return dict(legacy), mode
    if legacy:
        raise TypeError("Pass the features as one dict, not also as keyword arguments "
                        f"({', '.join(legacy)}).")
    return features, mode


__all__ = ["SchedulePolicy", "Features", "POLICY_KINDS", "register_policy", "build_policy",
           "features_argument", "StepwisePolicy", "is_stepwise", "kind_options"]
