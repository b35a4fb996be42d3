"""Batch sampling for random-scale training: one scale per batch, one RNG seed per sample.

`ScaleBatchSampler` wraps an index sampler (a `DistributedSampler` in train.py, also with one process, so that
shuffling is seeded per epoch) and yields batches of `SampleKey(index, scale, seed)`. Everything it draws comes
from a generator seeded by (seed, epoch, rank): the same run always sees the same batches, and `set_epoch(epoch,
start_batch=k)` replays an epoch from its k-th batch, which is how a run resumed mid-epoch continues exactly.
"""
from __future__ import annotations

from typing import Iterator, Sized

import numpy as np
from torch.utils.data import Sampler

from .wrappers import SampleKey

# Per-sample seeds are drawn below this bound (torch.Generator.manual_seed takes up to 2^64 - 1).
SEED_BOUND = 1 << 62


class ScaleBatchSampler(Sampler[list[SampleKey]]):
    """Batches of `SampleKey`s sharing one scale s ~ U(scale_range) (or no scale when `scale_range` is None)."""

    def __init__(self, sampler: Sampler[int], batch_size: int, scale_range: tuple[float, float] | None = None,
                 seed: int = 0, rank: int = 0, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler, self.batch_size, self.scale_range = sampler, batch_size, scale_range
        self.seed, self.rank, self.drop_last = seed, rank, drop_last
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Draw the batches of `epoch`, skipping its first `start_batch` (already trained on)."""
        self.epoch, self.start_batch = epoch, start_batch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def batches_per_epoch(self) -> int:
        count = len(self.sampler) if isinstance(self.sampler, Sized) else 0
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start_batch)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        indices = list(self.sampler)
        stop = len(indices) - len(indices) % self.batch_size if self.drop_last else len(indices)
        for number, start in enumerate(range(0, stop, self.batch_size)):
            batch = indices[start:start + self.batch_size]
            scale = None if self.scale_range is None else float(rng.uniform(*self.scale_range))
            seeds = rng.integers(0, SEED_BOUND, len(batch)).tolist()
            if number >= self.start_batch:
                yield [SampleKey(int(i), scale, seed) for i, seed in zip(batch, seeds)]
