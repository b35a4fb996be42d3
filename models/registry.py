"""Model registry: every model is built from a `{'name', 'args', 'sd'}` spec (the LIIF convention)."""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from utils import Registry, UnknownNameError

from .state_dict import load_state_dict_strict


class UnknownModelError(UnknownNameError):
    """A spec or checkpoint naming no registered model."""


_registry = Registry("model", UnknownModelError)
models = _registry.entries
register = _registry.register
register_lazy = _registry.register_lazy


def make(spec: dict[str, Any], args: dict[str, Any] | None = None, load_sd: bool = False) -> nn.Module:
    """Build the model a spec names; `args` override the spec's own, `load_sd` loads `spec['sd']` strictly."""
    model = _registry.build(spec, args)
    if load_sd:
        if "sd" not in spec:
            raise KeyError(f"spec for {spec['name']!r} has no 'sd' to load")
        load_state_dict_strict(model, spec["sd"])
    return model
