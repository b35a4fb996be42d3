"""`ScaleBatchSampler`: one scale per batch, seeded and replayable epochs, sharding through DistributedSampler."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler

import datasets
from conftest import random_rgb, write_rgb
from datasets import ScaleBatchSampler


def epoch_batches(sampler, epoch, start_batch=0):
    sampler.set_epoch(epoch, start_batch)
    return list(sampler)


def test_batches_share_one_scale_in_range_and_stack(tmp_path):
    for i in range(5):
        write_rgb(tmp_path / f"{i}.png", random_rgb(24, 24, seed=i))
    folder = datasets.make({"name": "image-folder", "args": {"root_path": str(tmp_path), "repeat": 2}})
    wrapper = datasets.make({"name": "sr-implicit-downsampled",
                             "args": {"inp_size": 16, "scale_min": 1.5, "scale_max": 4, "augment": True}},
                            {"dataset": folder})
    sampler = ScaleBatchSampler(DistributedSampler(wrapper, num_replicas=1, rank=0, seed=3), batch_size=3,
                                scale_range=wrapper.scale_range, seed=3)
    batches = epoch_batches(sampler, 0)
    assert [len(b) for b in batches] == [3, 3, 3, 1] and len(sampler) == 4
    assert sorted(k.index for b in batches for k in b) == list(range(10))
    for batch in batches:
        assert len({k.scale for k in batch}) == 1 and 1.5 <= batch[0].scale < 4
        assert len({k.seed for k in batch}) == len(batch)
    sampler.set_epoch(0)
    loaded = list(DataLoader(wrapper, batch_sampler=sampler))
    for keys, batch in zip(batches, loaded):
        size = int(16 / keys[0].scale + 1e-9)
        assert batch["inp"].shape == (len(keys), 3, size, size) and batch["gt"].shape == (len(keys), 3, 16, 16)
        assert torch.allclose(batch["scale"], torch.tensor([16 / size] * 2).expand(len(keys), 2))


def test_epochs_are_reproducible_and_differ():
    sampler = ScaleBatchSampler(DistributedSampler(range(20), num_replicas=1, rank=0, seed=1), 4, (1, 4), seed=1)
    first = epoch_batches(sampler, 0)
    assert epoch_batches(sampler, 0) == first
    assert epoch_batches(sampler, 1) != first
    other_seed = ScaleBatchSampler(DistributedSampler(range(20), num_replicas=1, rank=0, seed=2), 4, (1, 4), seed=2)
    assert epoch_batches(other_seed, 0) != first


def test_start_batch_replays_the_rest_of_an_epoch():
    sampler = ScaleBatchSampler(DistributedSampler(range(23), num_replicas=1, rank=0, seed=0), 5, (2, 3), seed=0)
    full = epoch_batches(sampler, 4)
    rest = epoch_batches(sampler, 4, start_batch=2)
    assert rest == full[2:] and len(sampler) == len(full) - 2


def test_ranks_draw_disjoint_shards():
    shards = [ScaleBatchSampler(DistributedSampler(range(16), num_replicas=2, rank=r, seed=0), 4, (1, 2), rank=r)
              for r in range(2)]
    indices = [{k.index for b in epoch_batches(s, 0) for k in b} for s in shards]
    assert indices[0].isdisjoint(indices[1]) and indices[0] | indices[1] == set(range(16))


def test_without_a_scale_range_keys_carry_no_scale_and_drop_last_works():
    sampler = ScaleBatchSampler(SequentialSampler(range(7)), 3, None, drop_last=True)
    batches = epoch_batches(sampler, 0)
    assert [[k.index for k in b] for b in batches] == [[0, 1, 2], [3, 4, 5]]
    assert all(k.scale is None for b in batches for k in b) and len(sampler) == 2
