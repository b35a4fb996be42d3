"""Model registry: every model is built from a `{'name', 'args', 'sd'}` spec (the LIIF convention)."""
from __future__ import annotations

import copy
from typing import Any, Callable

import torch.nn as nn

models: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable:
    """Class decorator that makes a model constructible by `make({'name': name, ...})`."""

    def decorator(cls):
        if name in models:
            raise ValueError(f"model name {name!r} registered twice")
        models[name] = cls
        return cls

    return decorator


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return self.args[0]


def make(spec: dict[str, Any], args: dict[str, Any] | None = None, load_sd: bool = False) -> nn.Module:
    """Build the model a spec names; `args` override the spec's own, `load_sd` loads `spec['sd']` strictly."""
    name = spec.get("name") if isinstance(spec, dict) else None
    if name not in models:
        known = ", ".join(sorted(models))
        raise UnknownModelError(f"unknown model {name!r} (known: {known})")
    model_args = copy.deepcopy(spec.get("args") or {})
    if args is not None:
        model_args.update(args)
    model = models[name](**model_args)
    if load_sd:
        if "sd" not in spec:
            raise KeyError(f"spec for {name!r} has no 'sd' to load")
        from .checkpoint import load_state_dict_strict

        load_state_dict_strict(model, spec["sd"])
    return model
