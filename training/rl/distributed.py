"""Data-parallel plumbing for the trainer: one training run split across processes.

The launcher's environment says whether the run is distributed (``WORLD_SIZE > 1``, as set by
``accelerate launch --multi_gpu`` or ``torchrun``; ``PMI_SIZE``-style variables under mpirun).
Then :func:`current` sets up the process group through ``accelerate.PartialState`` (gloo for a
CPU policy, NCCL for a CUDA one) and returns a :class:`TorchDist`; otherwise it returns the
single-process :class:`Dist`, whose collectives are the identity, and never imports
``accelerate``.

The engine uses exactly these operations: :meth:`Dist.shard` (this rank's contiguous chunk of a
batch), :meth:`Dist.all_gather` (concatenate per-rank tensors of uneven length),
:meth:`Dist.all_reduce_sum`, :meth:`Dist.all_reduce_grads` (sum gradients over ranks),
:meth:`Dist.broadcast_params`, :meth:`Dist.on_main` and :meth:`Dist.barrier`;
:func:`isolated_rng` keeps a rank's own rollouts from moving the shared random stream.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import torch
from torch import nn

log = logging.getLogger("learned_schedules.training")

T = TypeVar("T")

WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
"""Environment variables a launcher (torchrun / accelerate, mpirun) sets to the world size."""


def launched_world_size() -> int:
    """The number of processes the launcher started (1 when not launched distributed)."""
    for var in WORLD_SIZE_VARS:
        value = os.environ.get(var, "").strip()
        if value.isdigit():
            return max(1, int(value))
    return 1


class Dist:
    """A single process: every collective is the identity (the default, no ``accelerate``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "none"

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run folder, the logs and the progress bar."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def policy_device(self, requested: str) -> torch.device:
        """The device this rank trains on: a bare ``cuda`` becomes ``cuda:<local rank>``."""
        device = torch.device(requested)
        if device.type == "cuda" and device.index is None and self.distributed:
            return torch.device("cuda", self.local_rank)
        return device

    def shard(self, n: int) -> torch.Tensor:
        """Indices of this rank's contiguous chunk of ``n`` items.

        The first ``n % world_size`` ranks get one item more; a rank gets none when
        ``n < world_size``. Rank order is batch order, so :meth:`all_gather` restores it.
        """
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return torch.arange(start, start + base + int(self.rank < extra))

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``tensor`` along dim 0 in rank order (lengths may differ)."""
        return tensor

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over ranks (a new tensor; same shape on every rank)."""
        return tensor

    def all_reduce_grads(self, module: nn.Module) -> None:
        """Replace every parameter's gradient by its sum over ranks (missing grads count 0)."""

    def broadcast_params(self, module: nn.Module) -> bool:
        """Copy rank 0's parameters and buffers to every rank; whether they all already agreed."""
        return True

    def on_main(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the main rank only and return its result (or raise its error) on all."""
        return fn(*args)

    def barrier(self) -> None:
        """Wait until every rank gets here."""

    def shutdown(self) -> None:
        """Leave the process group cleanly (before the process exits)."""


class TorchDist(Dist):
    """Several processes in an initialised ``torch.distributed`` process group."""

    def __init__(self, rank: int, world_size: int, local_rank: int, backend: str,
                 comm_device: torch.device):
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.backend = backend
        self.comm_device = comm_device
        """Where tensors must be for collectives (CUDA for NCCL, CPU for gloo)."""

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as td

        local = tensor.detach().to(self.comm_device).contiguous()
        size = torch.tensor([local.shape[0]], device=self.comm_device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        td.all_gather(sizes, size)
        lengths = [int(s) for s in sizes]
        padded = local.new_zeros((max(lengths), *local.shape[1:]))
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in lengths]
        td.all_gather(parts, padded)
        out = torch.cat([part[:n] for part, n in zip(parts, lengths, strict=True)])
        return out.to(tensor.device)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as td

        out = tensor.detach().to(self.comm_device, copy=True)
        td.all_reduce(out, op=td.ReduceOp.SUM)
        return out.to(tensor.device)

    def all_reduce_grads(self, module: nn.Module) -> None:
        params = [p for p in module.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = self.all_reduce_sum(torch.cat([p.grad.reshape(-1) for p in params]))
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset: offset + p.numel()].view_as(p))
            offset += p.numel()

    def broadcast_params(self, module: nn.Module) -> bool:
        import torch.distributed as td

        tensors = [*module.parameters(), *module.buffers()]
        with torch.no_grad():
            mine = torch.cat([t.detach().reshape(-1).double() for t in tensors])
            mine = mine.to(self.comm_device)
            main = mine.clone()
            td.broadcast(main, src=0)
            differ = self.all_reduce_sum(torch.tensor(float(not torch.equal(main, mine)),
                                                      device=self.comm_device))
            if float(differ):
                offset = 0
                for t in tensors:
                    t.copy_(main[offset: offset + t.numel()].view_as(t))
                    offset += t.numel()
        return not float(differ)

    def on_main(self, fn: Callable[..., T], *args: Any) -> T:
        import torch.distributed as td

        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = (True, fn(*args))
            except Exception as exc:  # every rank raises it, so no rank waits forever
                box[0] = (False, exc)
        device = self.comm_device if self.comm_device.type != "cpu" else None
        td.broadcast_object_list(box, src=0, device=device)
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def barrier(self) -> None:
        import torch.distributed as td

        td.barrier()

    def shutdown(self) -> None:
        """Barrier, then destroy the process group: exiting with gloo's threads still up can
        abort the process ("terminate called without an active exception")."""
        global _CURRENT
        import torch.distributed as td

        if td.is_initialized():
            td.barrier()
            td.destroy_process_group()
        _CURRENT = None


_CURRENT: TorchDist | None = None


def current(device: str = "cpu") -> Dist:
    """The process's :class:`Dist`, from the launcher's environment (created once).

    ``device`` is the policy's device: a CPU policy communicates over gloo, a CUDA one over
    NCCL. Needs ``accelerate`` only when launched distributed.
    """
    global _CURRENT
    if _CURRENT is not None:
        return _CURRENT
    if launched_world_size() <= 1:
        _warn_single_process_accelerate_launch()
        return Dist()
    try:
        from accelerate import PartialState
    except ImportError as exc:
        raise ImportError("Distributed training needs accelerate: pip install "
                          "'learned-schedules[distributed]' (or -r requirements.txt).") from exc
    state = PartialState(cpu=torch.device(device).type == "cpu")
    backend = str(state.backend)
    gloo = backend in ("gloo", "mpi") or "cpu:" in backend
    _CURRENT = TorchDist(rank=state.process_index, world_size=state.num_processes,
                         local_rank=state.local_process_index, backend=backend,
                         comm_device=torch.device("cpu") if gloo else state.device)
    log.debug("rank %d of %d (%s)", _CURRENT.rank, _CURRENT.world_size, backend)
    return _CURRENT


def isolated_rng(device: torch.device) -> AbstractContextManager[Any]:
    """Keep a back-end's own randomness from moving the torch RNG that samples actions.

    Ranks roll out different slices, so without this a back-end that draws from the global
    RNG would leave the ranks with different streams, and different actions, next iteration.
    """
    cuda = [device.index or 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=cuda)


def _warn_single_process_accelerate_launch() -> None:
    """``accelerate launch --cpu --num_processes N`` starts ONE process without mpirun."""
    env = os.environ
    if env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") and "MASTER_ADDR" in env:
        log.warning("accelerate launch --cpu started a single process (multi-CPU needs "
                    "--mpirun_hostfile); for data-parallel training on CPUs use "
                    "'accelerate launch --multi_gpu --num_processes N' (gloo without GPUs) "
                    "or 'torchrun --nproc_per_node N'.")


__all__ = ["Dist", "TorchDist", "current", "launched_world_size", "isolated_rng"]
