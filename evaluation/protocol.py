"""Scoring a model on a LIIF-format test config with the paper's protocol (docs/DESIGN.md §7); used by test.py and
scripts/eval_all.py.

Config keys (the official/LIIF test format; any other key is an error):
  test_dataset:  {dataset: {name, args}, wrapper: {name, args}, batch_size: 1}
                 e.g. image-folder + sr-implicit-downsampled (LR made on the fly) or paired-image-folders +
                 sr-implicit-paired (the benchmark's own LR images; the LR and HR folders may come in either
                 order, the wrapper takes the larger image of each pair as the HR).
  eval_type:     benchmark-S (PSNR on Y, shave ceil(S)) or div2k-S (PSNR on RGB, shave ceil(S) + 6); SSIM on Y.
  data_norm:     optional {inp: {sub, div}, gt: {sub, div}}: the model sees (inp − sub) / div, its output is
                 mapped back by · div + sub (identity by default).
  data_root:     optional folder that relative dataset paths (root_path, root_path_1, root_path_2) are joined to;
                 test.py's --root overrides it; default ./load (LIIF's layout: load/benchmark/Set5/HR, …).

Each image is encoded once (`model.encode`) and rendered at the ground truth's size (`model.render`). The
encoders reflect-pad to their window themselves and crop the features back (models/window_blocks.py), so the
field always covers exactly the LR image: no padding happens here, and no `window` option is needed.

With `scales` (test.py --scales), each image's LR is still encoded once and the one field is rendered at every
listed scale s ≤ the LR's own scale S: the reference at S is the HR image itself (the protocol's numbers), the
reference at s < S is the HR image downscaled to the rendered size round(h·s) x round(w·s) with MATLAB's bicubic
(`imresize`), i.e. the image a benchmark package would ship as the HR at that size. The shave follows s.
"""
from __future__ import annotations

import copy
import inspect
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import datasets
import models
from datasets import DatasetError, UnknownDatasetError, UnreadableImageWarning
from datasets.image_folder import SKIPPED_PREFIX
from datasets.wrappers import floor_div, hr_first, integer_ratio
from evaluation.imresize import imresize
from evaluation.metrics import SSIM_WINDOW, EvalProtocol
from inference.image_io import ImageError, MAX_8BIT, to_uint8, write_image
from inference.self_ensemble import SelfEnsemble
from utils import UsageError, check_finite, load_yaml, worker_stops_cleanly

DEFAULT_DATA_ROOT = "load"
# test.py --model bicubic scores the bicubic baseline.
BICUBIC_MODEL = "bicubic"
# Config layout: key → required?
CONFIG_KEYS = {"test_dataset": True, "eval_type": True, "data_norm": False, "data_root": False}
TEST_DATASET_KEYS = {"dataset": True, "wrapper": True, "batch_size": False}
SPEC_KEYS = {"name": True, "args": False}
DATA_NORM_KEYS = ("inp", "gt")
NORM_KEYS = ("sub", "div")
# Dataset arguments that name folders, resolved against the data root.
PATH_ARG_PREFIX = "root_path"
ON_THE_FLY_WRAPPER = "sr-implicit-downsampled"
# Arguments a test-time wrapper must leave at their defaults (test images are whole and not augmented).
TRAINING_ONLY_ARGS = ("inp_size", "augment")
# A sample's HR/LR ratio may differ from the protocol's scale by rounding of at most one HR pixel.
SIZE_TOLERANCE_PIXELS = 1


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
    if name not in registry:
        kind = where.rsplit(".", 1)[-1]
        raise UsageError(f"unknown {kind} {name!r} in {where} (known: {', '.join(sorted(registry))})")
    args = spec.get("args") or {}
    if not isinstance(args, dict):
        raise UsageError(f"{where}.args must be a mapping")
    accepted = [p for p in inspect.signature(registry[name]).parameters if p not in injected]
    unknown = [k for k in args if k not in accepted]
    if unknown:
        raise UsageError(f"unknown key {unknown[0]!r} in {where}.args ({name} takes: {', '.join(accepted)})")


