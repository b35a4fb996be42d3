"""The torch reference rasterizer against the float64 brute-force sum of docs/DESIGN.md §4."""
from __future__ import annotations

import pytest
import torch

import rasterizer
from rasterizer import rasterize, torch_backend
from rasterizer.brute_force import rasterize_brute_force
from conftest import lattice_field
from backend_checks import TOLERANCE, border_field, relative_error


@pytest.mark.parametrize("scale_h,scale_w", [(1.5, 1.5), (2, 2), (3, 3), (4, 4), (7.3, 7.3), (2.5, 5.25),
                                             (6, 1.7)])
def test_matches_brute_force(scale_h, scale_w):
    xy, chol, col, height, width = lattice_field(2, 7, 9, scale_h, scale_w, seed=int(scale_h * 10 + scale_w))
    out = rasterize(xy, chol, col, height, width, backend="torch")
    assert out.shape == (2, 3, height, width)
    assert relative_error(out, rasterize_brute_force(xy, chol, col, height, width)) <= TOLERANCE


@pytest.mark.parametrize("sharpness", [0.0, 10.0])
def test_matches_brute_force_for_round_and_elongated_gaussians(sharpness):
    xy, chol, col, height, width = lattice_field(1, 8, 8, 3.3, 3.3, seed=3, sharpness=sharpness)
    out = rasterize(xy, chol, col, height, width, backend="torch")
    assert relative_error(out, rasterize_brute_force(xy, chol, col, height, width)) <= TOLERANCE


def test_float64_is_exact():
    xy, chol, col, height, width = lattice_field(1, 6, 5, 2.7, 4.1, seed=5, dtype=torch.float64)
    out = rasterize(xy, chol, col, height, width, backend="torch")
    assert relative_error(out, rasterize_brute_force(xy, chol, col, height, width)) <= 1e-12


def test_gaussians_at_and_beyond_the_border():
    xy, chol, col, height, width = border_field()
    ref = rasterize_brute_force(xy, chol, col, height, width)
    assert ref.abs().max() > 0
    assert relative_error(rasterize(xy, chol, col, height, width, backend="torch"), ref) <= 1e-12


def test_degenerate_covariances_contribute_nothing():
    xy, chol, col, height, width = lattice_field(1, 3, 3, 4, 4, seed=9)
    chol = chol.clone()
    chol[0, 0, :, 0] = 0  # l11 = 0
    chol[0, 1, :, 2] = 0  # l22 = 0
    chol[0, 2] = 0  # all zero
    out = rasterize(xy, chol, col, height, width, backend="torch")
    ref = rasterize_brute_force(xy, chol, col, height, width)
    assert relative_error(out, ref) <= TOLERANCE
    only = torch.zeros_like(chol)
    only[0, 0, :, 0] = 0
    only[0, 0, :, 1:] = 1.0
    assert rasterize(xy, only, col, height, width, backend="torch").abs().max() == 0


def test_large_gaussians_are_not_cut():
    """A field whose covariances are far beyond the dictionary's still sums every α ≥ 1/255 pixel."""
    xy, chol, col, height, width = lattice_field(1, 3, 4, 2, 2, seed=11, dtype=torch.float64)
    chol = chol * 8
    out = rasterize(xy, chol, col, height, width, backend="torch")
    assert relative_error(out, rasterize_brute_force(xy, chol, col, height, width)) <= 1e-12


def test_gaussians_far_larger_than_the_image_cost_only_the_image(monkeypatch):
    """A deep zoom: each Gaussian's box spans ~10^5 pixels a side, the image 12x10. Boxes are clipped to the image,
    so every chunk stays within the image's pixels (unclipped, one box alone would be 10^10) and the sum is exact."""
    xy, chol, col, height, width = lattice_field(1, 2, 2, 3, 2.5, seed=12, dtype=torch.float64)
    chol = chol * 1e5
    boxes = []
    original = torch_backend._chunks

    def recording(*args):
        for chunk in original(*args):
            boxes.append(chunk[1] * chunk[2])
            yield chunk
    monkeypatch.setattr(torch_backend, "_chunks", recording)
    out = rasterize(xy, chol, col, height, width, backend="torch")
    assert boxes and max(boxes) <= height * width
    assert relative_error(out, rasterize_brute_force(xy, chol, col, height, width)) <= 1e-12


