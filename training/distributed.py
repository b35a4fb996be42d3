"""torch.distributed set-up for train.py: one process per device, launched by torchrun (or run alone).

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and MASTER_ADDR/PORT); with WORLD_SIZE > 1 the process group
is initialised from them, with NCCL on CUDA and gloo on the CPU. Alone, the context is rank 0 of 1.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from utils import UsageError

# The most processes a training run may span (a bound that keeps the environment's numbers sane, far above any
# cluster's count of GPUs).
MAX_WORLD_SIZE = 1 << 20


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among `world_size` and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _environment_int(name: str, default: int, low: int, high: int) -> int:
    text = os.environ.get(name, str(default)).strip()
    if not (text.isdigit() and low <= int(text) <= high):
        raise UsageError(f"the environment variable {name}={os.environ.get(name)!r} must be a whole number from {low} "
                         f"to {high} (torchrun sets it; unset it to train in one process)")
    return int(text)


def launch_environment() -> tuple[int, int, int]:
    """(WORLD_SIZE, RANK, LOCAL_RANK) as torchrun sets them (1, 0, 0 when unset), checked: a rank outside the world,
    or a world of several processes without torchrun's rendezvous address, is refused before any work."""
    world_size = _environment_int("WORLD_SIZE", 1, 1, MAX_WORLD_SIZE)
    rank = _environment_int("RANK", 0, 0, world_size - 1)
    local_rank = _environment_int("LOCAL_RANK", 0, 0, world_size - 1)
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if world_size > 1 and not os.environ.get(name)]
    if missing:
        raise UsageError(f"WORLD_SIZE={world_size} without {' and '.join(missing)}: launch several processes with "
                         "torchrun (or unset WORLD_SIZE to train in one)")
    return world_size, rank, local_rank


def setup(device: str | torch.device) -> Context:
    """Initialise the process group if launched with WORLD_SIZE > 1, and pick this process's device.

    `device` comes from utils.resolve_device. On CUDA, each process of a torchrun launch trains on CUDA device
    LOCAL_RANK; a lone process on the device given (cuda:N), or device 0.
    """
    world_size, rank, local_rank = launch_environment()
    device = torch.device(device)
    kind = device.type
    if kind == "cuda":
        index = local_rank if world_size > 1 else (device.index or 0)
        torch.cuda.set_device(index)
        chosen = torch.device("cuda", index)
    else:
        chosen = torch.device(kind)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if kind == "cuda" else "gloo", rank=rank, world_size=world_size)
    return Context(rank, world_size, local_rank, chosen)


def cleanup(ctx: Context) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, ctx: Context) -> torch.Tensor:
    """The sum over ranks (the tensor itself when alone)."""
    if ctx.distributed:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


def per_rank_batch(batch_size: int, ctx: Context) -> int:
    """The global batch split evenly over the ranks; it must divide."""
    if batch_size % ctx.world_size:
        raise ValueError(f"batch_size {batch_size} does not split evenly over {ctx.world_size} processes")
    return batch_size // ctx.world_size
