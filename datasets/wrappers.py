"""Training and test samples for arbitrary-scale SR: `{'inp': LR, 'gt': HR, 'scale': (H/h, W/w)}` (docs/DESIGN.md §7).

A wrapper's item is addressed by an int, or by a `SampleKey(index, scale, seed)` that a `ScaleBatchSampler`
hands out: one scale for a whole batch (so that LR tensors of a batch have one size and stack), and one seed
per sample (so that crops and flips are reproducible whatever the number of loader workers, and a resumed run
draws exactly what an uninterrupted one would). Without a seed the global torch RNG is used; without a scale,
s ~ U(scale_min, scale_max) is drawn per item.

Images too small for the crop (or for the scale, at test time) are skipped with a warning naming the file:
at construction when the wrapped dataset knows its images' sizes, otherwise when they are met.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from inference.image_io import ImageError, to_uint8

from .errors import DatasetError
from .image_folder import Pixels, first_readable, to_float, warn_skipped
from .registry import register

# floor(n / s) is taken as floor(n / s + FLOOR_TOLERANCE) so that e.g. 12 / 2.4 = 4.999999… still gives 5.
FLOOR_TOLERANCE = 1e-9


class SampleKey(NamedTuple):
    """Which item, at which scale (None: draw one), with which RNG seed (None: the global RNG)."""

    index: int
    scale: float | None = None
    seed: int | None = None


def as_key(key: int | tuple) -> SampleKey:
    return SampleKey(*key) if isinstance(key, (tuple, list)) else SampleKey(int(key))


def floor_div(size: int, scale: float) -> int:
    return math.floor(size / scale + FLOOR_TOLERANCE)


def bicubic_resize(pixels: torch.Tensor, height: int, width: int) -> np.ndarray:
    """PIL bicubic resize of (3, h, w) pixels' uint8 form (uint8 as they are, float rounded, not truncated):
    the uint8 (3, height, width) LR image, a view of PIL's (height, width, 3) output."""
    if pixels.dtype == torch.uint8:
        array = np.ascontiguousarray(pixels.numpy().transpose(1, 2, 0))
    else:
        array = to_uint8(pixels)
    resized = Image.fromarray(array).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(resized).transpose(2, 0, 1)


def augment_pair(inp: Pixels, gt: Pixels, generator: torch.Generator | None) -> tuple[np.ndarray, np.ndarray]:
    """The same random horizontal flip, vertical flip and transpose (each with probability 1/2) of two
    (C, H, W) images, as NumPy views: nothing is copied until `to_float` writes the sample's float tensors."""
    hflip, vflip, transpose = (torch.rand(3, generator=generator) < 0.5).tolist()
    images = []
    for image in (inp, gt):
        image = image.numpy() if isinstance(image, torch.Tensor) else image
        if hflip:
            image = image[..., ::-1]
        if vflip:
            image = image[..., ::-1, :]
        if transpose:
            image = image.swapaxes(-2, -1)
        images.append(image)
    return images[0], images[1]