def validate_config(config: Any) -> EvalProtocol:
    """Check a test config's keys and values; returns its scoring protocol."""
    _check_keys(config, CONFIG_KEYS, "the config")
    spec = config["test_dataset"]
    _check_keys(spec, TEST_DATASET_KEYS, "test_dataset")
    _check_spec_args(spec["dataset"], datasets.datasets, "test_dataset.dataset")
    _check_spec_args(spec["wrapper"], datasets.datasets, "test_dataset.wrapper", injected=("dataset",))
    if spec.get("batch_size", 1) != 1:
        raise UsageError(f"test_dataset.batch_size must be 1 (test images differ in size), got {spec['batch_size']}")
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


def resolve_data_paths(config: dict, root: str | Path | None = None) -> dict:
    """A copy of the config whose relative dataset folders are joined to the data root (`root`, else the
    config's data_root, else ./load). Absolute paths are kept."""
    config = copy.deepcopy(config)
    base = Path(root if root is not None else config.get("data_root") or DEFAULT_DATA_ROOT).expanduser()
    args = config["test_dataset"]["dataset"].setdefault("args", {}) or {}
    for key, value in args.items():
        if key.startswith(PATH_ARG_PREFIX) and value is not None:
            path = Path(str(value)).expanduser()
            args[key] = str(path if path.is_absolute() else base / path)
    config["test_dataset"]["dataset"]["args"] = args
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


def unscorable(exc: BaseException) -> UsageError:
    """A data error as the hard error it is at test time (a score must cover the whole test set): its last line
    (a loader worker's message carries the worker's traceback first), without the 'skipping' of a warning."""
    reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, UnreadableImageWarning):
        reason = reason.split(SKIPPED_PREFIX, 1)[-1]
        reason = reason if reason.startswith("cannot ") else f"cannot score {reason}"
        return UsageError(f"{reason} (a test score must cover every image)")
    return UsageError(reason)


def build_dataset(config: dict):
    """The wrapped test dataset of a validated config whose paths are resolved. Any image that would be skipped
    (unreadable, too small) is an error here: a score must cover the whole test set."""
    spec = config["test_dataset"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UnreadableImageWarning)
            return datasets.make(spec["wrapper"], args={"dataset": datasets.make(spec["dataset"])})
    except (DatasetError, UnknownDatasetError, UnreadableImageWarning, ImageError) as exc:
        raise unscorable(exc) from None


def item_names(dataset) -> list[str]:
    """A file stem per item (the HR file's for pairs), or its index when the dataset does not list files."""
    sources = [dataset.source(i) for i in range(len(dataset))] if hasattr(dataset, "source") else []
    if not sources or None in sources:
        return [f"{i:04d}" for i in range(len(dataset))]
    return [Path(f[0] if isinstance(f, tuple) else f).stem for f in sources]


class BicubicBaseline(torch.nn.Module):
    """The 'Bicubic' row of SR tables, behind the encode/render interface `evaluate` uses: the 8-bit LR image
    upscaled with MATLAB-compatible bicubic (`imresize`) and kept 8-bit, as the literature computes it."""

    def encode(self, inp: torch.Tensor) -> torch.Tensor:
        return inp

    def render(self, lr: torch.Tensor, size: tuple[int, int], backend: str = "auto") -> torch.Tensor:
        upscaled = [imresize(to_uint8(image), size=size).transpose(2, 0, 1) for image in lr]
        return torch.from_numpy(np.stack(upscaled)).to(lr) / MAX_8BIT


def load_model(path: str | Path, device: torch.device, self_ensemble: bool = False) -> torch.nn.Module:
    """A checkpoint's model on `device`, in eval mode; it must produce a Gaussian field (encode/render).
    `path` = BICUBIC_MODEL gives the bicubic baseline instead. `self_ensemble` wraps it in SelfEnsemble (the
    mean over the eight flips and transposes of the input: test.py and eval_all.py --self-ensemble)."""
    if str(path) == BICUBIC_MODEL:
        model = BicubicBaseline()
    else:
        try:
            model = models.sr_model_from_checkpoint(path, device)
        except models.CheckpointError as exc:
            raise UsageError(str(exc)) from None
    return SelfEnsemble(model) if self_ensemble else model


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


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _scale_label(scale: float) -> str:
    return f"x{scale:g}"


