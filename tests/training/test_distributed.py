"""torch.distributed helpers: the context of a lone process, batch splitting, sums over ranks."""
from __future__ import annotations

import pytest
import torch

from training import distributed


def test_alone_is_rank_zero_of_one(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = distributed.setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed, ctx.device) == (0, 1, True, False,
                                                                                    torch.device("cpu"))
    value = torch.tensor([1.5, 2.0])
    assert torch.equal(distributed.all_reduce_sum(value, ctx), value)
    distributed.cleanup(ctx)


def test_the_global_batch_splits_evenly():
    ctx = distributed.Context(rank=1, world_size=8, local_rank=1, device=torch.device("cpu"))
    assert distributed.per_rank_batch(128, ctx) == 16
    with pytest.raises(ValueError, match="does not split evenly over 8"):
        distributed.per_rank_batch(12, ctx)
