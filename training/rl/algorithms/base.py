"""What a training algorithm supplies to the engine: a policy, rollouts and an update.

The engine (:mod:`training.rl.engine`) owns everything every method shares; an
:class:`Algorithm` owns what differs: which policy kind it trains (:meth:`build_policy`, the
one trainer-side builder; a kind's options come from :meth:`Algorithm.policy_options`), how it
gathers experience (:meth:`collect`, which returns a :class:`Batch`) and how it turns that into
a parameter update (:meth:`update`, which takes that batch and returns the metrics the engine
writes, one CSV column per key).

The default :meth:`collect` is the one-shot rollout of the paper: ``K`` actions per context
from the policy's distribution (:class:`policies.contract.TrainableDistribution`), each turned
into a schedule and scored by the back-end. Data-parallel (``dist``): every rank draws the same
contexts and samples the same actions, rolls out only its own slice of the batch and
all-gathers the rewards, so everything downstream sees the single-process batch;
:attr:`Batch.mine` and :attr:`Batch.share` say which slice the local loss covers and how to
weight it so that the summed gradient is the single-process one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from ....policies.contract import Features, TrainableDistribution, is_trainable
from ....policies.kinds import POLICY_KINDS
from ..backend import Backend, policy_features
from ..distributed import Dist, isolated_rng

if TYPE_CHECKING:
    from ..config import TrainConfig


@dataclass(kw_only=True)
class Batch:
    """One iteration's experience: what every algorithm's :meth:`Algorithm.collect` returns
    and its :meth:`Algorithm.update` takes (global batch; the same on every rank).

    One base type rather than one type with optional fields: the methods learn from different
    tensors (sampled actions and their rewards, :class:`RolloutBatch`; per-step records of
    trajectories; a clock's trajectories), and a field that is None for most methods is a
    question every reader must ask. The base holds what every method shares: the contexts'
    features, this rank's slice and its weight, and the diagnostics to log."""

    features: Features
    """Policy inputs of every context ``[B, ...]``."""
    mine: Tensor
    """Indices of this rank's contexts (all of them in a single process)."""
    share: float = 1.0
    """``len(mine) / B``: a local mean times ``share``, summed over ranks, is the global mean."""
    stats: dict[str, float] = field(default_factory=dict)
    """Policy diagnostics at collection time (logged as they are)."""


@dataclass(kw_only=True)
class RolloutBatch(Batch):
    """Sampled actions and their rewards (the one-shot methods' batch)."""

    actions: Tensor
    """Sampled actions ``[B, K, ...]``."""
    logp: Tensor
    """Their log-probabilities at sampling time ``[B, K]``."""
    schedules: Tensor
    """The schedules rolled out ``[B, K, L+1]`` (flow time)."""
    rewards: Tensor
    """Rewards ``[B, K]`` (all-gathered over ranks)."""
    groups: Tensor | None = None
    """Prompt-group id of every context ``[B]`` (:meth:`Backend.context_groups`), or None."""

    def local(self) -> tuple[Features, Tensor]:
        """This rank's features and actions."""
        return {k: v[self.mine] for k, v in self.features.items()}, self.actions[self.mine]


class Algorithm:
    """Base class of training algorithms (subclasses set the class attributes)."""

    name: ClassVar[str]
    """Registry name (``--algo``) and the name of its config section (``--<name>.<option>``,
    ``"<name>"`` in ``config.json``)."""
    aliases: ClassVar[tuple[str, ...]] = ()
    """Other names ``--algo`` (and its alias ``--method``) accept."""
    method: ClassVar[str]
    """Written into policy files as ``method`` (also accepted by ``--algo``)."""
    policy_kind: ClassVar[str]
    """The policy kind it trains (:data:`policies.contract.POLICY_KINDS`)."""
    options_class: ClassVar[type]
    """Its options dataclass (the config section; fields documented by docstrings, ranges
    and choices declared with :func:`policies.fields.option`; optional ``check(prefix)`` and
    ``validate(config)`` methods)."""

    iteration: int | None = None
    """The 1-based iteration being trained (set by the engine before each one; None outside
    a run)."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.options = config.options(self.name)

    def training_progress(self) -> float | None:
        """How far the run is: 0 at the first iteration, 1 at the last (None outside a run).
        A pure function of the iteration, so a resumed run sees the same values."""
        if self.iteration is None:
            return None
        return (self.iteration - 1) / max(1, self.config.iterations - 1)

    def tell_progress(self, policy: nn.Module) -> None:
        """Pass :meth:`training_progress` to a policy that schedules something over the run
        (its optional ``set_progress(fraction)``, e.g. the Dirichlet policy's concentration)."""
        progress = self.training_progress()
        set_progress = getattr(policy, "set_progress", None)
        if progress is not None and callable(set_progress):
            set_progress(progress)

    @property
    def run_tag(self) -> str:
        """Part of the default run-folder name (``{backend}-{run_tag}-L{steps}...``)."""
        return self.name

    # -- policy -----------------------------------------------------------------------------
    policy_reads_features: ClassVar[bool] = True
    """Whether the trained policy gets the back-end's encoder (else ``None``)."""
    policy_starts_at_default: ClassVar[bool] = True
    """Whether ``init_schedule=default`` starts the policy at the back-end's default
    schedule (a kind that cannot start there ignores it, and the back-end is not asked)."""

    def policy_options(self, config: TrainConfig) -> dict[str, Any]:
        """The options of :attr:`policy_kind`'s ``for_training`` beyond the encoder, the steps,
        ``hidden`` and the initial segments (default: the initial concentration)."""
        return {"init_concentration": config.policy.init_concentration}

    def build_policy(self, config: TrainConfig, backend: Backend) -> nn.Module:
        """A fresh policy of :attr:`policy_kind` for ``backend`` (the trainer's one builder; a
        saved policy is rebuilt by :func:`policies.contract.policy_from_config`): the
        back-end's encoder, the mean at the back-end's default schedule with
        ``init_schedule=default`` (see the two class flags) and :meth:`policy_options`."""
        encoder = backend.build_encoder(hidden=config.policy.hidden, depth=config.policy.depth) \
            if self.policy_reads_features else None
        segments = backend.default_segments(config.steps) \
            if config.policy.init_schedule == "default" and self.policy_starts_at_default else None
        return POLICY_KINDS[self.policy_kind].for_training(
            encoder, config.steps, hidden=config.policy.hidden, init_segments=segments,
            **self.policy_options(config))

    def build_optimizer(self, policy: nn.Module) -> torch.optim.Optimizer:
        """The optimiser of the trained module (default: AdamW at ``config.lr``). The engine
        sets every group's ``lr`` to the scheduled rate times the group's ``lr_scale`` (1 when
        absent), so an algorithm can give parts of its module other rates."""
        return torch.optim.AdamW(policy.parameters(), lr=self.config.lr,
                                 weight_decay=self.config.weight_decay)

    def setup(self, policy: nn.Module, backend: Backend) -> None:
        """Called once after the policy is built and before any checkpoint is loaded: build
        the algorithm's own modules (a discriminator, a critic...) here."""

    def extra_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The algorithm's own training state beyond the policy and its optimiser, as flat
        tensors and JSON metadata, saved in every checkpoint (see
        :func:`training.rl.checkpoint.optimizer_tensors` for optimisers). Default: none."""
        return {}, {}

    def load_extra_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` saved (called on resume, after :meth:`setup`)."""

    def deployable(self, policy: nn.Module, backend: Backend) -> nn.Module:
        """The deployable policy (:class:`~policies.contract.OneShotPolicy` or
        :class:`~policies.contract.StepwisePolicy`) that ``eval``, the held-out evaluation and
        the policy file see. Default: the trained policy itself; a method that
        trains something else (an actor-critic) returns what it deploys (e.g. a distilled
        schedule)."""
        return policy

    # -- experience -------------------------------------------------------------------------
    @torch.no_grad()
    def collect(self, policy: TrainableDistribution, backend: Backend, contexts: Any,
                dist: Dist) -> Batch:
        """Sample ``K`` actions per context, roll out this rank's slice, gather the rewards
        (the policy first hears the training progress, :meth:`tell_progress`). A kind with no
        distribution (:func:`policies.contract.is_trainable`) needs the algorithm's own
        ``collect`` (``TypeError`` here)."""
        if not is_trainable(policy):
            raise TypeError(f"{type(policy).__name__} has no sampling distribution to train "
                            f"with {type(self).__name__}'s default collect; the algorithm must "
                            "collect its own experience.")
        self.tell_progress(policy)
        features = policy_features(policy, backend, contexts)
        actions, logp = policy.sample(features, self.config.rollouts)
        schedules = policy.actions_to_schedules(actions)  # [B, K, L+1]
        batch = schedules.shape[0]
        mine = dist.shard(batch)
        local = _local_rewards(backend, contexts, schedules, mine, dist).to(logp)
        return RolloutBatch(features=features, actions=actions, logp=logp, schedules=schedules,
                            rewards=dist.all_gather(local), mine=mine,
                            share=len(mine) / batch, stats=policy.diagnostics(features),
                            groups=backend.context_groups(contexts))

    def update(self, policy: Any, optimizer: torch.optim.Optimizer, batch: Batch,
               dist: Dist) -> dict[str, float]:
        """One parameter update from ``batch``; returns the metrics to log (name -> value)."""
        raise NotImplementedError

    # -- shared by the gradient steps -------------------------------------------------------
    def gradient_step(self, policy: nn.Module, optimizer: torch.optim.Optimizer,
                      loss: Tensor | None, share: float, dist: Dist) -> float:
        """Backpropagate ``loss * share`` (None: this rank has no contexts and adds a zero
        gradient), sum gradients over ranks, clip, step; returns the pre-clip gradient norm."""
        if loss is not None:
            (loss * share).backward()
        dist.all_reduce_grads(policy)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(policy.parameters(),
                                                         self.config.grad_clip))
        optimizer.step()
        return grad_norm


def _local_rewards(backend: Backend, contexts: Any, schedules: Tensor, mine: Tensor,
                   dist: Dist) -> Tensor:
    """Rewards ``[len(mine), K]`` of this rank's contexts."""
    if not dist.distributed:
        return backend.rewards(contexts, schedules)
    if len(mine) == 0:
        return torch.zeros(0, schedules.shape[1])
    with isolated_rng(schedules.device):
        return backend.rewards(contexts.select(mine), schedules[mine])


__all__ = ["Algorithm", "Batch", "RolloutBatch"]
