"""Model registry: every model is built from a `{'name', 'args', 'sd'}` spec (the LIIF convention)."""
from __future__ import annotations

import os
import warnings
from typing import Any

import torch
import torch.nn as nn

from utils import Registry, UnknownNameError, UsageError

from .state_dict import load_state_dict_strict


class UnknownModelError(UnknownNameError):
    """A spec or checkpoint naming no registered model."""


_registry = Registry("model", UnknownModelError)
models = _registry.entries
register = _registry.register
register_lazy = _registry.register_lazy


class UnbuildableModelError(UsageError, ValueError):
    """Model arguments that build no model, or one whose weights could not be held in this machine's memory."""


def host_memory_bytes() -> int | None:
    """The machine's physical memory, where the system says (None elsewhere)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_buildable(spec: dict[str, Any], args: dict[str, Any] | None = None) -> None:
    """Build the model on the meta device, which allocates nothing, and refuse (UnbuildableModelError) sizes that
    build no model (a negative size), a weight with no elements (a size of 0), or weights larger than the machine's
    memory: refused in one line before anything is allocated, whatever argument or model makes them. A model whose
    construction reads tensor values (which meta tensors do not hold) is not checked here."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns that zero-element weights are not initialised
            model = _registry.build(spec, args)
    except NotImplementedError:  # a constructor that reads a tensor's values: it is built for real
        return
    except RuntimeError as exc:  # e.g. a negative size
        raise UnbuildableModelError(f"{spec['name']!r} cannot be built with these arguments: "
                                    f"{str(exc).strip().splitlines()[0]}") from None
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    empty = [name for name, t in tensors.items() if t.numel() == 0]
    if empty:
        raise UnbuildableModelError(f"{spec['name']!r} with these arguments has a weight with no elements "
                                    f"({empty[0]}, shape {list(tensors[empty[0]].shape)}): a size argument is 0")
    size, memory = sum(t.numel() * t.element_size() for t in tensors.values()), host_memory_bytes()
    if memory is not None and size > memory:
        raise UnbuildableModelError(f"{spec['name']!r} with these arguments has {size / 2**30:,.0f} GiB of weights, "
                                    f"more than this machine's {memory / 2**30:,.0f} GiB of memory")


def make(spec: dict[str, Any], args: dict[str, Any] | None = None, load_sd: bool = False) -> nn.Module:
    """Build the model a spec names (its sizes checked first, check_buildable); `args` override the spec's own,
    `load_sd` loads `spec['sd']` strictly."""
    check_buildable(spec, args)
    model = _registry.build(spec, args)
    if load_sd:
        if "sd" not in spec:
            raise KeyError(f"spec for {spec['name']!r} has no 'sd' to load")
        load_state_dict_strict(model, spec["sd"])
    return model
