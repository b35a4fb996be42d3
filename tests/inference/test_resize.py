"""Bicubic resizing against independent computations: Keys' cubic convolution upwards, PIL downwards."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from inference.resize import resize_bicubic, resize_bicubic_window

KEYS_A = -0.75  # the cubic-convolution parameter of the usual bicubic upsampling (OpenCV, PyTorch)


def keys(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    return np.where(t <= 1, (KEYS_A + 2) * t ** 3 - (KEYS_A + 3) * t ** 2 + 1,
                    np.where(t < 2, KEYS_A * (t ** 3 - 5 * t ** 2 + 8 * t - 4), 0.0))


def upsample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights: pixel centres aligned, four taps, indices clamped at the borders."""
    matrix = np.zeros((n_out, n_in))
    for j in range(n_out):
        src = (j + 0.5) * n_in / n_out - 0.5
        base = int(np.floor(src))
        for k in range(base - 1, base + 3):
            matrix[j, min(max(k, 0), n_in - 1)] += keys(src - k)
    return matrix


@pytest.mark.parametrize("size", [(20, 33), (48, 40), (9, 16)])
def test_upsampling_is_keys_cubic_convolution(size):
    image = np.random.default_rng(0).random((2, 9, 8))
    expected = np.einsum("hi,cij,wj->chw", upsample_matrix(9, size[0]), image, upsample_matrix(8, size[1]))
    out = resize_bicubic(torch.from_numpy(image).float(), size)
    assert out.shape == (2, *size)
    assert np.abs(out.numpy() - np.clip(expected, 0, 1)).max() < 1e-5


@pytest.mark.parametrize("size", [(8, 10), (12, 20), (10, 13)])
def test_downsampling_is_antialiased_as_pil(size):
    plane = np.random.default_rng(1).random((24, 40)).astype(np.float32)
    expected = np.asarray(Image.fromarray(plane, "F").resize(size[::-1], Image.BICUBIC))
    out = resize_bicubic(torch.from_numpy(plane)[None, None], size)
    assert out.shape == (1, 1, *size)
    assert np.abs(out[0, 0].numpy() - np.clip(expected, 0, 1)).max() < 1e-5


def test_output_is_clamped():
    step = torch.zeros(1, 6, 6)
    step[:, :, 3:] = 1
    out = resize_bicubic(step, (6, 24))  # cubic convolution overshoots at a step
    assert out.min() == 0 and out.max() == 1


@pytest.mark.parametrize("size", [(36, 48), (30, 41), (12, 16), (13, 50)])
def test_whole_window_is_resize_bicubic_when_enlarging(size):
    image = torch.rand(3, 12, 16, generator=torch.Generator().manual_seed(0))
    window = resize_bicubic_window(image, (0, 0, 12, 16), size)
    assert window.shape == (3, *size)
    assert (window - resize_bicubic(image, size)).abs().max() < 1e-5


@pytest.mark.parametrize("window", [(2.5, 3.25, 5, 6), (0, 0, 4, 4), (7, 10, 5, 6), (-1, -2, 6, 8)])
def test_window_at_a_scale_is_the_crop_of_the_whole_image_at_that_scale(window):
    """At x4 the window (top, left, h, w) is rows 4·top … of the x4 image (beyond the image: borders replicated)."""
    image = torch.rand(2, 3, 12, 16, generator=torch.Generator().manual_seed(1))
    top, left, height, width = window
    pad = 2  # LR pixels of replicated border around the image, so that windows reaching outside have a reference
    padded = torch.nn.functional.pad(image, (pad,) * 4, mode="replicate")
    full = resize_bicubic(padded, (4 * (12 + 2 * pad), 4 * (16 + 2 * pad)))
    rows, cols = round(4 * (top + pad)), round(4 * (left + pad))
    expected = full[..., rows:rows + 4 * height, cols:cols + 4 * width]
    assert (resize_bicubic_window(image, window, (4 * height, 4 * width)) - expected).abs().max() < 1e-5
