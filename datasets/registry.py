"""Dataset registry: every dataset and wrapper is built from a `{'name', 'args'}` spec (the LIIF convention)."""
from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from utils import Registry, UnknownNameError


class UnknownDatasetError(UnknownNameError):
    """A spec naming no registered dataset or wrapper."""


_registry = Registry("dataset", UnknownDatasetError)
datasets = _registry.entries
register = _registry.register


def make(spec: dict[str, Any], args: dict[str, Any] | None = None) -> Dataset:
    """Build the dataset a spec names; `args` (e.g. the wrapped dataset) are added to, and override, the spec's."""
    return _registry.build(spec, args)
