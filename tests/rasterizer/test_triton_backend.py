"""The Triton backend against the float64 brute-force sum and the torch backend's gradients.

Runs on CUDA when there is a GPU, otherwise on the CPU under TRITON_INTERPRET=1 (set by tests/conftest.py),
with smaller fields; skipped where triton is not installed.
"""
from __future__ import annotations

import pytest
import torch

import rasterizer
from rasterizer import rasterize
from rasterizer.brute_force import rasterize_brute_force
from conftest import lattice_field

pytestmark = pytest.mark.skipif("triton" not in rasterizer.BACKENDS, reason="triton is not installed")

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
LR = (24, 20) if ON_GPU else (5, 6)  # the interpreter evaluates kernels in numpy: keep CPU fields tiny
TOLERANCE = 1e-5


def to_device(*tensors):
    return [t.to(DEVICE) for t in tensors]


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double().cpu() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("scale_h,scale_w", [(1.5, 1.5), (2, 2), (3.3, 3.3), (4, 4), (8, 8),
                                             pytest.param(16, 16, marks=pytest.mark.slow), (2.5, 5.25), (7, 1.75)])
def test_forward_matches_brute_force(scale_h, scale_w):
    xy, chol, col, height, width = lattice_field(2, *LR, scale_h, scale_w, seed=int(10 * scale_h + scale_w))
    out = rasterize(*to_device(xy, chol, col), height, width, backend="triton")
    assert out.shape == (2, 3, height, width) and out.dtype == torch.float32
    assert relative_error(out, rasterize_brute_force(xy, chol, col, height, width)) <= TOLERANCE


def test_odd_output_sizes_and_border_gaussians():
    xy, chol, col, height, width = lattice_field(1, 5, 7, 2.9, 3.1, seed=3)
    xy = xy.clone()
    xy[0, 0, :, 1] -= 0.3  # above the top edge
    xy[0, :, -1, 0] += 0.4  # beyond the right edge
    out = rasterize(*to_device(xy, chol * 2, col), height, width, backend="triton")
    assert relative_error(out, rasterize_brute_force(xy, chol * 2, col, height, width)) <= TOLERANCE


def test_degenerate_and_oversized_gaussians():
    xy, chol, col, height, width = lattice_field(1, 4, 4, 3, 3, seed=5)
    chol = chol.clone()
    chol[0, 0, :, 2] = 0  # degenerate row: contributes nothing
    chol[0, 3, 3] *= 6  # one far-reaching Gaussian widens the window for all tiles
    out = rasterize(*to_device(xy, chol, col), height, width, backend="triton")
    assert relative_error(out, rasterize_brute_force(xy, chol, col, height, width)) <= TOLERANCE


def test_nothing_valid_renders_zeros():
    xy, chol, col, height, width = lattice_field(1, 3, 3, 2, 2, seed=7)
    out = rasterize(*to_device(xy, torch.zeros_like(chol), col), height, width, backend="triton")
    assert torch.count_nonzero(out) == 0


@pytest.mark.parametrize("scale_h,scale_w", [(1.5, 1.5), (4, 4), (2.5, 6)])
def test_gradients_match_the_torch_backend(scale_h, scale_w):
    xy, chol, col, height, width = lattice_field(2, *LR, scale_h, scale_w, seed=11)
    weight = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(1))
    grads = {}
    for backend in ("triton", "torch"):
        inputs = [t.clone().requires_grad_(True) for t in to_device(xy, chol, col)]
        (rasterize(*inputs, height, width, backend=backend) * weight.to(DEVICE)).sum().backward()
        grads[backend] = [t.grad.cpu() for t in inputs]
    for ours, ref in zip(grads["triton"], grads["torch"]):
        assert ((ours - ref).abs().max() / ref.abs().max()) < 1e-4


def test_gradients_match_float64_finite_differences():
    """Directional derivative of a weighted sum: analytic fp32 gradient vs central differences in float64."""
    xy, chol, col, height, width = lattice_field(1, 3, 3, 2.5, 2.5, seed=13, dtype=torch.float64)
    weight = torch.randn(1, 3, height, width, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    inputs = [t.float().to(DEVICE).requires_grad_(True) for t in (xy, chol, col)]
    (rasterize(*inputs, height, width, backend="triton") * weight.float().to(DEVICE)).sum().backward()
    g = torch.Generator().manual_seed(3)
    directions = [torch.randn(t.shape, dtype=torch.float64, generator=g) for t in (xy, chol, col)]
    directions[0] *= 1e-2  # xy is normalised: a pixel is ~0.1 of it here

    def loss(step):
        shifted = [t + step * d for t, d in zip((xy, chol, col), directions)]
        return (rasterize_brute_force(*shifted, height, width) * weight).sum()

    eps = 1e-6
    numeric = (loss(eps) - loss(-eps)) / (2 * eps)
    analytic = sum((t.grad.double().cpu() * d).sum() for t, d in zip(inputs, directions))
    assert abs(analytic - numeric) <= 1e-3 * abs(numeric)


def test_auto_picks_triton_only_on_cuda():
    assert rasterizer.resolve_backend("auto", torch.device("cpu")) == "torch"
    if ON_GPU:
        assert rasterizer.resolve_backend("auto", torch.device("cuda")) == "triton"
