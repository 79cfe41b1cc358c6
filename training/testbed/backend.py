"""The analytic testbed as a rollout back-end for the RL engine (the embedded default)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...policies.actors import Actor, StepState, Trajectory, TrajectoryRecorder, check_decision
from ...policies.encoders import VectorEncoder
from ..rl.backend import Backend, SetMetric, grouped_indices
from ..rl.flow_error import FlowField
from .diversity import mixture_set_measures
from .eval import squared_errors, testbed_comparators, write_schedule_plot
from .mixture import DTYPE, Contexts, Testbed

if TYPE_CHECKING:
    from ..rl.config import TrainConfig


class TestbedBackend(Backend):
    """Rollouts on the exact Gaussian-mixture flow: Euler with each sampled schedule.

    Training contexts are drawn from a pool of ``pool_size`` contexts (seeded by
    ``pool_seed``) whose reference endpoints are solved once, in one batch: the testbed's
    stand-in for a finite training set of (prompt, seed) pairs. Held-out contexts come from
    another seed and are never in the pool.
    """

    model_family = "testbed"
    __test__ = False  # not a pytest class

    def __init__(self, testbed: Testbed, pool_size: int = 16384, pool_seed: int = 0,
                 dtype: torch.dtype = torch.float32):
        self.testbed = testbed
        self.reward_name = testbed.reward_name
        self.dtype = dtype
        self.pool_size, self.pool_seed = pool_size, pool_seed
        self._pool: Contexts | None = None

    @classmethod
    def from_config(cls, config: TrainConfig) -> TestbedBackend:
        if config.testbed_config:
            testbed = Testbed.from_json(config.testbed_config, reward=config.reward)
        else:
            testbed = Testbed.default(reward=config.reward)
        return cls(testbed, pool_size=config.pool_size,
                   pool_seed=config.seed + 7_919)

    @property
    def pool(self) -> Contexts:
        """The training pool (built on first use)."""
        if self._pool is None:
            self._pool = self.testbed.contexts_from_seed(self.pool_size, self.pool_seed,
                                                         with_target=self.reward_name
                                                         == "fidelity")
        return self._pool

    def draw_contexts(self, n: int, generator: torch.Generator) -> Contexts:
        return self.pool.select(torch.randint(self.pool_size, (n,), generator=generator))

    def held_out_contexts(self, n: int, seed: int) -> Contexts:
        return self.testbed.contexts_from_seed(n, seed)

    def context_groups(self, contexts: Contexts) -> torch.Tensor:
        """The class of every context (the testbed's prompt)."""
        return contexts.classes.long()

    def draw_grouped_contexts(self, prompts: int, seeds: int,
                              generator: torch.Generator) -> Contexts:
        """``prompts`` distinct classes x ``seeds`` pool contexts of each."""
        return self.pool.select(grouped_indices(self.pool.classes, prompts, seeds, generator))

    def features(self, contexts: Contexts) -> dict[str, torch.Tensor]:
        return {"noise": contexts.noise.to(self.dtype), "cond": contexts.cond.to(self.dtype)}

    @torch.no_grad()
    def rewards(self, contexts: Contexts, schedules: torch.Tensor) -> torch.Tensor:
        """``schedules [B, K, L+1]`` -> rewards ``[B, K]`` (all B*K rollouts in one batch)."""
        b, k, _ = schedules.shape
        schedules = schedules.cpu()
        if self.reward_name == "fidelity":
            self.testbed.target_of(contexts)  # solve once per context, not per rollout
        flat = contexts.repeat(k)
        r = self.testbed.sample_and_score(flat, schedules.reshape(b * k, -1).double())
        return r.reshape(b, k).to(torch.float32)

    @torch.no_grad()
    def rollout(self, contexts: Contexts, actor: Actor, steps: int) -> Trajectory:
        """Euler from ``t = 1`` (the contexts' noise is ``x_T``), asking ``actor`` for the next
        flow time at every step; the trajectory's ``reward`` is the configured reward ``[N]``.

        The actor sees ``denoised = x - t v`` (the flow's ``x0`` estimate, from the velocity the
        step uses anyway). With :class:`policies.actors.FixedScheduleActor` this is exactly
        :meth:`rewards` with one schedule per context (same float64 arithmetic).
        """
        if steps < 1:
            raise ValueError(f"A rollout needs at least one step, got {steps}.")
        testbed, classes = self.testbed, contexts.classes
        x = contexts.noise.to(DTYPE)
        sigma = torch.ones(len(contexts), dtype=DTYPE)
        recorder = TrajectoryRecorder(sigma)
        for step in range(steps):
            v = testbed.velocity(x, sigma, classes)
            state = StepState(step=step, steps=steps, x=x, sigma=sigma,
                              denoised=x - sigma[:, None] * v)
            decision = actor.next_sigma(state)
            sigma_next = check_decision(decision.sigma_next.to(DTYPE), state)
            recorder.add(decision)
            x = testbed.step(x, sigma, sigma_next, classes, velocity=v)
            sigma = sigma_next
        trajectory = recorder.finish(x)
        target = self.testbed.target_of(contexts) if self.reward_name == "fidelity" else None
        trajectory.reward = testbed.reward(x, classes, target).to(torch.float32)
        return trajectory

    def reference_samples(self, contexts: Contexts, source: str = "default") -> torch.Tensor:
        """True samples of each context's class mixture ``[N, d]`` (drawn from torch's global
        stream, which checkpoints save), for AdaGen's discriminator."""
        if source != "default":
            raise ValueError(f"The testbed's reference samples are its true mixture samples "
                             f"(source 'default'), not {source!r}.")
        return self.testbed.sample_data(contexts.classes)[0].to(self.dtype)

    def build_encoder(self, hidden: int, depth: int) -> nn.Module:
        return VectorEncoder(self.testbed.dim, self.testbed.cond_dim, hidden=hidden, depth=depth)

    # -- eval (training/eval.py) -----------------------------------------------------------
    def comparators(self, steps: int, contexts: Contexts, **options: Any
                    ) -> dict[str, torch.Tensor]:
        """uniform, sd3 (shift 3), flux (1024² shift), best_global and the multi-start
        per-instance oracle; options ``train_contexts``, ``fit_iters``, ``oracle``, ``seed``."""
        return testbed_comparators(self.testbed, steps, contexts, **options)

    def eval_metrics(self, contexts: Contexts, schedules: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
        return {"sq_error": squared_errors(self.testbed, contexts, schedules)}

    def set_metrics(self, contexts: Contexts, schedules: dict[str, torch.Tensor]
                    ) -> dict[str, dict[str, SetMetric]]:
        """The Fréchet distance of each schedule's final samples to true samples of the same
        classes (``fd``, the testbed's FID) and the component frequencies' total variation
        (``tv``), with paired bootstrap replicates (:func:`.diversity.mixture_set_measures`)."""
        finals = {name: self.testbed.euler(contexts.noise, contexts.classes,
                                           s.to(DTYPE).cpu())
                  for name, s in schedules.items()}
        found = mixture_set_measures(self.testbed, contexts, finals)
        return {name: {m: SetMetric(v, reps) for m, (v, reps) in ms.items()}
                for name, ms in found.items()}

    def write_eval_artifacts(self, out_dir: Path, contexts: Contexts,
                             schedules: dict[str, torch.Tensor],
                             rewards: dict[str, torch.Tensor], **options: Any) -> list[Path]:
        return write_schedule_plot(out_dir, schedules, schedules["learned"].shape[-1] - 1)

    # -- the flow field (ART's error signal) -------------------------------------------------
    def flow_field(self, contexts: Contexts) -> FlowField:
        """The exact closed-form velocity of these contexts (float64, differentiable in ``x``
        and ``sigma``, forward-AD capable)."""
        classes = contexts.classes

        def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return self.testbed.velocity(x, sigma, classes)

        return FlowField(start=contexts.noise.to(DTYPE), velocity=velocity,
                         jvp_method="double_backward")

    def flow_rollout(self, contexts: Contexts,
                     fn: Callable[[FlowField, torch.Tensor], dict[str, torch.Tensor]]
                     ) -> dict[str, torch.Tensor]:
        return fn(self.flow_field(contexts), torch.arange(len(contexts)))
