"""The training state a run resumes from: a well-formed one passes; each malformed part is one line naming it."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from models import CheckpointError
from training.resume_state import check_resume_state


def fresh():
    """An optimizer and scheduler as a run builds them, over a two-tensor model."""
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    return params, optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 4], gamma=0.5)


@pytest.fixture(scope="module")
def saved() -> dict:
    """The state a run saves after three epochs (what train.py's checkpoint() holds besides the model)."""
    params, optimizer, scheduler = fresh()
    for _ in range(3):
        for p in params:
            p.grad = torch.ones_like(p)
        optimizer.step()
        scheduler.step()
    return {"epoch": 3, "step": 30, "batch_in_epoch": 0, "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(), "rng": {"torch": torch.get_rng_state()}, "best_psnr": 27.5,
            "best_epoch": 2}


def test_a_saved_state_passes(saved):
    _, optimizer, scheduler = fresh()
    check_resume_state(saved, optimizer, scheduler)
    check_resume_state({**saved, "best_psnr": None, "best_epoch": None, "lr_scheduler": None}, optimizer, None)


def _set(path: str, value):
    def change(state: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            state = state[int(key) if key.isdigit() else key]
        if value is DELETE:
            del state[last]
        else:
            state[int(last) if last.isdigit() else last] = value
    return change


DELETE = object()
MALFORMED = {
    "no epoch": (_set("epoch", DELETE), "lacks 'epoch'"),
    "epoch a string": (_set("epoch", "3"), "'epoch' must be a whole number"),
    "negative step": (_set("step", -1), "'step' must be a whole number"),
    "fractional batch": (_set("batch_in_epoch", 1.5), "'batch_in_epoch' must be a whole number"),
    "epoch true": (_set("epoch", True), "'epoch' must be a whole number"),
    "rng not a mapping": (_set("rng", [1, 2]), "'rng' must be a mapping"),
    "rng torch wrong size": (_set("rng.torch", torch.zeros(10, dtype=torch.uint8)), "'rng.torch' must be"),
    "rng torch a list": (_set("rng.torch", [0] * 5056), "'rng.torch' must be"),
    "rng cuda not tensors": (_set("rng.cuda", ["x"]), "'rng.cuda' must be"),
    "optimizer null": (_set("optimizer", None), "'optimizer' must be an optimizer's state_dict"),
    "optimizer groups a string": (_set("optimizer.param_groups", "x"), "'optimizer.param_groups' must be a list"),
    "lr a string": (_set("optimizer.param_groups.0.lr", "fast"), "'optimizer.param_groups[0].lr' must be a finite"),
    "lr nan": (_set("optimizer.param_groups.0.lr", math.nan), "'optimizer.param_groups[0].lr' must be a finite"),
    "betas of three": (_set("optimizer.param_groups.0.betas", (0.9, 0.99, 0.9)), "betas' must be a list of 2"),
    "params of another model": (_set("optimizer.param_groups.0.params", [0, 1, 2]), "params' must be a list of 2"),
    "state of no parameter": (_set("optimizer.state.7", {}), "'optimizer.state' holds an entry 7"),
    "state not finite": (_set("optimizer.state.0.exp_avg", torch.full((3,), math.inf)), "exp_avg' holds non-finite"),
    "scheduler a list": (_set("lr_scheduler", [1]), "'lr_scheduler' must be a mapping"),
    "scheduler epoch a string": (_set("lr_scheduler.last_epoch", "3"), "'lr_scheduler.last_epoch' must be a finite"),
    "scheduler without gamma": (_set("lr_scheduler.gamma", DELETE), "'lr_scheduler' lacks 'gamma'"),
    "best psnr infinite": (_set("best_psnr", math.inf), "'best_psnr' must be a finite number"),
    "best psnr a string": (_set("best_psnr", "high"), "'best_psnr' must be a finite number"),
    "best epoch after the epoch": (_set("best_epoch", 9), "'best_epoch' must be null or a whole number from 1 to"),
    "best psnr without its epoch": (_set("best_epoch", None), "must be given together"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_each_malformed_part_is_named_in_one_line(saved, case):
    change, message = MALFORMED[case]
    state = copy.deepcopy(saved)
    change(state)
    _, optimizer, scheduler = fresh()
    with pytest.raises(CheckpointError) as raised:
        check_resume_state(state, optimizer, scheduler)
    text = str(raised.value)
    assert message in text and "\n" not in text and text.startswith("cannot resume from this checkpoint: "), text
