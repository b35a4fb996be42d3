"""Test configs (the official/LIIF test format; docs/DESIGN.md §7): their schema and its checks, and the checks of
a run's own options (--scales, --workers).

Config keys (any other key is an error):
  test_dataset:  {dataset: {name, args}, wrapper: {name, args}, batch_size: 1}
                 e.g. image-folder + sr-implicit-downsampled (LR made on the fly) or paired-image-folders +
                 sr-implicit-paired (the benchmark's own LR images; the LR and HR folders may come in either
                 order, the wrapper takes the larger image of each pair as the HR).
  eval_type:     benchmark-S (PSNR on Y, shave ceil(S)) or div2k-S (PSNR on RGB, shave ceil(S) + 6); SSIM on Y.
  data_norm:     optional {inp: {sub, div}, gt: {sub, div}}: the model sees (inp − sub) / div, its output is
                 mapped back by · div + sub (identity by default).
  data_root:     optional folder that relative dataset paths (root_path, root_path_1, root_path_2) are joined to;
                 test.py's --root overrides it; default ./load (LIIF's layout: load/benchmark/Set5/HR, …).
"""
from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Sequence

import torch

import datasets
from evaluation.metrics import EvalProtocol
from utils import UsageError, load_yaml

# Config layout: key → required?
CONFIG_KEYS = {"test_dataset": True, "eval_type": True, "data_norm": False, "data_root": False}
TEST_DATASET_KEYS = {"dataset": True, "wrapper": True, "batch_size": False}
SPEC_KEYS = {"name": True, "args": False}
DATA_NORM_KEYS = ("inp", "gt")
NORM_KEYS = ("sub", "div")
ON_THE_FLY_WRAPPER = "sr-implicit-downsampled"
# Arguments a test-time wrapper must leave at their defaults (test images are whole and not augmented).
TRAINING_ONLY_ARGS = ("inp_size", "augment")


def _check_keys(mapping: Any, allowed: dict[str, bool], where: str) -> None:
    if not isinstance(mapping, dict):
        raise UsageError(f"{where} must be a mapping, got {type(mapping).__name__}")
    unknown = [k for k in mapping if k not in allowed]
    if unknown:
        raise UsageError(f"unknown key {unknown[0]!r} in {where} (allowed: {', '.join(allowed)})")
    missing = [k for k, required in allowed.items() if required and k not in mapping]
    if missing:
        raise UsageError(f"missing key {missing[0]!r} in {where}")


def _check_spec_args(spec: dict, registry: dict, where: str, injected: Sequence[str] = ()) -> None:
    """The spec names a registered class and passes only arguments its constructor takes."""
    _check_keys(spec, SPEC_KEYS, where)
    name = spec["name"]
    if not isinstance(name, str) or name not in registry:
        kind = where.rsplit(".", 1)[-1]
        raise UsageError(f"unknown {kind} {name!r} in {where} (known: {', '.join(sorted(registry))})")
    args = spec.get("args") or {}
    if not isinstance(args, dict):
        raise UsageError(f"{where}.args must be a mapping")
    parameters = {p: v for p, v in inspect.signature(registry[name]).parameters.items() if p not in injected}
    accepted = list(parameters)
    unknown = [k for k in args if k not in accepted]
    if unknown:
        raise UsageError(f"unknown key {unknown[0]!r} in {where}.args ({name} takes: {', '.join(accepted)})")
    missing = [p for p, v in parameters.items() if v.default is v.empty and p not in args
               and v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
    if missing:
        raise UsageError(f"missing key {missing[0]!r} in {where}.args ({name} needs it)")


def validate_config(config: Any) -> EvalProtocol:
    """Check a test config's keys and values; returns its scoring protocol."""
    _check_keys(config, CONFIG_KEYS, "the config")
    spec = config["test_dataset"]
    _check_keys(spec, TEST_DATASET_KEYS, "test_dataset")
    _check_spec_args(spec["dataset"], datasets.datasets, "test_dataset.dataset")
    _check_spec_args(spec["wrapper"], datasets.datasets, "test_dataset.wrapper", injected=("dataset",))
    if spec.get("batch_size", 1) != 1:
        raise UsageError(f"test_dataset.batch_size must be 1 (test images differ in size), got {spec['batch_size']}")
    repeat = (spec["dataset"].get("args") or {}).get("repeat", 1)
    if repeat != 1:  # a score covers each image once (and a huge repeat would only be refused for its memory)
        raise UsageError(f"test_dataset.dataset.args.repeat must be 1 at test time (each image scored once), "
                         f"got {repeat!r}")
    wrapper_args = spec["wrapper"].get("args") or {}
    for name in TRAINING_ONLY_ARGS:
        if wrapper_args.get(name):
            raise UsageError(f"test_dataset.wrapper.args.{name} must be unset at test time (whole images)")
    try:
        protocol = EvalProtocol.from_eval_type(config["eval_type"])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if spec["wrapper"]["name"] == ON_THE_FLY_WRAPPER:
        low = wrapper_args.get("scale_min", 1)
        high = wrapper_args.get("scale_max", low)
        if not low == high == protocol.scale:
            raise UsageError(f"the wrapper's scale (scale_min {low}, scale_max {high}) does not match eval_type "
                             f"{config['eval_type']} (x{protocol.scale:g})")
    if not isinstance(config.get("data_root", ""), str):
        raise UsageError(f"data_root must be a folder path, got {config['data_root']!r}")
    parse_data_norm(config.get("data_norm"))
    return protocol


def load_config(path: str | Path) -> dict:
    """Read (utils.load_yaml, the project's one YAML reading) and validate a test config."""
    config = load_yaml(path)
    try:
        validate_config(config)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None
    return config

def parse_data_norm(data_norm: Any) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{'inp': (sub, div), 'gt': (sub, div)} as (1, C, 1, 1) tensors; identity where not given."""
    data_norm = data_norm or {}
    _check_keys(data_norm, {k: False for k in DATA_NORM_KEYS}, "data_norm")
    parsed = {}
    for part in DATA_NORM_KEYS:
        entry = data_norm.get(part) or {}
        _check_keys(entry, {k: False for k in NORM_KEYS}, f"data_norm.{part}")
        values = []
        for key, default in zip(NORM_KEYS, (0.0, 1.0)):
            raw = entry.get(key, [default])
            raw = raw if isinstance(raw, list) else [raw]
            if len(raw) not in (1, 3) or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in raw):
                raise UsageError(f"data_norm.{part}.{key} must be one finite number or three, got {raw}")
            values.append(torch.tensor(raw, dtype=torch.float32).view(1, -1, 1, 1))
        if torch.any(values[1] == 0):
            raise UsageError(f"data_norm.{part}.div must not be 0")
        parsed[part] = (values[0], values[1])
    return parsed

def check_workers(workers: int) -> None:
    """The data loader's process count must be ≥ 0 (0: load in this process)."""
    if workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {workers}")


def parse_scales(text: str) -> list[float]:
    """'2,3,4' → [2.0, 3.0, 4.0] (sorted, unique, positive)."""
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise UsageError(f"--scales must be comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise UsageError(f"--scales must be positive numbers, got {text!r}")
    return values
