"""Checkpoints in the official format: `{'model': {'name', 'args', 'sd'}, ...}`, loaded as data, saved atomically.

Training checkpoints add `optimizer`, `epoch` and `config` beside `model`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from utils import atomic_file

from .registry import UnknownModelError, make
from .state_dict import CheckpointError

REASON_CHARS = 120  # how long a load failure's reason may be
# How a file torch.save wrote starts: a zip archive (torch >= 1.6), or a pickle (the legacy format).
CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")
# The dry run that checks a loaded super-resolution model: encode a blank LR image of this size (rounded up to the
# encoder's tile multiple) and render it at this scale; a spec that builds a model whose parts do not fit fails here.
DRY_RUN_LR_SIZE = 8
DRY_RUN_SCALE = 2


def _load_failure(exc: Exception) -> str:
    """A short reason for a failed weights-only load (torch's own messages run to several paragraphs)."""
    text = str(exc)
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported:
        return f"it holds a Python object ({unsupported.group(1)}); checkpoints are loaded as data only"
    if text.startswith("Weights only load failed"):
        return "not a PyTorch checkpoint file"
    first = text.strip().splitlines()[0].split(" (")[0] if text.strip() else type(exc).__name__
    return first if len(first) <= REASON_CHARS else first[:REASON_CHARS] + "…"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True` (a checkpoint is data, never code) and check its structure:
    `{'model': {'name': str, 'args': dict, 'sd': {str: tensor}}, ...}`. Every failure is one CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}" if not path.is_dir() else f"{path} is a folder, "
                              "not a checkpoint")
    try:
        with open(path, "rb") as f:
            head = f.read(max(len(m) for m in CHECKPOINT_MAGIC))
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not head.startswith(CHECKPOINT_MAGIC):
        raise CheckpointError(f"{path} is not a readable checkpoint (not a PyTorch checkpoint file)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001  arbitrary bytes make the unpickler raise anything (KeyError, ...)
        raise CheckpointError(f"{path} is not a readable checkpoint ({_load_failure(exc)})") from None
    check_payload(ckpt, str(path))
    return ckpt


def check_payload(ckpt: Any, label: str) -> None:
    """CheckpointError unless `ckpt` has the official structure (see load_checkpoint) with finite weights."""
    expected = "expected {'model': {'name', 'args', 'sd'}}"
    model = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(model, dict):
        raise CheckpointError(f"{label} is not a ContinuousSR checkpoint ({expected})")
    name, args, state = model.get("name"), model.get("args", {}), model.get("sd")
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{label} names no model: its 'model' entry has no 'name' string ({expected})")
    if args is not None and not isinstance(args, dict):
        raise CheckpointError(f"{label}: the model's 'args' is a {type(args).__name__}, not a mapping")
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in state.items()):
        raise CheckpointError(f"{label}: the model's 'sd' is not a state dict (names → tensors)")
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{label} holds non-finite weights ({bad:,} NaN or infinite values in {key}): "
                                  "the file is damaged or the training diverged")


def model_from_checkpoint(ckpt: str | os.PathLike | Mapping[str, Any],
                          map_location: str | torch.device = "cpu") -> nn.Module:
    """Build the model a checkpoint (or a path to one) describes and load its weights strictly."""
    if not isinstance(ckpt, Mapping):
        ckpt = load_checkpoint(ckpt, map_location)
    else:
        check_payload(ckpt, "checkpoint")
    spec = ckpt["model"]
    try:
        return make(spec, load_sd=True)
    except UnknownModelError as exc:
        raise CheckpointError(f"checkpoint names an {exc}") from None
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001  a constructor given impossible args can fail in any way
        raise CheckpointError(f"checkpoint arguments build no valid {spec['name']!r} model: "
                              f"{_load_failure(exc)}") from None


def dry_run(model: nn.Module, device: torch.device | str) -> None:
    """Encode a blank image and render it, as a check that the model's parts fit one another: CheckpointError if
    they do not (say an encoder whose features the head cannot take)."""
    multiple = int(getattr(getattr(model, "encoder", None), "tile_multiple", 1) or 1)
    size = -(-DRY_RUN_LR_SIZE // multiple) * multiple
    try:
        with torch.inference_mode():
            field = model.encode(torch.zeros(1, 3, size, size, device=device))
            out = model.render(field, scale=DRY_RUN_SCALE)
    except Exception as exc:  # noqa: BLE001  any failure here means the checkpoint's model cannot be used
        raise CheckpointError(f"the checkpoint's model does not run ({_load_failure(exc)})") from None
    expected = (1, 3, size * DRY_RUN_SCALE, size * DRY_RUN_SCALE)
    if tuple(out.shape) != expected:
        raise CheckpointError(f"the checkpoint's model renders {tuple(out.shape)} where {expected} was asked for")


def sr_model_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """A checkpoint's super-resolution model (one with encode/render) on `device`, in eval mode, checked by a
    dry run (every failure a CheckpointError)."""
    model = model_from_checkpoint(path)
    if not all(callable(getattr(model, name, None)) for name in ("encode", "render")):
        raise CheckpointError(f"{path} holds a {type(model).__name__}, not a ContinuousSR model (encode/render)")
    model = model.to(device).eval()
    dry_run(model, device)
    return model


def model_payload(spec: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """The official `{'name', 'args', 'sd'}` entry for a model built from `spec`, weights on the CPU."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"name": spec["name"], "args": dict(spec.get("args") or {}), "sd": state}


def save_checkpoint(ckpt: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write to a temporary file beside `path` (utils.atomic_file: checked complete, flushed to disk), then rename:
    never a half-written file, and a full disk is reported as one (torch.save's own error says "unexpected pos")."""
    with atomic_file(path) as f:
        torch.save(dict(ckpt), f)