@dataclass
class Evaluation:
    """Per-image scores at each scale, and timings (seconds) of the model's work per image."""

    protocol: EvalProtocol
    scales: list[float]
    names: list[str] = field(default_factory=list)
    psnr: dict[float, list[float]] = field(default_factory=dict)
    ssim: dict[float, list[float]] = field(default_factory=dict)
    encode_seconds: list[float] = field(default_factory=list)
    render_seconds: dict[float, list[float]] = field(default_factory=dict)

    def mean(self, metric: str, scale: float) -> float:
        values = getattr(self, metric)[scale]
        return sum(values) / len(values)

    def seconds_per_image(self, scale: float) -> float:
        """Mean encode + render time per image at `scale` (the encode is shared by all scales)."""
        renders = self.render_seconds[scale]
        return (sum(self.encode_seconds) + sum(renders)) / len(renders)

    def summary(self) -> list[dict[str, float]]:
        return [{"scale": s, "psnr": self.mean("psnr", s), "ssim": self.mean("ssim", s),
                 "seconds_per_image": self.seconds_per_image(s),
                 "encode_seconds": sum(self.encode_seconds) / len(self.encode_seconds),
                 "render_seconds": sum(self.render_seconds[s]) / len(self.render_seconds[s])} for s in self.scales]

    def to_dict(self) -> dict[str, Any]:
        return {"eval_type": f"{self.protocol.kind}-{self.protocol.scale:g}", "images": len(self.names),
                "summary": self.summary(),
                "per_image": [{"name": name, **{_scale_label(s): {"psnr": self.psnr[s][i], "ssim": self.ssim[s][i]}
                                                for s in self.scales}} for i, name in enumerate(self.names)]}


def _check_sample_scale(name: str, inp: torch.Tensor, gt: torch.Tensor, protocol: EvalProtocol) -> None:
    """The sample's HR/LR size ratio must be the protocol's scale (e.g. an x2 LR folder in an x4 config)."""
    (h, w), (big_h, big_w) = inp.shape[-2:], gt.shape[-2:]
    expected = (h * protocol.scale, w * protocol.scale)
    if abs(big_h - expected[0]) > SIZE_TOLERANCE_PIXELS or abs(big_w - expected[1]) > SIZE_TOLERANCE_PIXELS:
        raise UsageError(f"{name}: LR {h}x{w} → HR {big_h}x{big_w} is x{big_h / h:.3g}, but the config's eval_type "
                         f"is x{protocol.scale:g}: the data and the scale do not match")


def check_data_scale(dataset, protocol: EvalProtocol) -> None:
    """Before any work: paired LR/HR files (sizes from their headers) must be at the protocol's scale."""
    inner = getattr(dataset, "dataset", None)
    if not hasattr(inner, "image_size") or not hasattr(inner, "files"):
        return
    for position, name in enumerate(item_names(dataset)):
        sizes = inner.image_size(dataset.positions[position])
        if not isinstance(sizes[0], tuple):
            return  # single images: the wrapper makes the LR at the config's scale
        (big_h, big_w), (h, w) = hr_first(sizes)
        ratio = integer_ratio((big_h, big_w), (h, w))
        if ratio is not None and any(r != protocol.scale for r in ratio):
            raise UsageError(f"{name}: LR {h}x{w} → HR {big_h}x{big_w} is x{ratio[0]:g}, but the config's eval_type "
                             f"is x{protocol.scale:g}: the data and the scale do not match")


