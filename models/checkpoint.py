"""Checkpoints in the official format: `{'model': {'name', 'args', 'sd'}, ...}`, loaded as data, saved atomically.

Training checkpoints add `optimizer`, `epoch` and `config` beside `model`.
"""
from __future__ import annotations

import os
import pickle
import re
import struct
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from utils import atomic_path

from .registry import UnknownModelError, make
from .state_dict import CheckpointError

REASON_CHARS = 120  # how long a load failure's reason may be


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
    """Read a checkpoint with `weights_only=True` (a checkpoint is data, never code) and check its shape."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, struct.error, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({_load_failure(exc)})") from None
    model = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(model, dict) or not {"name", "sd"} <= model.keys():
        raise CheckpointError(f"{path} is not a ContinuousSR checkpoint (expected {{'model': {{'name', 'args', "
                              "'sd'}}}})")
    return ckpt


def model_from_checkpoint(ckpt: str | os.PathLike | Mapping[str, Any],
                          map_location: str | torch.device = "cpu") -> nn.Module:
    """Build the model a checkpoint (or a path to one) describes and load its weights strictly."""
    if not isinstance(ckpt, Mapping):
        ckpt = load_checkpoint(ckpt, map_location)
    spec = ckpt["model"]
    try:
        return make(spec, load_sd=True)
    except UnknownModelError as exc:
        raise CheckpointError(f"checkpoint names an {exc}") from None
    except TypeError as exc:
        raise CheckpointError(f"checkpoint arguments do not fit model {spec['name']!r}: {exc}") from None


def sr_model_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """A checkpoint's super-resolution model (one with encode/render) on `device`, in eval mode."""
    model = model_from_checkpoint(path)
    if not all(callable(getattr(model, name, None)) for name in ("encode", "render")):
        raise CheckpointError(f"{path} holds a {type(model).__name__}, not a ContinuousSR model (encode/render)")
    return model.to(device).eval()


def model_payload(spec: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """The official `{'name', 'args', 'sd'}` entry for a model built from `spec`, weights on the CPU."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"name": spec["name"], "args": dict(spec.get("args") or {}), "sd": state}


def save_checkpoint(ckpt: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename: never a half-written file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(dict(ckpt), f)
