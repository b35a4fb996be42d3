"""training/optim.py: the warm-up's factor, and the lr it lends an optimizer step (restored even when the step fails)."""
from __future__ import annotations

import pytest
import torch

from training.optim import warmed_up, warmup_factor


def test_the_warmup_factor_rises_linearly_to_one():
    assert [warmup_factor(k, 4) for k in (1, 2, 4, 5, 100)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    assert warmup_factor(1, 0) == 1.0  # no warm-up


def test_warmed_up_scales_every_group_for_the_step_and_restores_it_after_a_failure():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [param], "lr": 0.5}, {"params": [torch.nn.Parameter(torch.zeros(1))]}],
                                lr=0.1)
    with pytest.raises(RuntimeError), warmed_up(optimizer, 0.1):
        assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.05, 0.01])
        raise RuntimeError("a step that fails")
    assert [group["lr"] for group in optimizer.param_groups] == [0.5, 0.1]
