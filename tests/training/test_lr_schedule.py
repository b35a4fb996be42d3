"""The schedule check over a whole run: the same verdict as stepping the scheduler through every epoch, in time
that does not grow with the run."""
from __future__ import annotations

import itertools
import math
import time

import pytest
import torch

from training.lr_schedule import check_lr_schedule

LR = 1e-2
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")


def scheduler(name: str, **args) -> torch.optim.lr_scheduler.LRScheduler:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    return getattr(torch.optim.lr_scheduler, name)(optimizer, **args)


def stepped_verdict(name: str, args: dict, epoch_max: int) -> bool:
    """The reference: step a fresh scheduler through every epoch and look at each lr (an overflow that torch
    raises is a refusal too)."""
    sched = scheduler(name, **args)
    for _ in range(epoch_max):
        try:
            sched.step()
        except OverflowError:
            return False
        lr = sched.optimizer.param_groups[0]["lr"]
        if not math.isfinite(lr) or lr < 0:
            return False
    return True


def checked_verdict(name: str, args: dict, epoch_max: int) -> bool:
    try:
        check_lr_schedule(scheduler(name, **args), epoch_max)
    except ValueError:
        return False
    return True


CASES = [("StepLR", dict(step_size=s, gamma=g)) for s, g in itertools.product((1, 3, 7), (0.5, 1.0, 0.0, -0.5, 1e5))]
CASES += [("MultiStepLR", dict(milestones=m, gamma=g))
          for m, g in itertools.product(([2, 5], [5, 5, 9], [40]), (0.1, -2.0, 1e200, math.nan))]
CASES += [("CosineAnnealingLR", dict(T_max=t, eta_min=e))
          for t, e in itertools.product((1, 4, 10, 25), (0.0, 1e-4, -1e-3, 0.5, math.inf))]


@pytest.mark.parametrize("name,args", CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("epoch_max", [1, 6, 30])
def test_the_closed_form_agrees_with_stepping_through_every_epoch(name, args, epoch_max):
    assert checked_verdict(name, args, epoch_max) == stepped_verdict(name, args, epoch_max)


def test_a_run_of_any_length_is_checked_at_once():
    """10^15 epochs: stepping would never end; the check takes the time of a few epochs, and still finds the
    overflow that only the last epochs reach."""
    start = time.perf_counter()
    check_lr_schedule(scheduler("StepLR", step_size=10, gamma=0.5), 10 ** 15)
    check_lr_schedule(scheduler("CosineAnnealingLR", T_max=10 ** 14), 10 ** 15)
    with pytest.raises(ValueError, match="the lr would be inf after epoch 10000000"):
        check_lr_schedule(scheduler("StepLR", step_size=10, gamma=1.1), 10 ** 7)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("name,args", [("StepLR", dict(step_size=0)), ("StepLR", dict(step_size="3")),
                                       ("StepLR", dict(step_size=2, gamma="x")),
                                       ("CosineAnnealingLR", dict(T_max=0)),
                                       ("MultiStepLR", dict(milestones=[2], gamma="x"))])
def test_arguments_of_the_wrong_type_or_range_raise_what_the_config_check_reports(name, args):
    with pytest.raises((TypeError, ValueError, ZeroDivisionError)):
        check_lr_schedule(scheduler(name, **args), 10)
