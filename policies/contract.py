"""The policy roles and the registry of policy kinds.

A policy kind is a ``torch.nn.Module`` class that plays some of these roles, each a small
:class:`~typing.Protocol`, so that every caller asks for the role it needs and never names a
concrete policy:

* :class:`DeployablePolicy`, every kind: its identity (``kind``, ``steps``, ``config`` /
  ``from_config`` / ``for_training``, ``feature_dims``), what the policy file stores;
* what the node, the Learned Sampler, ``eval`` and the trainer's evaluation run, one of
  :class:`OneShotPolicy` (``schedule(features, steps, mode)``: the whole schedule before
  sampling; :func:`has_schedule`) or :class:`StepwisePolicy` (``actor(features, ...)``: an
  :class:`policies.actors.Actor` that a step loop asks for every next sigma;
  :func:`is_stepwise`);
* what a generic training method needs, when the kind is trained that way:
  :class:`TrainableDistribution` (the one-shot methods: ``sample``, ``log_prob``, ``entropy``,
  ``evaluate_actions``, ``actions_to_schedules``, ``diagnostics``; :func:`is_trainable`) or
  :class:`TrainableSteps` (PPO over trajectories: ``evaluate_steps``, ``diagnostics``;
  :func:`trains_by_steps`).

A kind implements only the roles it has: ART's clocks are deployed (one-shot) but trained by
ART's own actor-critic, so they have no distribution; AdaGen's step policy has no schedule
before sampling. :func:`policy_roles` names the roles of a kind or an instance.

The policy file format rebuilds a policy from its ``config()`` through :data:`POLICY_KINDS`
(:func:`policy_from_config`; as ComfyUI's ``SCHEDULER_HANDLERS`` is a dict of schedulers): a
policy module registers its class with :func:`register_policy`, and :mod:`policies.kinds`
imports every module that does.

Conventions:

* ``features`` is a dict of named tensors with a leading batch dimension ``B`` (what a back-end's
  ``features(contexts)`` or the node's CONDITIONING -> features step gives).
* ``actions`` are whatever the policy samples (Dirichlet: simplex segments ``[B, K, L+1]``);
  only the policy interprets them. ``K`` samples are drawn per context.
* schedules are **flow time** ``[..., L+1]`` from 1 down to 0 (see :mod:`policies.schedule`).

Pure torch; no ComfyUI and no trainer import.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from torch import Tensor

Features = dict[str, Tensor]
"""Named policy inputs, each ``[B, ...]``."""


@runtime_checkable
class DeployablePolicy(Protocol):
    """The identity every policy kind has (implementations are ``nn.Module`` s)."""

    kind: ClassVar[str]
    """Registry name, written into ``config()["policy"]``."""
    steps: int
    """The sampler budget ``L`` the policy was built for."""

    def config(self) -> dict[str, Any]:
        """Enough to rebuild the policy with ``from_config`` (JSON-serialisable)."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DeployablePolicy:
        """Rebuild from ``config()`` (weights not included)."""

    @classmethod
    def for_training(cls, encoder: Any, steps: int, *, hidden: int,
                     init_segments: Tensor | None = None, **options: Any) -> DeployablePolicy:
        """A fresh policy around ``encoder`` (a :mod:`policies.encoders` module); its mean
        schedule starts at ``init_segments [L+1]`` when given and the kind can."""

    def feature_dims(self) -> dict[str, list[int]]:
        """Trailing shape of every input feature (-1 for free sizes), for policy files."""


@runtime_checkable
class OneShotPolicy(DeployablePolicy, Protocol):
    """A deployable policy that decides the whole schedule before sampling."""

    def schedule(self, features: Features, steps: int | None = None,
                 mode: str = "mean") -> Tensor:
        """One schedule per context ``[B, steps+1]`` (``steps`` defaults to ``L``; another
        count is resampled from the ``L``-step schedule, by
        :func:`policies.schedule.resample_schedule` unless the kind defines its own
        ``resample(schedule, steps)``, e.g. ART's log-linear rule). ``mode``: ``mean``
        (deterministic) or ``sample``."""


@runtime_checkable
class StepwisePolicy(DeployablePolicy, Protocol):
    """A deployable policy that chooses each next sigma while sampling."""

    stepwise: ClassVar[bool]
    """True: the policy chooses each next sigma while sampling."""

    def actor(self, features: Features, mode: str = "mean", base: Tensor | None = None,
              scale: float = 1.0) -> Any:
        """An :class:`policies.actors.Actor` for the contexts of ``features`` (``mode``:
        ``mean`` or ``sample``; ``base``: flow-time base schedules the steps are decided around,
        default the policy's own; ``scale``: strength of the learned residual)."""