def test_chunking_does_not_change_the_result(monkeypatch):
    xy, chol, col, height, width = lattice_field(2, 6, 6, 4, 4, seed=13, dtype=torch.float64)
    whole = rasterize(xy, chol, col, height, width, backend="torch")
    monkeypatch.setattr(torch_backend, "CHUNK_ELEMENTS", 64)
    chunked = rasterize(xy, chol, col, height, width, backend="torch")
    assert torch.allclose(whole, chunked, atol=1e-12)


def test_gradcheck():
    xy, chol, col, height, width = lattice_field(1, 2, 3, 2.5, 3, seed=17, dtype=torch.float64)
    inputs = tuple(t.clone().requires_grad_(True) for t in (xy, chol, col))
    assert torch.autograd.gradcheck(lambda a, b, c: rasterize(a, b, c, height, width, backend="torch"), inputs,
                                    eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradients_match_autograd_of_brute_force():
    """Analytic backward vs autograd through a differentiable float64 dense sum, on a batch of two."""
    xy, chol, col, height, width = lattice_field(2, 3, 3, 3.5, 2.5, seed=19, dtype=torch.float64)
    weight = torch.randn(2, 3, height, width, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def dense(xy, chol, col):
        X = width * (xy[..., 0] + 1) / 2
        Y = height * (xy[..., 1] + 1) / 2
        l11, l21, l22 = chol.unbind(-1)
        a, b, c = l11 * l11, l11 * l21, l21 * l21 + l22 * l22
        det = a * c - b * b
        dx = X.reshape(2, -1, 1, 1) - torch.arange(width, dtype=torch.float64).view(1, 1, 1, -1)
        dy = Y.reshape(2, -1, 1, 1) - torch.arange(height, dtype=torch.float64).view(1, 1, -1, 1)
        A, B, C = ((v / det).reshape(2, -1, 1, 1) for v in (c, -b, a))
        sigma = 0.5 * (A * dx * dx + C * dy * dy) + B * dx * dy
        alpha = torch.exp(-sigma)
        alpha = alpha * (alpha >= rasterizer.ALPHA_MIN)
        return torch.einsum("bnhw,bnc->bchw", alpha, col.reshape(2, -1, 3))

    grads = []
    for fn in (lambda a, b, c: rasterize(a, b, c, height, width, backend="torch"), dense):
        inputs = tuple(t.clone().requires_grad_(True) for t in (xy, chol, col))
        (fn(*inputs) * weight).sum().backward()
        grads.append([t.grad for t in inputs])
    for ours, theirs in zip(*grads):
        assert torch.allclose(ours, theirs, rtol=1e-9, atol=1e-10)


def test_unknown_backend_and_bad_shapes_are_clear_errors():
    xy, chol, col, height, width = lattice_field(1, 2, 2, 2, 2)
    with pytest.raises(ValueError, match="unknown rasterizer backend 'nope'"):
        rasterize(xy, chol, col, height, width, backend="nope")
    with pytest.raises(ValueError, match="cholesky must be"):
        rasterize(xy, chol[..., :2], col, height, width)
    with pytest.raises(ValueError, match="output size"):
        rasterize(xy, chol, col, 0, width)


def test_auto_picks_torch_on_cpu_without_a_compiled_backend(monkeypatch):
    monkeypatch.setattr(rasterizer, "_numba_module", lambda: None)
    assert rasterizer.resolve_backend("auto", torch.device("cpu")) == "torch"


def test_a_box_without_a_pixel_column_renders():
    """A thin Gaussian between two pixel columns, the tallest of the field: its box holds no pixel across."""
    xy, chol, col, height, width = lattice_field(1, 3, 3, 2, 2, seed=2)
    xy, chol = xy.clone(), chol.clone()
    chol[0, 0, 0] = torch.tensor([0.02, 0.0, 8.0])
    xy[0, 0, 0, 0] = 2 * 2.5 / width - 1  # X = 2.5
    out = rasterize(xy, chol, col, height, width, backend="torch")
    assert relative_error(out, rasterize_brute_force(xy, chol, col, height, width)) <= TOLERANCE
