"""torch.distributed set-up for train.py: one process per device, launched by torchrun (or run alone).

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and MASTER_ADDR/PORT); with WORLD_SIZE > 1 the process group
is initialised from them, with NCCL on CUDA and gloo on the CPU. Alone, the context is rank 0 of 1.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def setup(device: str | torch.device) -> Context:
    """Initialise the process group if launched with WORLD_SIZE > 1, and pick this process's device.

    `device` comes from utils.resolve_device. On CUDA, each process of a torchrun launch trains on CUDA device
    LOCAL_RANK; a lone process on the device given (cuda:N), or device 0.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
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
