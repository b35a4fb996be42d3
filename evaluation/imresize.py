"""MATLAB-compatible bicubic `imresize`, as used to make the benchmarks' LR images (LR_bicubic/X2…X4).

MATLAB's algorithm, restated: each dimension is resized separately, the one with the smallest scale factor
first (ties: rows first). Output sample x (1-based) maps to input position u = x/s + (1 − 1/s)/2; its value is
the normalised sum of the input samples j weighted by the Keys cubic kernel (a = −0.5) at u − j. When shrinking
(s < 1), the kernel is stretched to h(t) = s·k(s·t) with width 4/s (antialiasing). Samples outside the image are
mirrored with the edge repeated (symmetric padding). With a scale, the output size is ceil(s·n); with a size,
s = out/in per dimension. Integer images are rounded (half away from zero) and clipped after *each* dimension,
as MATLAB's per-dimension kernel returns the input's class; float images stay float64 throughout.

No maintained package reproduces this exactly: `bicubic-pytorch` rounds integer images once at the end and
computes in float32 (see the project README). Each dimension is one dense matrix product (weights × image).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

KEYS_A = -0.5
KERNEL_WIDTH = 4.0


def cubic(t: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = −0.5 (MATLAB's 'bicubic')."""
    t = np.abs(t)
    near = ((KEYS_A + 2) * t - (KEYS_A + 3)) * t * t + 1
    far = ((KEYS_A * t - 5 * KEYS_A) * t + 8 * KEYS_A) * t - 4 * KEYS_A
    return np.where(t <= 1, near, np.where(t <= 2, far, 0.0))


def resize_matrix(in_length: int, out_length: int, scale: float, antialiasing: bool = True) -> np.ndarray:
    """The (out_length, in_length) matrix that resizes one dimension; rows sum to 1."""
    if in_length < 1 or out_length < 1:
        raise ValueError(f"cannot resize {in_length} samples to {out_length}")
    stretch = scale if (antialiasing and scale < 1) else 1.0
    width = KERNEL_WIDTH / stretch
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]                 # 1-based input positions
    weights = stretch * cubic(stretch * (u[:, None] - indices))
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate((np.arange(in_length), np.arange(in_length - 1, -1, -1)))
    source = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]  # symmetric padding
    matrix = np.zeros((out_length, in_length))
    np.add.at(matrix, (np.repeat(np.arange(out_length), taps), source.ravel()), weights.ravel())
    return matrix


def _round_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Back to an integer type as MATLAB converts: round half away from zero, clip to the type's range."""
    info = np.iinfo(dtype)
    return np.clip(np.sign(values) * np.floor(np.abs(values) + 0.5), info.min, info.max).astype(dtype)


def imresize(image: np.ndarray, scale: float | Sequence[float] | None = None,
             size: Sequence[int] | None = None, antialiasing: bool = True) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) array by `scale` (one number or (s_h, s_w)) or to `size` (H, W)."""
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) array, got shape {image.shape}")
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale or size")
    in_size = image.shape[:2]
    if size is not None:
        out_size = tuple(int(v) for v in size)
        if len(out_size) != 2 or min(out_size) < 1:
            raise ValueError(f"size must be two positive integers, got {size}")
        scales = tuple(o / i for o, i in zip(out_size, in_size))
    else:
        scales = (float(scale),) * 2 if np.isscalar(scale) else tuple(float(s) for s in scale)
        if len(scales) != 2 or not all(math.isfinite(s) and s > 0 for s in scales):
            raise ValueError(f"scale must be positive (one number or two), got {scale}")
        out_size = tuple(math.ceil(s * n) for s, n in zip(scales, in_size))
    integer = np.issubdtype(image.dtype, np.integer)
    if not (integer or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"unsupported image type {image.dtype}")
    out = image if integer else image.astype(np.float64)
    for dim in sorted(range(2), key=lambda d: scales[d]):
        matrix = resize_matrix(in_size[dim], out_size[dim], scales[dim], antialiasing)
        resized = np.moveaxis(np.tensordot(matrix, np.moveaxis(out, dim, 0).astype(np.float64), axes=1), 0, dim)
        out = _round_like(resized, image.dtype) if integer else resized
    return out
