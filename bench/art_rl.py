"""ART-RL (the paper's actor-critic) with and without the stabilisers of the README, section ART, vs
the uniform schedule and ART direct, on the default testbed (held-out contexts, paired).

Usage: ``nice python bench/art_rl.py``; writes ``bench/results/art_rl.md`` (~5 CPU-minutes).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from learned_schedules.policies.policy_file import load_policy
from learned_schedules.policies.schedule import uniform_schedule
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.engine import train
from learned_schedules.training.testbed.backend import TestbedBackend
from learned_schedules.training.testbed.mixture import Testbed

EVAL_SEED = 10_000
CONTEXTS = 512
STEPS = (3, 5, 8, 12)
REPO = Path(__file__).resolve().parents[1]
PAPER = {"lr": 3e-3, "critic_lr": 3e-3, "gamma_lr": 0.1}
STABLE = {"lr": 3e-3, "critic_lr": 3e-3, "gamma_lr": 0.0, "critic_warmup": 30,
          "project": True, "restore": 10.0, "trace": 1.0}
RUNS = [  # name, art options, iterations, batch, seed
    ("art direct (96 trajectories)", {"solver": "direct", "grid": 100}, 12, 8, 0),
    ("paper's updates (TD, dual gamma)", PAPER, 250, 32, 0),
    ("stabilised, TD(0) advantage", {**STABLE, "trace": 0.0}, 250, 32, 0),
    *[(f"stabilised (test recipe), seed {s}", STABLE, 250, 32, s) for s in range(3)],
    *[(f"stabilised + trapezoid, seed {s}", {**STABLE, "trapezoid": True}, 250, 32, s)
      for s in range(3)],
    ("stabilised + trapezoid, grid 20", {**STABLE, "trapezoid": True, "grid": 20}, 250, 32, 0),
    ("stabilised, grid 20", {**STABLE, "grid": 20}, 250, 32, 0),
    ("stabilised + trapezoid, long", {**STABLE, "trapezoid": True, "lr": 1e-3,
                                      "critic_warmup": 50}, 1000, 64, 0),
]


def main() -> None:
    torch.set_num_threads(1)
    backend = TestbedBackend(Testbed.default())
    held = backend.held_out_contexts(CONTEXTS, EVAL_SEED)
    base = {L: backend.rewards(held, uniform_schedule(L).expand(CONTEXTS, 1, -1))[:, 0].double()
            for L in STEPS}
    lines = [f"Default testbed, {CONTEXTS} held-out contexts (seed {EVAL_SEED}); reward minus "
             "the uniform schedule's, paired (mean ± SE). Global clock (no context features), "
             "grid 40 unless stated; calls = velocity calls (+ as many JVPs).", "",
             "| run | calls | s | " + " | ".join(f"L={L}" for L in STEPS) + " | clock at L=8 |",
             "|---|---|---|" + "---|" * len(STEPS) + "---|"]
    for name, art, iterations, batch, seed in RUNS:
        art = {"grid": 40, "width": 32, "features": False, "distill_contexts": 32, **art}
        with TemporaryDirectory() as tmp:
            cfg = TrainConfig.from_dict(dict(
                algo="art", steps=8, batch=batch, hidden=16, iterations=iterations, out=tmp,
                run_name="r", progress=False, checkpoint_every=0, eval_every=0,
                eval_contexts=16, lr_schedule="constant", seed=seed, art=art))
            start = time.perf_counter()
            result = train(cfg)
            seconds = time.perf_counter() - start
            with (result.run_dir / "metrics.csv").open() as f:
                calls = int(float(list(csv.DictReader(f))[-1]["model_calls"]))
            clock = load_policy(result.run_dir / "policy.safetensors").policy
        cells = []
        for L in STEPS:
            flow = clock.schedule({}, steps=L)[0]
            diff = backend.rewards(held, flow.expand(CONTEXTS, 1, -1))[:, 0].double() - base[L]
            cells.append(f"{float(diff.mean()):+.3f} ± {float(diff.std()) / CONTEXTS ** 0.5:.3f}")
        flow8 = ", ".join(f"{float(x):.2f}" for x in clock.schedule({}, steps=8)[0])
        lines.append(f"| {name} | {calls:,} | {seconds:.0f} | " + " | ".join(cells)
                     + f" | [{flow8}] |")
        print(lines[-1], flush=True)
    out = REPO / "bench" / "results" / "art_rl.md"
    out.write_text("\n".join(lines) + "\n")
    print(out)


if __name__ == "__main__":
    main()