def _sizes(dataset, protocol: EvalProtocol) -> list[tuple[str, tuple[int, int], tuple[int, int]]]:
    """(name, LR size, HR size as scored) per item, from the image headers; empty when the dataset has no sizes."""
    inner = getattr(dataset, "dataset", None)
    if not hasattr(inner, "image_size") or not hasattr(dataset, "positions"):
        return []
    sizes = []
    for position, name in enumerate(item_names(dataset)):
        size = inner.image_size(dataset.positions[position])
        if isinstance(size[0], tuple):  # a pair: the HR is cropped to LR size x the integer ratio
            hr_size, (h, w) = hr_first(size)
            ratio = integer_ratio(hr_size, (h, w))
            if ratio is None:
                continue
            sizes.append((name, (h, w), (h * ratio[0], w * ratio[1])))
        else:  # one image: the LR is floor(size / scale), the HR cropped to round(LR x scale)
            h, w = floor_div(size[0], protocol.scale), floor_div(size[1], protocol.scale)
            sizes.append((name, (h, w), (round(h * protocol.scale), round(w * protocol.scale))))
    return sizes


def rendered_size(protocol: EvalProtocol, scale: float, lr_size: tuple[int, int],
                  hr_size: tuple[int, int]) -> tuple[int, int]:
    """The size an image is rendered and scored at: the HR's at the protocol's scale, round(LR x s) below it."""
    return tuple(hr_size) if scale == protocol.scale else (round(lr_size[0] * scale), round(lr_size[1] * scale))


def check_scales(dataset, protocol: EvalProtocol, scales: Sequence[float] | None = None) -> list[float]:
    """Before any work: the scales to score (default: the protocol's), sorted. Each must be ≤ the data's scale,
    paired files must be at the protocol's scale, and every image at every scale must leave at least SSIM's
    window after the shave (sizes from the image headers): a UsageError otherwise."""
    scales = [protocol.scale] if scales is None else sorted(set(float(s) for s in scales))
    too_large = [s for s in scales if s > protocol.scale]
    if too_large:
        raise UsageError(f"scale x{too_large[0]:g} exceeds the data's x{protocol.scale:g}: there is no reference "
                         f"image for it (use a config at x{too_large[0]:g} or above)")
    check_data_scale(dataset, protocol)
    for name, lr_size, hr_size in _sizes(dataset, protocol):
        for s in scales:
            height, width = rendered_size(protocol, s, lr_size, hr_size)
            shave = protocol.at_scale(s).shave
            if min(height, width) < 1:
                raise UsageError(f"{name}: at x{s:g} its LR {lr_size[0]}x{lr_size[1]} renders to an empty "
                                 f"{height}x{width} image; use a larger scale")
            if min(height, width) - 2 * shave < SSIM_WINDOW:
                raise UsageError(f"{name}: at x{s:g} the {height}x{width} image less the {shave}-pixel shave is "
                                 f"smaller than SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window; it cannot be scored")
    return scales


