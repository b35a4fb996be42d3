"""Model registry: every model is built from a `{'name', 'args', 'sd'}` spec (the LIIF convention)."""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Iterator

import torch
import torch.nn as nn
from torch.nn.modules.module import (register_module_buffer_registration_hook,
                                      register_module_parameter_registration_hook)

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


_checking = False  # a check_buildable is building its model
# What a constructor raises for arguments that build no model; the first three say so in their own words.
SELF_EXPLAINING_ERRORS = (RuntimeError, ValueError, TypeError)
BUILD_ERRORS = SELF_EXPLAINING_ERRORS + (ArithmeticError, LookupError)


class _WeightBudget:
    """Adds up the bytes of every parameter and buffer registered while a model is built, and stops the build
    (UnbuildableModelError) as soon as they pass `limit`: a model too large for the machine is refused early,
    however many layers its arguments ask for."""

    def __init__(self, name: str, limit: int | None):
        self.name, self.limit, self.total = name, limit, 0

    def __call__(self, module: nn.Module, name: str, tensor: torch.Tensor | None) -> None:
        if tensor is None:
            return
        self.total += tensor.numel() * tensor.element_size()
        if self.limit is not None and self.total > self.limit:
            raise UnbuildableModelError(f"{self.name!r} with these arguments has weights of more than this "
                                        f"machine's {self.limit / 2**30:,.0f} GiB of memory")

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        hooks = [register_module_parameter_registration_hook(self),
                 register_module_buffer_registration_hook(self)]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()


def check_buildable(spec: dict[str, Any], args: dict[str, Any] | None = None) -> None:
    """Build the model on the meta device, which allocates nothing, and refuse (UnbuildableModelError) sizes that
    build no model (a negative size), a weight with no elements (a size of 0), or weights larger than the machine's
    memory (counted as the layers are made, so the build stops there): refused in one line before anything is
    allocated, whatever argument or model makes them. A model whose construction reads tensor values (which
    meta tensors do not hold) is not checked here. Within that build, the parts a model makes (its encoder) are
    counted by the whole's check, not checked again."""
    global _checking
    if _checking:
        return
    budget = _WeightBudget(spec["name"], host_memory_bytes())
    _checking = True
    try:
        with torch.device("meta"), warnings.catch_warnings(), budget.watching():
            warnings.simplefilter("ignore")  # torch warns that zero-element weights are not initialised
            model = _registry.build(spec, args)
    except NotImplementedError:  # a constructor that reads a tensor's values: it is built for real
        return
    except (UnbuildableModelError, UnknownNameError):  # already the right error
        raise
    except BUILD_ERRORS as exc:  # e.g. a negative size, a width of 0 divided by the heads, an unknown argument
        kind = "" if isinstance(exc, SELF_EXPLAINING_ERRORS) else f"{type(exc).__name__}: "
        message = (str(exc).strip().splitlines() or [""])[0]
        raise UnbuildableModelError(f"{spec['name']!r} cannot be built with these arguments: {kind}{message}") from None
    finally:
        _checking = False
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    empty = [name for name, t in tensors.items() if t.numel() == 0]
    if empty:
        raise UnbuildableModelError(f"{spec['name']!r} with these arguments has a weight with no elements "
                                    f"({empty[0]}, shape {list(tensors[empty[0]].shape)}): a size argument is 0")


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
