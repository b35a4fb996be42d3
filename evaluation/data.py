"""The test data of a config: dataset folders joined to the data root, the wrapped dataset (every image must be
scorable), image names, and the sizes every image is rendered and scored at, checked from the image headers before
any work.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Sequence

import torch

import datasets
from datasets import DatasetError, UnknownDatasetError, UnreadableImageWarning
from datasets.image_folder import SKIPPED_PREFIX
from datasets.wrappers import floor_div, hr_first, integer_ratio
from evaluation.imresize import imresize
from evaluation.metrics import SSIM_WINDOW, EvalProtocol
from inference.image_io import ImageError, MAX_8BIT, to_uint8
from utils import UsageError

DEFAULT_DATA_ROOT = "load"
# Dataset arguments that name folders, resolved against the data root.
PATH_ARG_PREFIX = "root_path"
# A sample's HR/LR ratio may differ from the protocol's scale by rounding of at most one HR pixel.
SIZE_TOLERANCE_PIXELS = 1


def resolve_data_paths(config: dict, root: str | Path | None = None) -> dict:
    """A copy of the config whose relative dataset folders are joined to the data root (`root`, else the
    config's data_root, else ./load). Absolute paths are kept."""
    config = copy.deepcopy(config)
    base = Path(root if root is not None else config.get("data_root") or DEFAULT_DATA_ROOT).expanduser()
    args = config["test_dataset"]["dataset"].setdefault("args", {}) or {}
    for key, value in args.items():
        if key.startswith(PATH_ARG_PREFIX):
            if not isinstance(value, str):
                raise UsageError(f"test_dataset.dataset.args.{key} must be a folder path, got {value!r}")
            path = Path(value).expanduser()
            args[key] = str(path if path.is_absolute() else base / path)
    config["test_dataset"]["dataset"]["args"] = args
    return config

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

def check_sample_scale(name: str, inp: torch.Tensor, gt: torch.Tensor, protocol: EvalProtocol) -> None:
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


def reference_image(gt: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The HR image itself at its own size, else its MATLAB-bicubic downscale (8-bit, as an image file)."""
    if tuple(gt.shape[-2:]) == size:
        return gt
    small = imresize(to_uint8(gt[0]), size=size)
    return torch.from_numpy(small.transpose(2, 0, 1).copy())[None].to(gt) / MAX_8BIT
