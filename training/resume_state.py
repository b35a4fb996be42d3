"""Checking a checkpoint's training state before a run resumes from it: every field `--resume` restores (the
counters, the RNG state, the optimizer's and the scheduler's state, the best PSNR) is checked against what this
run builds, and the first thing wrong is named in one line — never a traceback at the first step or epoch."""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from models import CheckpointError

REQUIRED = ("epoch", "optimizer")


SHOWN_CHARS = 80  # of a malformed value, in the message
MAX_COUNTER = 2**63 - 1  # counters are logged as int64 (TensorBoard's step)


def _shown(value: Any) -> str:
    """A value as one short line of the message."""
    text = " ".join(repr(value).split())
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_counters(ckpt: Mapping[str, Any]) -> None:
    for key in ("epoch", "step", "batch_in_epoch"):
        value = ckpt.get(key, 0)
        if not _whole(value) or not 0 <= value <= MAX_COUNTER:
            raise ValueError(f"{key!r} must be a whole number from 0 to 2**63 - 1, got {_shown(value)}")
    epoch = ckpt["epoch"]
    best_psnr, best_epoch = ckpt.get("best_psnr"), ckpt.get("best_epoch")
    if best_psnr is not None and (not isinstance(best_psnr, (int, float)) or isinstance(best_psnr, bool)
                                  or not math.isfinite(best_psnr)):
        raise ValueError(f"'best_psnr' must be a finite number or null, got {_shown(best_psnr)}")
    if best_epoch is not None and (not _whole(best_epoch) or not 1 <= best_epoch <= epoch):
        raise ValueError(f"'best_epoch' must be null or a whole number from 1 to the epoch {epoch}, got "
                         f"{_shown(best_epoch)}")
    if (best_psnr is None) != (best_epoch is None):
        raise ValueError("'best_psnr' and 'best_epoch' must be given together (or both null)")


def _check_rng(state: Any) -> None:
    if not isinstance(state, Mapping) or "torch" not in state:
        raise ValueError(f"'rng' must be a mapping with the 'torch' generator state, got {type(state).__name__}")
    expected = torch.get_rng_state()
    cpu = state["torch"]
    if not (isinstance(cpu, torch.Tensor) and cpu.dtype == expected.dtype and cpu.shape == expected.shape):
        raise ValueError(f"'rng.torch' must be a {expected.dtype} tensor of {expected.numel()} values, as "
                         "torch.get_rng_state() gives")
    cuda = state.get("cuda", [])
    if not (isinstance(cuda, (list, tuple)) and all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8
                                                    for t in cuda)):
        raise ValueError("'rng.cuda' must be a list of uint8 tensors, as torch.cuda.get_rng_state_all() gives")


def _same_layout(name: str, saved: Any, fresh: Any) -> None:
    """`saved` must have the keys and the kinds of value of `fresh` (the state this run's object gives)."""
    if isinstance(fresh, Mapping):
        if not isinstance(saved, Mapping):
            raise ValueError(f"{name!r} must be a mapping, got {type(saved).__name__}")
        missing = [k for k in fresh if k not in saved]
        if missing:
            raise ValueError(f"{name!r} lacks {', '.join(map(repr, missing))}")
        for key, value in fresh.items():
            _same_layout(f"{name}.{key}", saved[key], value)
    elif isinstance(fresh, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(fresh):
            raise ValueError(f"{name!r} must be a list of {len(fresh)}, got {_shown(saved)}")
        for i, (a, b) in enumerate(zip(saved, fresh)):
            _same_layout(f"{name}[{i}]", a, b)
    elif isinstance(fresh, bool) or fresh is None:
        if not isinstance(saved, bool) and saved is not None:
            raise ValueError(f"{name!r} must be true, false or null, got {_shown(saved)}")
    elif isinstance(fresh, (int, float)):
        if isinstance(saved, bool) or not isinstance(saved, (int, float)) or not math.isfinite(saved):
            raise ValueError(f"{name!r} must be a finite number, got {_shown(saved)}")


def _check_optimizer(saved: Any, optimizer: torch.optim.Optimizer) -> None:
    fresh = optimizer.state_dict()
    if not isinstance(saved, Mapping) or not isinstance(saved.get("state"), Mapping):
        raise ValueError("'optimizer' must be an optimizer's state_dict (a mapping with 'state' and 'param_groups')")
    _same_layout("optimizer.param_groups", saved.get("param_groups"), fresh["param_groups"])
    # state_dict() numbers the parameters in the order of its groups: index -> the parameter's shape
    shapes = dict(zip((i for group in fresh["param_groups"] for i in group["params"]),
                      (p.shape for group in optimizer.param_groups for p in group["params"])))
    for index, state in saved["state"].items():
        if index not in shapes or not isinstance(state, Mapping):
            raise ValueError(f"'optimizer.state' holds an entry {index!r} for no parameter of this model")
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                continue
            if value.dim() and value.shape != shapes[index]:  # a per-weight statistic, or a scalar (the step)
                raise ValueError(f"'optimizer.state[{index}].{key}' has shape {list(value.shape)}, its parameter "
                                 f"{list(shapes[index])}")
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise ValueError(f"'optimizer.state[{index}].{key}' holds non-finite values")


def check_resume_state(ckpt: Mapping[str, Any], optimizer: torch.optim.Optimizer,
                       scheduler: torch.optim.lr_scheduler.LRScheduler | None) -> None:
    """CheckpointError naming the first malformed part of the training state `ckpt` holds, for a run that builds
    `optimizer` and `scheduler` (fresh, as the config makes them)."""
    try:
        missing = [key for key in REQUIRED if key not in ckpt]
        if missing:
            raise ValueError(f"it lacks {', '.join(map(repr, missing))}")
        _check_counters(ckpt)
        if "rng" in ckpt:
            _check_rng(ckpt["rng"])
        _check_optimizer(ckpt["optimizer"], optimizer)
        if scheduler is not None and ckpt.get("lr_scheduler") is not None:
            _same_layout("lr_scheduler", ckpt["lr_scheduler"], scheduler.state_dict())
    except ValueError as exc:
        raise CheckpointError(f"cannot resume from this checkpoint: its training state is malformed: {exc}") from None