def _reference(gt: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The HR image itself at its own size, else its MATLAB-bicubic downscale (8-bit, as an image file)."""
    if tuple(gt.shape[-2:]) == size:
        return gt
    small = imresize(to_uint8(gt[0]), size=size)
    return torch.from_numpy(small.transpose(2, 0, 1).copy())[None].to(gt) / MAX_8BIT


def evaluate(model: torch.nn.Module, dataset, protocol: EvalProtocol, *, scales: Sequence[float] | None = None,
             data_norm: Any = None, device: torch.device | str = "cpu", backend: str = "auto",
             save_dir: str | Path | None = None, workers: int = 0, progress: bool = True,
             description: str = "test", warmup: bool | None = None) -> Evaluation:
    """Encode each image once; render at the HR size (or at every `scales` entry, see the module docstring); score.

    `save_dir` receives the clamped SR images as save_dir/x{s}/{name}.png. `warmup` (default: on CUDA) first runs
    the model once on the first image, untimed and unscored, so that one-off costs (kernel compilation, cuDNN
    autotuning) do not count in the time per image.
    """
    device = torch.device(device)
    warmup = device.type == "cuda" if warmup is None else warmup
    check_workers(workers)
    scales = check_scales(dataset, protocol, scales)
    norm = {k: (sub.to(device), div.to(device)) for k, (sub, div) in parse_data_norm(data_norm).items()}
    result = Evaluation(protocol, scales, item_names(dataset), {s: [] for s in scales}, {s: [] for s in scales},
                        [], {s: [] for s in scales})
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", worker_init_fn=worker_stops_cleanly)
    bar = tqdm(loader, desc=description, unit="image", disable=not progress, dynamic_ncols=True)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("error", UnreadableImageWarning)
            if warmup and len(dataset):
                inp = dataset[0]["inp"][None].to(device)
                model.render(model.encode((inp - norm["inp"][0]) / norm["inp"][1]), scale=scales[-1], backend=backend)
                _synchronize(device)
            for name, batch in zip(result.names, bar):
                _evaluate_sample(model, name, batch, result, norm, device, backend, save_dir)
                bar.set_postfix(psnr=f"{result.mean('psnr', scales[-1]):.3f}")
    except (UnreadableImageWarning, ImageError, DatasetError) as exc:
        raise unscorable(exc) from None
    return result


def _evaluate_sample(model: torch.nn.Module, name: str, batch: dict[str, torch.Tensor], result: Evaluation,
                     norm: dict[str, tuple[torch.Tensor, torch.Tensor]], device: torch.device, backend: str,
                     save_dir: str | Path | None) -> None:
    """One encode, then one render and score per scale, appended to `result`."""
    protocol = result.protocol
    inp, gt = batch["inp"].to(device), batch["gt"].to(device)
    _check_sample_scale(name, inp, gt, protocol)
    _synchronize(device)
    start = time.perf_counter()
    gaussians = model.encode((inp - norm["inp"][0]) / norm["inp"][1])
    _synchronize(device)
    result.encode_seconds.append(time.perf_counter() - start)
    if hasattr(gaussians, "check_finite"):  # a NaN or infinite Gaussian vanishes from the render: a black image
        gaussians.check_finite()
    for s in result.scales:
        size = rendered_size(protocol, s, tuple(inp.shape[-2:]), tuple(gt.shape[-2:]))
        start = time.perf_counter()
        sr = model.render(gaussians, size=size, backend=backend) * norm["gt"][1] + norm["gt"][0]
        _synchronize(device)
        result.render_seconds[s].append(time.perf_counter() - start)
        check_finite(sr, f"{name}: the model's output at x{s:g}")
        scores = protocol.at_scale(s).score(sr, _reference(gt, size))
        result.psnr[s].append(scores["psnr"].item())
        result.ssim[s].append(scores["ssim"].item())
        if save_dir is not None:
            write_image(Path(save_dir) / _scale_label(s) / f"{name}.png", sr[0].clamp(0, 1))


def format_report(result: Evaluation, title: str = "") -> str:
    """Per-image PSNR / SSIM at each scale, the means, the model time per image, and LIIF's `result:` line."""
    header = ["image"] + [_scale_label(s) for s in result.scales]
    rows = [[name] + [f"{result.psnr[s][i]:.4f} / {result.ssim[s][i]:.4f}" for s in result.scales]
            for i, name in enumerate(result.names)]
    rows.append(["mean"] + [f"{result.mean('psnr', s):.4f} / {result.mean('ssim', s):.4f}" for s in result.scales])
    rows.append(["s/image"] + [f"{result.seconds_per_image(s):.4f}" for s in result.scales])
    widths = [max(len(row[c]) for row in [header] + rows) for c in range(len(header))]
    lines = [title] if title else []
    lines.append(f"PSNR (dB) / SSIM, {result.protocol.kind} protocol; references below "
                 f"x{result.protocol.scale:g} are the HR image downscaled (MATLAB bicubic)"
                 if len(result.scales) > 1 else f"PSNR (dB) / SSIM, {result.protocol.kind} protocol")
    for row in [header] + rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    native = result.protocol.scale
    if native in result.psnr:
        lines.append(f"result: PSNR {result.mean('psnr', native):.4f} dB, SSIM {result.mean('ssim', native):.4f} "
                     f"at x{native:g} over {len(result.names)} images, {result.seconds_per_image(native):.4f} s/image "
                     f"(encode {sum(result.encode_seconds) / len(result.encode_seconds):.4f} s)")
    return "\n".join(lines)
