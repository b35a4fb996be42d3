"""Optimisation of a training run: the optimizer and lr scheduler a config names (checked over the whole run before
any work), the warm-up, the moving average of the weights, and the random state a checkpoint resumes.
"""
from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

from training.config import ConfigError
from training.lr_schedule import check_lr_schedule
from utils import one_line

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULERS = {"step_lr": torch.optim.lr_scheduler.StepLR, "multi_step_lr": torch.optim.lr_scheduler.MultiStepLR,
              "cosine_annealing_lr": torch.optim.lr_scheduler.CosineAnnealingLR}


# Errors that torch's optimizers and schedulers raise for arguments of the wrong type or value.
BAD_ARGUMENT_ERRORS = (TypeError, ValueError, ZeroDivisionError, KeyError, AttributeError, OverflowError)


@contextlib.contextmanager
def refusing_bad_args(key: str, spec: dict[str, Any]) -> Iterator[None]:
    """Report torch's error for a bad argument of the optimizer or lr_scheduler `spec` as a config error."""
    try:
        yield
    except ConfigError:
        raise
    except BAD_ARGUMENT_ERRORS as exc:
        raise ConfigError(f"{key} {spec.get('name')!r} with args {spec.get('args')}: {one_line(exc)}") from None


def check_optimisation(cfg: dict[str, Any]) -> None:
    """Build the optimizer and the lr scheduler on a throwaway parameter, step the optimizer once and check the
    schedule over all epoch_max epochs (training.lr_schedule, in constant time): an argument that would fail (or
    give a non-finite lr) only after an epoch or a hundred fails now, before any work."""
    param = nn.Parameter(torch.zeros(1))
    param.grad = torch.zeros(1)
    with refusing_bad_args("optimizer", cfg["optimizer"]):
        optimizer = make_optimizer(cfg, [param])
    with refusing_bad_args("lr_scheduler", cfg["lr_scheduler"]):
        scheduler = make_scheduler(cfg, optimizer)
    with refusing_bad_args("optimizer", cfg["optimizer"]):
        optimizer.step()
    if scheduler is None:
        return
    with refusing_bad_args("lr_scheduler", cfg["lr_scheduler"]):
        check_lr_schedule(scheduler, cfg["epoch_max"])


def make_optimizer(cfg: dict[str, Any], params) -> torch.optim.Optimizer:
    spec = cfg["optimizer"]
    if spec["name"] not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {spec['name']!r} (known: {', '.join(OPTIMIZERS)})")
    return OPTIMIZERS[spec["name"]](params, **(spec.get("args") or {}))


def make_scheduler(cfg: dict[str, Any], optimizer: torch.optim.Optimizer):
    spec = cfg["lr_scheduler"]
    if spec is None:
        return None
    if spec.get("name") not in SCHEDULERS:
        raise ConfigError(f"unknown lr_scheduler {spec.get('name')!r} (known: {', '.join(SCHEDULERS)})")
    return SCHEDULERS[spec["name"]](optimizer, **(spec.get("args") or {}))


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The lr multiplier of the run's `step`-th step (1-based): step / warmup_steps during the warm-up, else 1."""
    return min(1.0, step / warmup_steps) if warmup_steps else 1.0


@contextlib.contextmanager
def warmed_up(optimizer: torch.optim.Optimizer, factor: float) -> Iterator[None]:
    """Every group's lr times `factor` for the enclosed optimizer step, restored after: the epoch scheduler (whose
    chainable forms read the current lr) never sees the warm-up."""
    saved = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * factor
    try:
        yield
    finally:
        for group, lr in zip(optimizer.param_groups, saved):
            group["lr"] = lr


def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter, in place; buffers are copied."""
    with torch.no_grad():
        for average, param in zip(ema.parameters(), model.parameters()):
            average.lerp_(param, 1.0 - decay)
        for average, buffer in zip(ema.buffers(), model.buffers()):
            average.copy_(buffer)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
