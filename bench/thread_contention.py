"""Testbed training speed with torch's default threading vs one thread, on a busy machine.

Runs the engine's REINFORCE loop (default testbed, L = 5, B = 16, K = 2, no evaluation) for
``--iterations`` iterations, alternating the two settings ``--repeats`` times in fresh
processes, and reports seconds per 1000 iterations. Meant to run while other processes load
the CPUs (as on a shared 2-core machine); results to ``bench/results/thread_contention.json``.

Usage: ``python bench/thread_contention.py [--iterations 300] [--repeats 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import sys, time, tempfile, torch
threads = int(sys.argv[1])
if threads > 0:
    torch.set_num_threads(threads)
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.engine import train
with tempfile.TemporaryDirectory() as d:
    cfg = TrainConfig.from_dict(dict(
        steps=5, baseline="rloo", iterations=int(sys.argv[2]), out=d, run_name="r",
        progress=False, checkpoint_every=0, eval_every=0, eval_contexts=16))
    t = time.perf_counter()
    train(cfg)
    print(torch.get_num_threads(), time.perf_counter() - t)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    load = os.getloadavg()
    rows = []
    for rep in range(args.repeats):
        for threads in (0, 1):  # 0: torch's default
            out = subprocess.run([sys.executable, "-c", CHILD, str(threads),
                                  str(args.iterations)], capture_output=True, text=True,
                                 check=True).stdout.split()
            n, secs = int(out[-2]), float(out[-1])
            rows.append({"setting": "default" if threads == 0 else "1 thread", "threads": n,
                         "seconds": secs, "per_1000_it": secs * 1000 / args.iterations,
                         "repeat": rep})
            print(rows[-1], flush=True)
    res = {"iterations": args.iterations, "cpus": os.cpu_count(), "loadavg_before": load,
           "loadavg_after": os.getloadavg(), "runs": rows}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "thread_contention.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
