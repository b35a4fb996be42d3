"""MATLAB-compatible bicubic resize, against hand-worked values and a direct sum written independently here."""
from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.imresize import _round_like, imresize


def keys(t: float) -> float:
    """Keys' cubic kernel, a = −0.5, written out piece by piece."""
    t = abs(t)
    if t <= 1:
        return 1.5 * t ** 3 - 2.5 * t ** 2 + 1
    if t <= 2:
        return -0.5 * t ** 3 + 2.5 * t ** 2 - 4 * t + 2
    return 0.0


def reference_resize_1d(signal: list[float], out_length: int) -> list[float]:
    """Each output sample as the normalised kernel sum over *every* integer j near it, with the image mirrored
    about its edges (edge sample repeated) — no tap windows, no index tables."""
    n = len(signal)
    scale = out_length / n
    stretch = min(scale, 1.0)

    def mirrored(j: int) -> float:  # 1-based, symmetric about the half-pixel beyond each edge
        while not 1 <= j <= n:
            j = 1 - j if j < 1 else 2 * n + 1 - j
        return signal[j - 1]

    out = []
    for x in range(1, out_length + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        js = range(math.floor(u) - 4 * n - 8, math.floor(u) + 4 * n + 8)
        weights = [stretch * keys(stretch * (u - j)) for j in js]
        out.append(sum(w * mirrored(j) for w, j in zip(weights, js)) / sum(weights))
    return out


def test_hand_worked_halving():
    # 4 → 2 samples: u = 1.5 for the first output; the kernel stretched ×2 gives taps (j = −2…5) proportional to
    # k(1.75), k(1.25), k(0.75), k(0.25), … = −3/128, −9/128, 29/128, 111/128, …; folding the mirrored taps onto
    # a, b, c, d gives 35/64·a + 51/128·b + 13/128·c − 3/64·d.
    a, b, c, d = 0.0, 1.0, 2.0, 3.0
    first = 35 / 64 * a + 51 / 128 * b + 13 / 128 * c - 3 / 64 * d
    second = 35 / 64 * d + 51 / 128 * c + 13 / 128 * b - 3 / 64 * a
    out = imresize(np.array([[a, b, c, d]]), size=(1, 2))
    np.testing.assert_allclose(out, [[first, second]], rtol=0, atol=1e-15)
    assert (first, second) == (0.4609375, 2.5390625)


@pytest.mark.parametrize("n, m", [(12, 4), (12, 5), (10, 3), (7, 9), (5, 13), (9, 9), (30, 1)])
def test_one_dimension_matches_the_direct_sum(n, m):
    signal = np.random.default_rng(n * 31 + m).random(n)
    expected = reference_resize_1d(list(signal), m)
    np.testing.assert_allclose(imresize(signal[None, :], size=(1, m))[0], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(imresize(signal[:, None], size=(m, 1))[:, 0], expected, rtol=0, atol=1e-12)


def test_two_dimensions_are_separable():
    image = np.random.default_rng(0).random((9, 7, 3))
    out = imresize(image, size=(4, 11))
    rows_first = np.array([[reference_resize_1d(list(image[:, col, ch]), 4) for col in range(7)]
                           for ch in range(3)])                                        # (3, 7, 4)
    expected = np.array([[reference_resize_1d(list(rows_first[ch, :, row]), 11) for row in range(4)]
                         for ch in range(3)]).transpose(1, 2, 0)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_integer_images_round_after_each_dimension_smallest_scale_first():
    image = np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    out = imresize(image, scale=(0.5, 0.25))
    assert out.dtype == np.uint8 and out.shape == (12, 10, 3)

    def matlab_round(values):
        return np.clip(np.floor(np.asarray(values) + 0.5), 0, 255)

    # Columns (scale 0.25) are resized first, rounded, then rows (scale 0.5), rounded.
    cols = np.array([[matlab_round(reference_resize_1d(list(image[r, :, ch].astype(float)), 10))
                      for r in range(24)] for ch in range(3)])                            # (3, 24, 10)
    expected = np.array([[matlab_round(reference_resize_1d(list(cols[ch, :, c]), 12)) for c in range(10)]
                         for ch in range(3)]).transpose(2, 1, 0)
    np.testing.assert_array_equal(out, expected)
    once = matlab_round(imresize(image.astype(np.float64), scale=(0.5, 0.25)))
    assert np.any(once != out)  # rounding once at the end would be a different (non-MATLAB) result


def test_rounding_is_half_away_from_zero():
    values = np.array([0.5, 1.5, 2.5, 2.4999, -0.5, -1.5, 300.0])
    np.testing.assert_array_equal(_round_like(values, np.int16), [1, 2, 3, 2, -1, -2, 300])
    np.testing.assert_array_equal(_round_like(values, np.uint8), [1, 2, 3, 2, 0, 0, 255])


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 0.3, 2.0, 3.5])
def test_a_constant_image_stays_constant(scale):
    image = np.full((21, 17, 3), 137, np.uint8)
    out = imresize(image, scale)
    assert out.shape == (math.ceil(21 * scale), math.ceil(17 * scale), 3)
    assert np.all(out == 137)
    assert np.allclose(imresize(image / 255.0, scale), 137 / 255, rtol=0, atol=1e-13)


def test_output_sizes_follow_matlab():
    assert imresize(np.zeros((510, 339)), 1 / 3).shape == (170, 113)
    assert imresize(np.zeros((10, 10)), 0.3).shape == (3, 3)
    assert imresize(np.zeros((10, 10)), size=(4, 7)).shape == (4, 7)


def test_mirror_symmetry_is_preserved():
    image = np.random.default_rng(2).random((16, 8))
    symmetric = np.concatenate((image, image[:, ::-1]), axis=1)
    out = imresize(symmetric, 1 / 4)
    np.testing.assert_allclose(out, out[:, ::-1], rtol=0, atol=1e-13)


@pytest.mark.parametrize("kwargs", [{}, {"scale": 0.5, "size": (2, 2)}, {"scale": -1}, {"size": (0, 3)},
                                    {"scale": (0.5, 0.5, 0.5)}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        imresize(np.zeros((8, 8)), **kwargs)
