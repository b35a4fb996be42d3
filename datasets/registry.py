"""Dataset registry: every dataset and wrapper is built from a `{'name', 'args'}` spec (the LIIF convention)."""
from __future__ import annotations

import copy
from typing import Any, Callable

from torch.utils.data import Dataset

datasets: dict[str, Callable[..., Dataset]] = {}


def register(name: str) -> Callable:
    """Class decorator that makes a dataset constructible by `make({'name': name, 'args': ...})`."""

    def decorator(cls):
        if name in datasets:
            raise ValueError(f"dataset name {name!r} registered twice")
        datasets[name] = cls
        return cls

    return decorator


class UnknownDatasetError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return self.args[0]


def make(spec: dict[str, Any], args: dict[str, Any] | None = None) -> Dataset:
    """Build the dataset a spec names; `args` (e.g. the wrapped dataset) are added to, and override, the spec's."""
    name = spec.get("name") if isinstance(spec, dict) else None
    if name not in datasets:
        known = ", ".join(sorted(datasets))
        raise UnknownDatasetError(f"unknown dataset {name!r} (known: {known})")
    dataset_args = copy.deepcopy(spec.get("args") or {})
    if args is not None:
        dataset_args.update(args)
    return datasets[name](**dataset_args)
