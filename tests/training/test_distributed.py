"""torch.distributed helpers: the context of a lone process, batch splitting, sums over ranks."""
from __future__ import annotations

import pytest
import torch

from training import distributed
from utils import UsageError


def test_alone_is_rank_zero_of_one(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = distributed.setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed, ctx.device) == (0, 1, True, False,
                                                                                    torch.device("cpu"))
    value = torch.tensor([1.5, 2.0])
    assert torch.equal(distributed.all_reduce_sum(value, ctx), value)
    distributed.cleanup(ctx)


@pytest.mark.parametrize("environment, message", [
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' must be a whole number from 1"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0' must be a whole number from 1"),
    ({"RANK": "-1"}, "RANK='-1' must be a whole number from 0 to 0"),
    ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, "RANK='2'"),
    ({"LOCAL_RANK": "x"}, "LOCAL_RANK='x'"),
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 without MASTER_ADDR and MASTER_PORT"),
])
def test_a_launch_environment_torchrun_would_not_set_is_refused(monkeypatch, environment, message):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match=message):
        distributed.setup("cpu")


def test_the_global_batch_splits_evenly():
    ctx = distributed.Context(rank=1, world_size=8, local_rank=1, device=torch.device("cpu"))
    assert distributed.per_rank_batch(128, ctx) == 16
    with pytest.raises(ValueError, match="does not split evenly over 8"):
        distributed.per_rank_batch(12, ctx)
