"""Training configs: YAML files merged over `DEFAULTS`, `--set key.sub=value` overrides, checks, atomic saving.

Config keys (YAML; every key but the three specs has a default; `--set key.sub=value` overrides any key, the
value parsed as YAML; `--path DIR` sets train_dataset.dataset.args.root_path, `--val-path DIR` the same for
val_dataset):
  train_dataset.dataset     dataset spec of the HR images, e.g. {name: image-folder, args: {root_path, repeat,
                            cache, first_k}} (datasets/)
  train_dataset.wrapper     sample spec, e.g. {name: sr-implicit-downsampled, args: {inp_size: 256 (the HR crop),
                            scale_min: 4, scale_max: 8, augment: true}}; one scale is drawn per batch
  train_dataset.batch_size  the GLOBAL batch (default 16): each of the N processes takes batch_size / N samples
                            (must divide), so a recipe means the same optimisation on any number of GPUs
  train_dataset.num_workers data-loader processes per training process (default 4)
  val_dataset               null (no validation, the default) or {dataset: spec of an HR folder, scales: [4, ...]}:
                            mean RGB PSNR of the clamped render at each scale (HR cropped to the LR grid, LR =
                            bicubic), over every image of the folder, split over the processes
  model                     model spec, e.g. {name: continuous-gaussian, args: {encoder_spec: {...}}}
  optimizer                 {name: adam | adamw, args} (default Adam, lr 1e-4)
  lr_scheduler              {name: step_lr | multi_step_lr | cosine_annealing_lr, args} stepped once per
                            epoch (default: halve the lr every 100 epochs), or null
  epoch_max                 epochs to train (default 1000)
  epoch_val                 validate every this many epochs, and after the last (default 1)
  epoch_save                also keep epoch-<n>.pth every this many epochs (default 0: only last and best)
  save_every_steps          also save last.pth every this many steps, mid-epoch (default 0: at epoch ends only)
  log_every_steps           TensorBoard loss / lr / gradient-norm every this many steps (default 50)
  val_samples               images per scale whose renders are kept as samples (default 2)
  seed                      seeds model initialisation, shuffling, scales, crops and flips (default 0)
  bf16                      bf16 autocast of the training steps' encoder and head, on CUDA or the CPU (default
                            false; the rasterizer and validation stay float32); the gain depends on the CPU, even
                            among those with AVX512-BF16 (measure: scripts/benchmark_train.py --bf16); on a CPU
                            without native bf16 it warns once and runs fp32 (bf16 would be far slower)
  grad_clip                 max gradient norm, or null (default)
  warmup_steps              the first N steps of a run take lr x step / N (step = 1..N), then the schedule's own
                            lr (default 0: none). A fine-tune (init_from) starts Adam's moments afresh, and its
                            first full-size steps move every weight by about lr; the warm-up keeps them small
  ema_decay                 null (default) or d in (0, 1): keep an exponential moving average of the weights,
                            ema <- d * ema + (1 - d) * weights after every step, starting from the initial
                            weights; validation, best.pth and every checkpoint's model are then the average
                            (what test.py, demo.py and bundle_model.py load), and the trained weights go in the
                            checkpoint's train_sd for resuming. Small batches make noisy steps; the average
                            keeps their mean (horizon about 1 / (1 - d) steps, e.g. 0.999: 1000)
  rasterizer_backend        auto | torch | numba | triton | ... (default auto)
  init_from                 null (default) or an official checkpoint whose model weights start a NEW run
                            (fine-tuning: fresh optimizer, scheduler and counters; the model specs must match);
                            ignored when resuming, where the resumed checkpoint's weights are used; with a
                            val set they are validated first (epoch 0), so best.pth is never worse than them
"""
from __future__ import annotations

import copy
import os
from typing import Any, Mapping, Sequence

import yaml

import utils
from utils import atomic_path, parse_yaml

DEFAULTS: dict[str, Any] = {
    "train_dataset": {"dataset": None, "wrapper": None, "batch_size": 16, "num_workers": 4},
    "val_dataset": None,
    "model": None,
    "optimizer": {"name": "adam", "args": {"lr": 1.0e-4}},
    "lr_scheduler": {"name": "step_lr", "args": {"step_size": 100, "gamma": 0.5}},
    "epoch_max": 1000,
    "epoch_val": 1,
    "epoch_save": 0,
    "save_every_steps": 0,
    "log_every_steps": 50,
    "val_samples": 2,
    "seed": 0,
    "bf16": False,
    "grad_clip": None,
    "warmup_steps": 0,
    "ema_decay": None,
    "rasterizer_backend": "auto",
    "init_from": None,
}
VAL_DEFAULTS: dict[str, Any] = {"dataset": None, "scales": [4]}
# Keys holding a spec ({name, args}): the required ones, and those that may be null.
REQUIRED = ("train_dataset.dataset", "train_dataset.wrapper", "model", "optimizer")
NULLABLE_SPECS = ("lr_scheduler",)
MAX_SEED = 2**32 - 1  # the largest seed numpy's and Python's generators all take
# Data-loader processes per CPU this process may run on: more only exhaust memory (each is a copy of the trainer).
MAX_WORKERS_PER_CPU = 8


