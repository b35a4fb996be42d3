"""Checking an epoch learning-rate schedule over a whole run before the run starts, in time that does not grow
with the run's length: from each scheduler's closed form, not by stepping it through every epoch (a run of 10^12
epochs must be refused or started at once, not hang in its checks).

The schedules (torch.optim.lr_scheduler, as train.py builds them; lr_0 is a group's initial lr, e the epoch):
    StepLR(step_size, gamma)          lr_0 · gamma^(e // step_size)
    MultiStepLR(milestones, gamma)    lr_0 · gamma^(number of milestones ≤ e)
    CosineAnnealingLR(T_max, eta_min) eta_min + (lr_0 − eta_min)·(1 + cos(π·e / T_max)) / 2,
                                      between lr_0 and eta_min (reached at T_max)
The magnitude of gamma^k is monotonic in k, so the first and the last power the run reaches bound every value
(and a negative gamma is refused by the first odd power, which StepLR reaches at once and MultiStepLR at one of
its milestones).
"""
from __future__ import annotations

import bisect
import math
import warnings

from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, MultiStepLR, StepLR


def _power(lr: float, gamma: float, k: int) -> float:
    """lr · gamma^k, infinite where it overflows."""
    try:
        return lr * gamma ** k
    except OverflowError:
        return math.inf


def _extremes(scheduler: LRScheduler, epoch_max: int) -> list[tuple[int, float]]:
    """(epoch, lr) pairs that bound every lr of the run's epochs 1..epoch_max, for each parameter group."""
    bounds = []
    for lr in (float(base) for base in scheduler.base_lrs):
        if isinstance(scheduler, StepLR):
            step_size, gamma = scheduler.step_size, float(scheduler.gamma)
            if not isinstance(step_size, int) or step_size < 1:
                raise ValueError(f"step_size must be a whole number ≥ 1, got {step_size!r}")
            last = epoch_max // step_size
            bounds += [(k * step_size, _power(lr, gamma, k)) for k in {1, last} if 1 <= k <= last]
        elif isinstance(scheduler, MultiStepLR):
            gamma = float(scheduler.gamma)
            milestones = sorted(scheduler.milestones.elements())  # a milestone given twice counts twice
            reached = sorted({m for m in milestones if 1 <= m <= epoch_max})  # as many as the config lists
            bounds += [(m, _power(lr, gamma, bisect.bisect_right(milestones, m))) for m in reached]
        elif isinstance(scheduler, CosineAnnealingLR):
            t_max, eta_min = scheduler.T_max, float(scheduler.eta_min)
            if not (isinstance(t_max, (int, float)) and math.isfinite(t_max) and t_max > 0):
                raise ValueError(f"T_max must be a positive number of epochs, got {t_max!r}")
            if epoch_max >= t_max:  # the run reaches (about) T_max, where the lr is eta_min
                bounds.append((math.ceil(t_max), eta_min))
            else:  # it stops on the way down
                bounds.append((epoch_max, eta_min + (lr - eta_min) * (1 + math.cos(math.pi * epoch_max / t_max)) / 2))
        else:
            raise TypeError(f"no closed form to check a {type(scheduler).__name__} over the run")
    return bounds


def check_lr_schedule(scheduler: LRScheduler, epoch_max: int) -> None:
    """ValueError (one line) unless `scheduler` gives a finite, non-negative lr at every epoch up to `epoch_max`.

    The scheduler is stepped once (torch raises for arguments of the wrong type only when stepping); every later
    epoch is checked from the closed form, at the epochs that bound the run's lrs."""
    with warnings.catch_warnings():  # stepped on its own, without an optimizer step: not a training loop
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()
    for epoch, lr in _extremes(scheduler, epoch_max):
        if not math.isfinite(lr) or lr < 0:
            raise ValueError(f"the lr would be {lr:g} after epoch {epoch}")