def make_sample(inp: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
    scale = torch.tensor([gt.shape[-2] / inp.shape[-2], gt.shape[-1] / inp.shape[-1]], dtype=torch.float32)
    return {"inp": inp, "gt": gt, "scale": scale}


def random_int(high_inclusive: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(high_inclusive + 1, (1,), generator=generator))


def describe(files) -> str:
    """A file, or a pair of files, for a message."""
    return " and ".join(str(f) for f in files) if isinstance(files, tuple) else str(files)


class SkippedSample(ImageError):
    """An item that a wrapper cannot use (too small); it is skipped like an unreadable file."""


class _Wrapper(Dataset):
    """Shared plumbing: items that fit the wrapper (known from the wrapped dataset's sizes), keys, skipping."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.positions = list(range(len(dataset)))
        if hasattr(dataset, "image_size") and hasattr(dataset, "files"):
            reported: set[int] = set()
            kept = []
            for index in self.positions:
                problem = self.size_problem(dataset.image_size(index))
                if problem is None:
                    kept.append(index)
                elif index % len(dataset.files) not in reported:
                    reported.add(index % len(dataset.files))
                    warn_skipped(f"{describe(dataset.files[index % len(dataset.files)])}: {problem}")
            if not kept:
                raise DatasetError(f"no image of the data set fits {type(self).__name__} (see the warnings above)")
            self.positions = kept

    def size_problem(self, size) -> str | None:
        """Why an item of this size cannot be used, or None."""
        return None

    def __len__(self) -> int:
        return len(self.positions)

    def source(self, position: int):
        """The file (or the pair of files) item `position` is made from, if the wrapped dataset lists its files."""
        files = getattr(self.dataset, "files", None)
        return files[self.positions[position] % len(files)] if files else None

    def __getitem__(self, key: int | tuple) -> dict[str, torch.Tensor]:
        key = as_key(key)
        generator = None if key.seed is None else torch.Generator().manual_seed(int(key.seed))
        return first_readable(lambda position: self.make(self.positions[position], key.scale, generator),
                              len(self.positions), key.index)

    def read(self, index: int):
        """Item `index` of the wrapped dataset (its `read`, which raises for an unreadable file, where it has one)."""
        return getattr(self.dataset, "read", self.dataset.__getitem__)(index)

    def make(self, index: int, scale: float | None, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """The sample of the wrapped dataset's item `index`; raises `ImageError` for one to skip."""
        raise NotImplementedError


@register("sr-implicit-downsampled")
class SRImplicitDownsampled(_Wrapper):
    """HR images → (bicubic LR, HR) pairs at a random or fixed scale.

    Training (`inp_size` set): a random inp_size x inp_size HR crop, s ~ U(scale_min, scale_max), LR = PIL
    bicubic of the uint8 crop to floor(inp_size / s) on each side; `augment` adds flips and a transpose.
    Test (`inp_size` null): s = scale_min unless a key gives one, h_lr = floor(h / s), w_lr = floor(w / s), the
    HR image cropped top-left to round(h_lr·s) x round(w_lr·s), LR = bicubic of that crop.
    """

    def __init__(self, dataset: Dataset, inp_size: int | None = None, scale_min: float = 1,
                 scale_max: float | None = None, augment: bool = False):
        scale_max = scale_min if scale_max is None else scale_max
        if not 0 < scale_min <= scale_max or not math.isfinite(scale_max):
            raise DatasetError(f"need 0 < scale_min <= scale_max, got scale_min={scale_min}, scale_max={scale_max}")
        if inp_size is not None and (not isinstance(inp_size, int) or floor_div(inp_size, scale_max) < 1):
            raise DatasetError(f"inp_size must be an integer with floor(inp_size / scale_max) >= 1, got {inp_size}")
        self.inp_size, self.scale_min, self.scale_max, self.augment = inp_size, scale_min, scale_max, augment
        super().__init__(dataset)

    @property
    def scale_range(self) -> tuple[float, float]:
        return self.scale_min, self.scale_max

    def size_problem(self, size: tuple[int, int]) -> str | None:
        height, width = size
        if self.inp_size is not None and min(height, width) < self.inp_size:
            return f"{height}x{width} is smaller than the {self.inp_size}x{self.inp_size} crop"
        if self.inp_size is None and min(floor_div(height, self.scale_max), floor_div(width, self.scale_max)) < 1:
            return f"{height}x{width} is smaller than one LR pixel at x{self.scale_max:g}"
        return None

    def draw_scale(self, generator: torch.Generator | None) -> float:
        return self.scale_min + (self.scale_max - self.scale_min) * float(torch.rand(1, generator=generator))

    def make(self, index: int, scale: float | None, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """Draws the scale, then the crop, then the flips (in that order, from `generator`). Where the dataset
        reads regions (`read_crop`, sized from `image_size`), only the crop leaves its cache, and stays 8-bit
        through the resize and flips: the same sample as from the whole float image, bit for bit."""
        s = self.draw_scale(generator) if scale is None else float(scale)
        if hasattr(self.dataset, "read_crop") and hasattr(self.dataset, "image_size"):
            height, width = self.dataset.image_size(index)
            region = functools.partial(self.dataset.read_crop, index)
        else:
            image = self.read(index)
            height, width = image.shape[-2:]
            region = functools.partial(slice_region, image)
        if self.inp_size is None:
            h_lr, w_lr = floor_div(height, s), floor_div(width, s)
            if min(h_lr, w_lr) < 1:
                raise SkippedSample(f"item {index}: {height}x{width} is smaller than one LR pixel at x{s:g}")
            gt = region(0, 0, round(h_lr * s), round(w_lr * s))
        else:
            if min(height, width) < self.inp_size:
                raise SkippedSample(f"item {index}: {height}x{width} is smaller than the {self.inp_size} crop")
            h_lr = w_lr = floor_div(self.inp_size, s)
            top, left = random_int(height - self.inp_size, generator), random_int(width - self.inp_size, generator)
            gt = region(top, left, self.inp_size, self.inp_size)
        inp = bicubic_resize(gt, h_lr, w_lr)
        if self.augment:
            inp, gt = augment_pair(inp, gt, generator)
        return make_sample(to_float(inp), to_float(gt))


def slice_region(image: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """The (C, height, width) view of `image` at (top, left): `read_crop` for datasets without one."""
    return image[:, top:top + height, left:left + width]


def hr_first(pair: Sequence, sizes: Sequence | None = None) -> tuple:
    """`pair` reordered as (HR, LR), the HR being the larger by area of `sizes` (default: the pair's own image
    or (height, width) sizes). LIIF's paired configs list the LR folder first, ours the HR folder; both work."""
    sizes = pair if sizes is None else sizes
    area = [math.prod(tuple(x.shape[-2:]) if isinstance(x, torch.Tensor) else x) for x in sizes]
    return (pair[0], pair[1]) if area[0] >= area[1] else (pair[1], pair[0])


def integer_ratio(hr_size: tuple[int, int], lr_size: tuple[int, int]) -> tuple[int, int] | None:
    """(r_h, r_w) with lr = floor(hr / r) on each axis, or None if the two sizes have no such integer ratio."""
    ratios = []
    for hr, lr in zip(hr_size, lr_size):
        ratio = hr // lr if lr > 0 else 0
        if ratio < 1 or hr // ratio != lr:
            return None
        ratios.append(ratio)
    return ratios[0], ratios[1]


@register("sr-implicit-paired")
class SRImplicitPaired(_Wrapper):
    """(HR, LR) pairs from `paired-image-folders` (in either order) → samples; the HR is cropped top-left to LR
    size x ratio.

    The ratio r is the integer with lr = floor(hr / r) on each axis (as the benchmark packages make their LR).
    With `inp_size` (the HR crop size, as in `sr-implicit-downsampled`): a random LR crop of floor(inp_size / r)
    and the HR crop aligned with it; `augment` adds flips and a transpose.
    """

    def __init__(self, dataset: Dataset, inp_size: int | None = None, augment: bool = False):
        if inp_size is not None and (not isinstance(inp_size, int) or inp_size < 1):
            raise DatasetError(f"inp_size must be a positive integer or null, got {inp_size!r}")
        self.inp_size, self.augment = inp_size, augment
        if hasattr(dataset, "image_size"):
            for index in range(len(dataset.files)):
                hr_size, lr_size = hr_first(dataset.image_size(index))
                if integer_ratio(hr_size, lr_size) is None:
                    names = " and ".join(str(f) for f in dataset.files[index])
                    raise DatasetError(f"{names} ({hr_size[0]}x{hr_size[1]} and {lr_size[0]}x{lr_size[1]}) have no "
                                       "integer scale ratio (expected LR = floor(HR / r))")
        super().__init__(dataset)

    def source(self, position: int):
        """The (HR file, LR file) item `position` is made from, if the wrapped dataset lists its files."""
        files = super().source(position)
        return files and hr_first(files, self.dataset.image_size(self.positions[position]))

    def size_problem(self, sizes) -> str | None:
        hr_size, lr_size = hr_first(sizes)
        if self.inp_size is None:
            return None
        ratio = integer_ratio(hr_size, lr_size)
        crop = [self.inp_size // r for r in ratio]
        if min(crop) < 1 or lr_size[0] < crop[0] or lr_size[1] < crop[1]:
            return f"LR {lr_size[0]}x{lr_size[1]} is smaller than the {crop[0]}x{crop[1]} LR crop"
        return None

    def make(self, index: int, scale: float | None, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        hr, lr = hr_first(self.read(index))
        ratio = integer_ratio(tuple(hr.shape[-2:]), tuple(lr.shape[-2:]))
        if ratio is None:
            raise SkippedSample(f"item {index}: HR {tuple(hr.shape[-2:])} and LR {tuple(lr.shape[-2:])} have no "
                                "integer scale ratio")
        (r_h, r_w), (h, w) = ratio, lr.shape[-2:]
        if self.inp_size is None:
            return make_sample(lr, hr[:, :h * r_h, :w * r_w].contiguous())
        crop_h, crop_w = self.inp_size // r_h, self.inp_size // r_w
        if min(crop_h, crop_w) < 1 or h < crop_h or w < crop_w:
            raise SkippedSample(f"item {index}: LR {h}x{w} is smaller than the {crop_h}x{crop_w} LR crop")
        top, left = random_int(h - crop_h, generator), random_int(w - crop_w, generator)
        inp = lr[:, top:top + crop_h, left:left + crop_w]
        gt = hr[:, top * r_h:(top + crop_h) * r_h, left * r_w:(left + crop_w) * r_w]
        if self.augment:
            inp, gt = augment_pair(inp, gt, generator)
        return make_sample(to_float(inp), to_float(gt))