class ConfigError(utils.UsageError, ValueError):
    """A training config that cannot be used; the message is one line for the user."""


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` over `base`, recursively; a spec (a dict with a 'name') replaces the default spec whole."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and "name" not in value:
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A training config file (utils.load_yaml, the project's one YAML reading); it must hold a mapping."""
    try:
        loaded = utils.load_yaml(path)
    except utils.UsageError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    return loaded


def set_key(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    """cfg[a][b][c] = value for dotted = 'a.b.c'; intermediate keys that are null or absent become mappings."""
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"bad config key {dotted!r}")
    node = cfg
    for depth, part in enumerate(parts[:-1]):
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            raise ConfigError(f"cannot set {dotted}: {'.'.join(parts[:depth + 1])} is not a mapping")
        node = node[part]
    node[parts[-1]] = value


def apply_overrides(cfg: dict[str, Any], assignments: Sequence[str]) -> dict[str, Any]:
    """Apply `key.sub=value` strings; values are parsed as YAML (numbers, booleans, null, lists, mappings)."""
    cfg = copy.deepcopy(cfg)
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key.sub=value, got {assignment!r}")
        try:
            value = parse_yaml(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot parse value {text!r}") from None
        set_key(cfg, key.strip(), value)
    return cfg


def get_key(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def is_number(value: Any) -> bool:
    """An int or float, not a bool (YAML's true and false are Python ints)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def complete(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config merged over the defaults and checked: unknown keys, missing keys and bad values are errors."""
    unknown = sorted(map(str, set(cfg) - set(DEFAULTS)))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)} (known: {', '.join(DEFAULTS)})")
    full = merge(DEFAULTS, cfg)
    unknown = sorted(map(str, set(full["train_dataset"]) - set(DEFAULTS["train_dataset"])))
    if unknown:
        raise ConfigError(f"unknown train_dataset key(s) {', '.join(unknown)}")
    if full["val_dataset"] is not None:
        if not isinstance(full["val_dataset"], Mapping):
            raise ConfigError("val_dataset must be a mapping or null")
        full["val_dataset"] = merge(VAL_DEFAULTS, full["val_dataset"])
        unknown = sorted(map(str, set(full["val_dataset"]) - set(VAL_DEFAULTS)))
        if unknown:
            raise ConfigError(f"unknown val_dataset key(s) {', '.join(unknown)}")
        if full["val_dataset"]["dataset"] is None:
            raise ConfigError("val_dataset needs a dataset spec (or set val_dataset to null)")
        check_spec("val_dataset.dataset", full["val_dataset"]["dataset"])
        scales = full["val_dataset"]["scales"]
        if not isinstance(scales, list) or not scales or not all(
                is_number(s) and s > 0 for s in scales):
            raise ConfigError(f"val_dataset.scales must be a non-empty list of positive numbers, got {scales!r}")
    for key in REQUIRED:
        check_spec(key, get_key(full, key))
    for key in NULLABLE_SPECS:
        if full[key] is not None:
            check_spec(key, full[key])
    for key in ("epoch_max", "epoch_val", "train_dataset.batch_size"):
        value = get_key(full, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    for key in ("epoch_save", "save_every_steps", "log_every_steps", "val_samples", "seed", "warmup_steps",
                "train_dataset.num_workers"):
        value = get_key(full, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{key} must be a non-negative integer, got {value!r}")
    workers, cpus = full["train_dataset"]["num_workers"], utils.usable_cpus()
    if workers > MAX_WORKERS_PER_CPU * cpus:
        raise ConfigError(f"train_dataset.num_workers {workers} is more than {MAX_WORKERS_PER_CPU} per CPU of this "
                          f"machine's {cpus}: at most {MAX_WORKERS_PER_CPU * cpus}")
    if full["seed"] > MAX_SEED:
        raise ConfigError(f"seed must be at most {MAX_SEED} (2**32 - 1), got {full['seed']}")
    clip = full["grad_clip"]
    if clip is not None and not (is_number(clip) and clip > 0):
        raise ConfigError(f"grad_clip must be a positive number or null, got {clip!r}")
    decay = full["ema_decay"]
    if decay is not None and not (is_number(decay) and 0 < decay < 1):
        raise ConfigError(f"ema_decay must be a number in (0, 1) or null, got {decay!r}")
    init_from = full["init_from"]
    if init_from is not None and not (isinstance(init_from, str) and init_from.strip()):
        raise ConfigError(f"init_from must be a checkpoint's path or null, got {init_from!r:.80}")
    if not isinstance(full["bf16"], bool):
        raise ConfigError(f"bf16 must be true or false, got {full['bf16']!r}")
    return full


def check_spec(key: str, spec: Any) -> None:
    """A spec is a mapping with a 'name' string and, if given, 'args' as a mapping (or null): anything else in a
    spec's place (null, a string, a number) is refused here, never met as a crash where the spec is used."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise ConfigError(f"config needs {key} as a spec with a 'name' (e.g. {{name: ..., args: {{...}}}}), got "
                          f"{spec!r:.80}")
    if spec.get("args") is not None and not isinstance(spec["args"], Mapping):
        raise ConfigError(f"{key}.args must be a mapping, got {spec['args']!r:.80}")


def built(what: str, make, *args, **kwargs):
    """`make(*args, **kwargs)`, with a wrong or missing spec argument reported as a config error about `what`."""
    try:
        return make(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: {exc}") from None


def save_config(cfg: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write the config as YAML through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(dict(cfg), sort_keys=False))
