"""Strict state-dict loading with one-line errors, below both the registry (`make(spec, load_sd=True)`) and
checkpoint I/O, so that neither imports the other's module back (no import cycle)."""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

KEYS_SHOWN = 5  # how many missing/unexpected key names a mismatch error lists


class CheckpointError(Exception):
    """A checkpoint that cannot be read or does not fit its model; the message is one line for the user."""


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """`load_state_dict(strict=True)` with an error that names the first few mismatching keys and shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
                   for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if keys:
            more = f" (+{len(keys) - KEYS_SHOWN} more)" if len(keys) > KEYS_SHOWN else ""
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:KEYS_SHOWN])}{more}")
    if problems:
        raise CheckpointError(f"state dict does not match {type(model).__name__}: {'; '.join(problems)}")
    model.load_state_dict(state_dict, strict=True)
