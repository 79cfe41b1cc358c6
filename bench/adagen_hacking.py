"""Reward hacking, measured on the testbed: AdaGen trained on the likelihood reward alone vs
on the adversarial reward, against the default (uniform) schedule, on held-out contexts.

    OMP_NUM_THREADS=1 nice python bench/adagen_hacking.py --steps 5 --iterations 300

Prints one row per sampler: tv (component frequencies vs true weights), spread (1 = true),
fd (Fréchet distance to true samples, the testbed's FID), loglik (the likelihood reward).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from learned_schedules.policies.actors import FixedScheduleActor
from learned_schedules.policies.schedule import uniform_schedule
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.engine import train
from learned_schedules.training.rl.stepwise import policy_rollout, policy_schedules
from learned_schedules.training.testbed.backend import TestbedBackend
from learned_schedules.training.testbed.diversity import mixture_measures
from learned_schedules.training.testbed.mixture import Testbed


def run(steps: int, iterations: int, adversarial: float, task: float, out: str,
        seed: int = 0, **kw) -> tuple[torch.nn.Module, float]:
    cfg = TrainConfig.from_dict(dict(
        algo="adagen", steps=steps, batch=32, rollouts=2, iterations=iterations,
        eval_every=0, eval_contexts=64, pool_size=4096, out=out,
        run_name=f"a{adversarial}-t{task}-L{steps}-s{seed}", progress=False,
        hidden=64, reward="likelihood", lr=1e-3, seed=seed,
        checkpoint_every=0, sample_every=0))
    cfg.adagen.adversarial, cfg.adagen.task = adversarial, task
    for k, v in kw.items():
        setattr(cfg.adagen, k, v)
    t0 = time.perf_counter()
    result = train(cfg)
    return result.policy, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--contexts", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    backend = TestbedBackend(Testbed.default(reward="likelihood"))
    ctx = backend.held_out_contexts(args.contexts, 10_000)
    rows = {}
    default = backend.rollout(ctx, FixedScheduleActor(uniform_schedule(args.steps,
                                                                       torch.float64)),
                              args.steps)
    rows["default (uniform)"] = (mixture_measures(backend.testbed, ctx, default.final), 0.0)
    with tempfile.TemporaryDirectory() as out:
        for name, adv, task in (("adagen likelihood only", 0.0, 1.0),
                                ("adagen adversarial", 1.0, 0.0)):
            policy, secs = run(args.steps, args.iterations, adv, task, out, args.seed)
            for mode in ("mean", "sample"):
                torch.manual_seed(1)
                traj = policy_rollout(policy, backend, ctx, mode)
                rows[f"{name} ({mode})"] = (mixture_measures(backend.testbed, ctx, traj.final),
                                            secs)
        # the project's primary method (one-shot Dirichlet, REINFORCE + James-Stein) on the
        # likelihood reward, with the same budget
        cfg = TrainConfig.from_dict(dict(
            algo="reinforce", steps=args.steps, batch=32, rollouts=2,
            iterations=args.iterations, eval_every=0, eval_contexts=64,
            pool_size=4096, out=out, run_name="js", progress=False, hidden=64,
            reward="likelihood", seed=args.seed, checkpoint_every=0))
        t0 = time.perf_counter()
        js = train(cfg).policy
        secs = time.perf_counter() - t0
        sched = policy_schedules(js, backend, ctx).double()
        rows["JS policy, likelihood (one-shot)"] = (mixture_measures(
            backend.testbed, ctx, backend.testbed.euler(ctx.noise, ctx.classes, sched)), secs)
    print(f"L={args.steps}, {args.iterations} iterations, {args.contexts} held-out contexts")
    print("| sampler | tv | spread | fd | loglik | train s |")
    print("|---|---|---|---|---|---|")
    for name, (m, secs) in rows.items():
        print(f"| {name} | {m['tv']:.3f} | {m['spread']:.2f} | {m['fd']:.3f} | "
              f"{m['loglik']:.2f} | {secs:.0f} |")


if __name__ == "__main__":
    main()
