"""Data-parallel training: N processes train exactly the single-process run.

The key test launches ``accelerate launch --multi_gpu --num_processes 2`` (gloo on a machine
without GPUs) and compares the saved policy and every metric with the same run in one process.
The metrics include ``grad_norm`` (measured before clipping), so averaging instead of summing
the gradients halves it, and ranks that each trained on the whole batch double it; ranks that
sampled different ``tau`` get different rewards. The other tests start the ranks themselves
(``RANK``/``WORLD_SIZE`` as torchrun sets them) and run this file as each rank's script.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from learned_schedules.training.cli import main as cli_main
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.distributed import Dist, TorchDist, current
from learned_schedules.training.rl.engine import train

VENV_BIN = Path(sys.executable).parent
LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
               "MASTER_PORT", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE",
               "ACCELERATE_USE_CPU")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    # one thread per rank on 2 cores; no user accelerate config (HF_HOME) leaks in
    env.update(OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf"), **extra)
    return env


def _metrics(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def assert_same_run(dp: Path, single: Path) -> None:
    """Same final policy and the same metrics (all but wall-clock seconds)."""
    a, b = load_file(str(dp / "policy.safetensors")), load_file(str(single / "policy.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5, msg=k)
    rows_a, rows_b = _metrics(dp), _metrics(single)
    assert len(rows_a) == len(rows_b) > 0
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for field in ra.keys() - {"seconds"}:
            if ra[field] == rb[field]:
                continue
            assert float(ra[field]) == pytest.approx(float(rb[field]), rel=1e-5, abs=1e-6), (
                ra["iteration"], field)


def _checkpoint_info(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["learned_schedules_checkpoint"])["info"]


# -- the key test: accelerate launch == one process ------------------------------------------
@pytest.mark.parametrize("flags", [
    ["--batch", "6", "--baseline", "js", "--eval-every", "1", "--eval-contexts", "5"],
    ["--batch", "5", "--algo", "ppo", "--ppo-epochs", "2", "--baseline", "xctx",
     "--normalize-advantages", "--entropy-coef", "0.01", "--eval-every", "0"],
], ids=["js-batch6", "ppo-batch5-uneven"])
def test_accelerate_launch_matches_single_process(tmp_path, flags):
    args = ["train", "--backend", "testbed", "--steps", "3", "--rollouts", "2",
            "--iterations", "3", "--checkpoint-every", "1", "--no-progress", "--pool-size", "64",
            "--seed", "3", "--hidden", "16", "--depth", "1", "--lr", "1e-2", *flags]
    launch = [str(VENV_BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port()), "-m", "learned_schedules.training"]
    proc = subprocess.run([*launch, *args, "--out", str(tmp_path / "dp"), "--run-name", "run"],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "data-parallel training on 2 processes (gloo)" in proc.stderr
    dp = tmp_path / "dp" / "run"
    assert _checkpoint_info(dp / "checkpoints" / "state_000003.safetensors")["world_size"] == 2

    assert cli_main([*args, "--out", str(tmp_path / "single"), "--run-name", "run"]) == 0
    single = tmp_path / "single" / "run"
    assert _checkpoint_info(single / "checkpoints" / "state_000003.safetensors")["world_size"] == 1
    assert_same_run(dp, single)


def test_single_process_run_never_imports_accelerate(tmp_path):
    code = ("import sys\nfrom learned_schedules.training.cli import main\n"
            f"rc = main(['train', '--iterations', '1', '--batch', '2', '--steps', '2', "
            f"'--pool-size', '16', '--hidden', '8', '--depth', '1', '--eval-every', '0', "
            f"'--no-progress', '--out', {str(tmp_path)!r}, '--run-name', 'one'])\n"
            "assert rc == 0 and 'accelerate' not in sys.modules, sorted(sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "one" / "policy.safetensors").exists()


def test_shards_cover_the_batch_in_order():
    for world in (1, 2, 3, 5):
        for n in (0, 1, 2, 5, 6, 7):
            parts = []
            for rank in range(world):
                d = Dist()
                d.rank, d.world_size = rank, world
                parts.append(d.shard(n))
            assert torch.equal(torch.cat(parts), torch.arange(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


# -- ranks started by hand (as torchrun would), running this file ------------------------------
def _run_ranks(tmp_path: Path, mode: str, world: int = 2) -> None:
    port = str(_free_port())
    procs = [subprocess.Popen(
        [sys.executable, __file__, mode, str(tmp_path)],
        env=_env(tmp_path, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world),
                 LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(world)]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=180)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, out) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, f"rank {rank}:\n{out[-4000:]}"


def test_collectives_over_gloo(tmp_path):
    """Uneven all-gather (with an empty rank), gradient sum, parameter broadcast, on_main."""
    _run_ranks(tmp_path, "collectives")


def _edge_config(tmp_path: Path, name: str, **kw) -> TrainConfig:
    base = dict(steps=3, rollouts=2, iterations=3, lr=1e-2, hidden=16, depth=1, pool_size=64,
                seed=4, out=str(tmp_path / name), run_name="run", progress=False,
                checkpoint_every=1, keep_checkpoints=10, eval_every=0, eval_contexts=3)
    base.update(kw)
    return TrainConfig.from_dict(base)


EDGE_CASES = {
    # batch 1 < 2 ranks: rank 1 rolls out nothing, nor evaluates anything (1 eval context)
    "empty_rank": dict(batch=1, baseline="js", eval_every=1, eval_contexts=1),
    # PPO on an uneven batch, interrupted after iteration 2 and resumed (see _ranks_train)
    "resumed_ppo": dict(batch=3, algo="ppo", ppo_epochs=2, baseline="rloo", iterations=4,
                        eval_every=2, lr_schedule="constant"),
}


def test_edge_cases_match_single_process(tmp_path):
    _run_ranks(tmp_path, "train")
    for name, kw in EDGE_CASES.items():
        single = train(_edge_config(tmp_path / "single", name, **kw))
        assert_same_run(tmp_path / name / "run", single.run_dir)


# -- what each rank runs -----------------------------------------------------------------------
def _ranks_collectives() -> None:
    d = current("cpu")
    assert isinstance(d, TorchDist) and d.world_size == 2 and d.backend == "gloo"
    r = d.rank
    # uneven all-gather, rank 0 empty
    mine = torch.arange(3.0 * r).reshape(-1, 3) + 10 * r
    assert torch.equal(d.all_gather(mine), torch.arange(3.0).reshape(1, 3) + 10)
    assert d.all_gather(torch.zeros(0, 4)).shape == (0, 4)
    gathered = d.all_gather(torch.full((2 - r, 2), float(r)))  # 2 rows then 1 row
    assert torch.equal(gathered, torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]))
    # gradients are summed (not averaged); a missing gradient counts as zero
    lin = nn.Linear(3, 2)
    lin.weight.grad = torch.full_like(lin.weight, r + 1.0)
    lin.bias.grad = None if r else torch.ones_like(lin.bias)
    d.all_reduce_grads(lin)
    assert torch.equal(lin.weight.grad, torch.full_like(lin.weight, 3.0))
    assert torch.equal(lin.bias.grad, torch.ones_like(lin.bias))
    # rank 0's parameters win; a second broadcast finds them equal
    with torch.no_grad():
        lin.weight.fill_(float(r))
    assert d.broadcast_params(lin) is False
    assert torch.equal(lin.weight, torch.zeros_like(lin.weight))
    assert d.broadcast_params(lin) is True
    assert torch.equal(d.all_reduce_sum(torch.tensor([r + 1.0])), torch.tensor([3.0]))
    # on_main: the main rank's result (or error) on every rank
    assert d.on_main(lambda: d.rank) == 0

    def fail() -> None:
        raise ValueError("only main runs this")

    with pytest.raises(ValueError, match="only main runs this"):
        d.on_main(fail)
    d.barrier()


def _ranks_train(tmp: Path) -> None:
    d = current("cpu")
    assert d.world_size == 2
    result = train(_edge_config(tmp, "empty_rank", **EDGE_CASES["empty_rank"]))
    assert result.is_main == (d.rank == 0) and result.iterations_done == 3

    def stop_after_2(it: int, _stats) -> None:
        if it == 2:
            raise KeyboardInterrupt

    cfg = _edge_config(tmp, "resumed_ppo", **EDGE_CASES["resumed_ppo"])
    part = train(cfg, callback=stop_after_2)
    assert part.interrupted and part.iterations_done == 2
    d.barrier()  # the main rank's Ctrl-C checkpoint is written before anyone resumes
    resumed = train(cfg, resume=part.run_dir)
    assert resumed.iterations_done == 4 and not resumed.interrupted


if __name__ == "__main__":  # one rank of _run_ranks
    {"collectives": lambda: _ranks_collectives(),
     "train": lambda: _ranks_train(Path(sys.argv[2]))}[sys.argv[1]]()
    current("cpu").shutdown()
