"""Upscaling an image with a loaded model, as every front end does it (demo.py, viewer.py, scripts/): the run's
settings, the bundled model, output sizes and their limits, the tiled encode, the render, and the images written
from it (the bicubic | ContinuousSR comparison, grayscale outputs).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageDraw

import models
from gaussian import GaussianField, output_size
from inference import tiling
from inference.image_io import MAX_8BIT, to_uint8
from inference.resize import resize_bicubic
from inference.self_ensemble import TRANSFORMS, SelfEnsemble
from utils import REPOSITORY, UsageError, check_finite

# The checkpoint used without --model, relative to the repository (weights/MODEL_CARD.md describes it).
DEFAULT_MODEL = Path("weights") / "continuoussr-edsr-baseline.pth"
# The comparison image: the width and value of the line between the two halves, and each half's label, drawn in
# Pillow's default font at this offset from the half's top-left corner on a box of the separator's value.
COMPARE_SEPARATOR_PX = 4
COMPARE_SEPARATOR_VALUE = 1.0
COMPARE_LABELS = ("bicubic", "ContinuousSR")
COMPARE_LABEL_MARGIN_PX = 4
# Luma of an RGB output written as grayscale: ITU-R BT.601 (what Pillow's convert("L") uses), so that an 8-bit
# gray input read as R = G = B comes back as its own value.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """What every image of a run shares."""

    device: torch.device
    backend: str
    tile: int | None  # None: automatic
    overlap: int | None  # None: the model's default
    max_pixels: int
    progress: bool
    self_ensemble: bool = False


def model_path(arg: str | None) -> Path:
    """--model, else the bundled model; a clear error when it is missing."""
    if arg:
        return Path(arg)
    path = REPOSITORY / DEFAULT_MODEL
    if not path.is_file():
        raise UsageError(f"the bundled model {path} is missing: pass --model CKPT (a ContinuousSR checkpoint)")
    return path


def load_model(path: Path, device: torch.device, precision: str = "fp32") -> nn.Module:
    """The ContinuousSR model of the checkpoint at `path`, on `device`, in eval mode, encoding at `precision`
    (gaussian.PRECISIONS)."""
    model = models.sr_model_from_checkpoint(path, device)
    model.precision = precision
    log.info("model %s (%s encoder) on %s", path, type(getattr(model, "encoder", model)).__name__, device)
    return model


def target_size(lr_size: tuple[int, int], scale: tuple[float, float] | None, size: tuple[int, int] | None,
                max_pixels: int) -> tuple[int, int]:
    """Output (H, W) for --scale or --size, refused when empty or above `max_pixels` (before any allocation)."""
    if size is None:
        height, width = lr_size[0] * scale[0], lr_size[1] * scale[1]
        if not height * width <= max_pixels:
            raise UsageError(f"scale x{scale[0]:g},{scale[1]:g} makes a {width:.3g}x{height:.3g} output, above "
                             f"--max-pixels {max_pixels:,}")
        try:
            size = output_size(lr_size, scale=scale)
        except ValueError:
            raise UsageError(f"scale x{scale[0]:g},{scale[1]:g} makes an empty output from a "
                             f"{lr_size[1]}x{lr_size[0]} image") from None
    if size[0] * size[1] > max_pixels:
        raise UsageError(f"a {size[1]}x{size[0]} output has {size[0] * size[1]:,} pixels, above --max-pixels "
                         f"{max_pixels:,}")
    return size


def tile_choice(model: nn.Module, lr_size: tuple[int, int], settings: Settings) -> tuple[int | None, int]:
    """(tile, overlap) with which `encode` encodes an image of `lr_size` (H, W): the tile --tile asks for, or
    the automatic one when the image does not fit in memory; None when the whole image is encoded at once."""
    overlap = tiling.default_overlap(model) if settings.overlap is None else settings.overlap
    tile = settings.tile
    if tile is None:
        tile = tiling.auto_tile(model, lr_size, tiling.free_memory(settings.device), overlap,
                                tiling.tile_memory_cap(settings.device))
    return (tile if tile and tile < max(lr_size) else None), overlap


def encode(model: nn.Module, lr: torch.Tensor, settings: Settings,
           on_tile: Callable[[int, int], None] | None = None) -> GaussianField:
    """The image's field: in tiles when --tile asks for it or the image does not fit in memory (`tile_choice`).

    `on_tile(done, total)` is called before the first tile and after each (total 1 when untiled).
    """
    lr_size = tuple(lr.shape[-2:])
    tile, overlap = tile_choice(model, lr_size, settings)
    if tile is not None:
        count = len(tiling.plan_tiles(lr_size, tile, overlap))
        log.info("encoding in %d tiles of %d px (+%d px context)", count, tile, overlap)
    return tiling.encode_tiled(model, lr, tile, overlap, tiling.tile_alignment(model), settings.progress, on_tile)


def upscale(model: nn.Module, rgb: torch.Tensor, size: tuple[int, int], settings: Settings) -> torch.Tensor:
    """(3, h, w) → (3, H, W) in [0, 1] on the CPU."""
    def encode_image(lr: torch.Tensor) -> GaussianField:
        return encode(model, lr, settings)

    renderer, encoder = model, encode_image
    if settings.self_ensemble:
        log.info("self-ensemble: %d encodes", len(TRANSFORMS))
        renderer = SelfEnsemble(model, encode_image)
        encoder = renderer.encode
    start = time.perf_counter()
    with torch.inference_mode():
        field = encoder(rgb[None].to(settings.device)).check_finite()
        if settings.device.type == "cuda":
            torch.cuda.synchronize(settings.device)  # CUDA runs asynchronously: time the encode, not its launch
        encoded = time.perf_counter()
        sr = renderer.render(field, size=size, backend=settings.backend)[0]
        sr = check_finite(sr, "the render").clamp(0, 1).cpu()
    log.info("encode %.2f s, render %.2f s", encoded - start, time.perf_counter() - encoded)
    return sr


def is_gray(rgb: torch.Tensor) -> bool:
    """Whether an RGB image (3, H, W) is gray: its three channels equal everywhere (a grayscale file reads so)."""
    return torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2])


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """(3, H, W) → (1, H, W): the BT.601 luma (LUMA_WEIGHTS) of an RGB image; the model's render of a gray image
    is not exactly gray (its channels differ by a few levels), and a gray input is written back as gray."""
    weights = torch.tensor(LUMA_WEIGHTS, dtype=rgb.dtype, device=rgb.device)
    return torch.einsum("c,chw->hw", weights, rgb)[None]


def labelled(image: torch.Tensor, label: str, fill: float) -> torch.Tensor:
    """(C, H, W) in [0, 1] (C = 1 or 3) as 8-bit levels, with `label` in its top-left corner: Pillow's default
    font, on a box of `fill`, in the opposite value."""
    array = to_uint8(image)
    canvas = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    draw = ImageDraw.Draw(canvas)
    full = int(MAX_8BIT)
    background = round(fill * full)
    paint = (lambda value: value) if canvas.mode == "L" else (lambda value: (value,) * array.shape[-1])
    corner = (COMPARE_LABEL_MARGIN_PX, COMPARE_LABEL_MARGIN_PX)
    left, top, right, bottom = draw.textbbox(corner, label)
    pad = COMPARE_LABEL_MARGIN_PX // 2
    draw.rectangle((left - pad, top - pad, right + pad, bottom + pad), fill=paint(background))
    draw.text(corner, label, fill=paint(full - background))
    levels = np.asarray(canvas, dtype=np.float32).reshape(array.shape) / MAX_8BIT
    return torch.from_numpy(levels.transpose(2, 0, 1).copy()).to(image.dtype)


def side_by_side(left: torch.Tensor, right: torch.Tensor, fill: float) -> torch.Tensor:
    """(C, H, W) images joined left to right with a COMPARE_SEPARATOR_PX-wide line of `fill`."""
    line = left.new_full((left.shape[0], left.shape[1], COMPARE_SEPARATOR_PX), fill)
    return torch.cat((left, line, right), -1)


def comparison_size(size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of `comparison`'s image for an output of `size`: two halves and the separator."""
    return size[0], 2 * size[1] + COMPARE_SEPARATOR_PX


def comparison(lr: torch.Tensor, sr: torch.Tensor) -> torch.Tensor:
    """Bicubic of `lr` (left) | `sr` (right) at sr's size, each half labelled (COMPARE_LABELS)."""
    bicubic = resize_bicubic(lr, tuple(sr.shape[-2:]))
    halves = [labelled(half, label, COMPARE_SEPARATOR_VALUE) for half, label in zip((bicubic, sr), COMPARE_LABELS)]
    return side_by_side(*halves, COMPARE_SEPARATOR_VALUE)