@runtime_checkable
class TrainableDistribution(Protocol):
    """A one-shot policy's action distribution, what the one-shot training methods
    (REINFORCE, PPO) sample from and differentiate."""

    def sample(self, features: Features, k: int) -> tuple[Tensor, Tensor]:
        """``k`` actions per context: ``(actions [B, K, ...], log_prob [B, K])``."""

    def log_prob(self, features: Features, actions: Tensor) -> Tensor:
        """Log-probability ``[B, K]`` of ``actions [B, K, ...]`` (differentiable)."""

    def entropy(self, features: Features) -> Tensor:
        """Entropy of the action distribution of each context ``[B]``."""

    def evaluate_actions(self, features: Features, actions: Tensor) -> tuple[Tensor, Tensor]:
        """``(log_prob [B, K], entropy [B])`` from one forward pass (what a loss needs)."""

    def actions_to_schedules(self, actions: Tensor) -> Tensor:
        """Flow-time schedules ``[B, K, L+1]`` of ``actions [B, K, ...]``."""

    def diagnostics(self, features: Features) -> dict[str, float]:
        """Scalars worth logging about the distribution on ``features`` (may be empty)."""


@runtime_checkable
class TrainableSteps(Protocol):
    """A step-wise policy's per-step distribution and value, what PPO over trajectories
    (AdaGen) re-evaluates."""

    def evaluate_steps(self, features: Features, info: dict[str, Tensor]
                       ) -> tuple[Tensor, Tensor, Tensor]:
        """``(log_prob, entropy, value)`` ``[N, L]`` of a trajectory's recorded steps."""

    def diagnostics(self, features: Features) -> dict[str, float]:
        """Scalars worth logging about the step distribution (may be empty)."""


def _has_methods(policy: Any, names: tuple[str, ...]) -> bool:
    return all(callable(getattr(policy, name, None)) for name in names)


_DISTRIBUTION = ("sample", "log_prob", "entropy", "evaluate_actions", "actions_to_schedules",
                 "diagnostics")


def is_stepwise(policy: Any) -> bool:
    """Whether ``policy`` (an instance or a kind's class) decides its steps while sampling
    (a :class:`StepwisePolicy`)."""
    return bool(getattr(policy, "stepwise", False))


def has_schedule(policy: Any) -> bool:
    """Whether ``policy`` (an instance or a kind's class) gives its schedule before sampling
    (a :class:`OneShotPolicy`)."""
    return not is_stepwise(policy) and callable(getattr(policy, "schedule", None))


def is_trainable(policy: Any) -> bool:
    """Whether ``policy`` (an instance or a kind's class) has a
    :class:`TrainableDistribution`."""
    return _has_methods(policy, _DISTRIBUTION)


def trains_by_steps(policy: Any) -> bool:
    """Whether ``policy`` (an instance or a kind's class) has :class:`TrainableSteps`."""
    return _has_methods(policy, ("evaluate_steps", "diagnostics"))


ROLES = {"schedule": has_schedule, "actor": is_stepwise, "distribution": is_trainable,
         "steps": trains_by_steps}
"""Role name -> its predicate (:func:`policy_roles`)."""


def policy_roles(policy: Any) -> frozenset[str]:
    """The roles (:data:`ROLES`) an instance or a kind's class plays."""
    return frozenset(name for name, plays in ROLES.items() if plays(policy))


POLICY_KINDS: dict[str, type] = {}
"""Registered policy classes by ``kind`` (filled by :func:`register_policy`)."""

P = TypeVar("P", bound=type)


def register_policy(cls: P) -> P:
    """Class decorator: make ``cls`` rebuildable from its config by
    :func:`policy_from_config` (``ValueError`` for a class with no kind or no deployable
    role)."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"{cls.__name__} needs a non-empty string 'kind' to be registered.")
    if POLICY_KINDS.get(kind, cls) is not cls:
        raise ValueError(f"Policy kind {kind!r} is already registered by "
                         f"{POLICY_KINDS[kind].__name__}.")
    if not (has_schedule(cls) or is_stepwise(cls)):
        raise ValueError(f"{cls.__name__} is neither one-shot (a 'schedule' method) nor "
                         "step-wise ('stepwise = True' and an 'actor' method): nothing could "
                         "deploy it.")
    POLICY_KINDS[kind] = cls
    return cls


def policy_from_config(config: dict[str, Any]) -> Any:
    """Rebuild any registered policy from its ``config()`` (a policy file's
    ``architecture``; weights not included); ``ValueError`` for an unknown kind.

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
    """Normalise a one-shot ``schedule``'s arguments, keeping the old keyword style working
    (benchmarks and user scripts still call it so).

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


__all__ = ["Features", "DeployablePolicy", "OneShotPolicy", "StepwisePolicy",
           "TrainableDistribution", "TrainableSteps", "is_stepwise", "has_schedule",
           "is_trainable", "trains_by_steps", "ROLES", "policy_roles", "POLICY_KINDS",
           "register_policy", "policy_from_config", "kind_options", "features_argument"]
