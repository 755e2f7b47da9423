"""Plain PyTorch DDP helpers for runs launched with ``torchrun`` (nothing home-made).

``torchrun --nproc_per_node N -m versemi.cli train CONFIG`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``MASTER_ADDR/PORT``; :func:`init_distributed` reads them, picks ``nccl`` on CUDA
and ``gloo`` on CPU, and binds each process to GPU ``LOCAL_RANK``. Without those variables the run is
a single process and every helper here is a no-op.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group described by torchrun's environment (or stay single-process).

    Args:
        device: The device type chosen for training; CUDA uses ``nccl`` and GPU ``LOCAL_RANK``.
    """
    if not launched_by_torchrun():
        return DistributedContext()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        # Rank 0 validates while the others wait at a collective: allow long validations.
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=60))
    return DistributedContext(rank, world, local_rank)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast_flag(ctx: DistributedContext, value: bool, device: torch.device) -> bool:
    """Rank 0's boolean, on every rank (e.g. early stopping)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([1 if value else 0], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def all_ranks_true(ctx: DistributedContext, value: bool, device: torch.device) -> bool:
    """True only if ``value`` is true on every rank (so all ranks stop together, none hangs)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([1 if value else 0], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def mean_across_ranks(ctx: DistributedContext, values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar logs over the ranks (for logging only)."""
    if not ctx.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= ctx.world_size
    return dict(zip(keys, t.tolist()))


def gather_strings(ctx: DistributedContext, value: str) -> list[str]:
    """Every rank's string (e.g. a weights digest), in rank order; ``[value]`` single-process."""
    if not ctx.enabled:
        return [value]
    out: list[str] = [""] * ctx.world_size
    dist.all_gather_object(out, value)
    return out
