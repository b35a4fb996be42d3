"""The Triton backend against the float64 brute-force sum and the torch backend's gradients.

Runs on CUDA when there is a GPU, otherwise on the CPU under TRITON_INTERPRET=1 (set by tests/conftest.py),
with smaller fields; skipped where triton is not installed.
"""
from __future__ import annotations

import warnings

import pytest
import torch

import rasterizer
from rasterizer import rasterize
from rasterizer.brute_force import rasterize_brute_force
from backend_checks import TOLERANCE, assert_gradients_match_finite_differences, forward_error, relative_error
from conftest import lattice_field

pytestmark = [pytest.mark.triton,
              pytest.mark.skipif("triton" not in rasterizer.BACKENDS, reason="triton is not installed")]

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
LR = (24, 20) if ON_GPU else (5, 6)  # the interpreter evaluates kernels in numpy: keep CPU fields tiny


def to_device(*tensors):
    return [t.to(DEVICE) for t in tensors]


@pytest.mark.parametrize("scale_h,scale_w", [(1, 1), (1.5, 1.5), (2, 2), (3.3, 3.3), (4, 4), (8, 8),
                                             pytest.param(16, 16, marks=pytest.mark.slow), (2.5, 5.25), (7, 1.75)])
def test_forward_matches_brute_force(scale_h, scale_w):
    xy, chol, col, height, width = lattice_field(2, *LR, scale_h, scale_w, seed=int(10 * scale_h + scale_w))
    out = rasterize(*to_device(xy, chol, col), height, width, backend="triton")
    assert out.shape == (2, 3, height, width) and out.dtype == torch.float32
    assert forward_error(out, xy, chol, col) <= TOLERANCE


@pytest.mark.parametrize("sharpness", [0.0, 10.0])
def test_round_and_elongated_gaussians_match_brute_force(sharpness):
    xy, chol, col, height, width = lattice_field(1, *LR, 3.3, 5.5, seed=3, sharpness=sharpness)
    out = rasterize(*to_device(xy, chol, col), height, width, backend="triton")
    assert forward_error(out, xy, chol, col) <= TOLERANCE


def test_negative_and_large_colours_sum_exactly():
    """The forward's fixed point scales to the largest |colour|: signs and magnitudes pass through."""
    xy, chol, col, height, width = lattice_field(1, *LR, 2.5, 2.5, seed=4)
    col = (col - 0.5) * 1e4
    out = rasterize(*to_device(xy, chol, col), height, width, backend="triton")
    assert forward_error(out, xy, chol, col) <= TOLERANCE


def test_forward_and_backward_are_deterministic():
    """The forward adds in any order (atomics) but in integers: every run gives the same bits."""
    xy, chol, col, height, width = lattice_field(2, *LR, 3, 3, seed=6)
    weight = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    runs = []
    for _ in range(2):
        inputs = [t.clone().requires_grad_(True) for t in to_device(xy, chol, col)]
        out = rasterize(*inputs, height, width, backend="triton")
        (out * weight).sum().backward()
        runs.append([out.detach()] + [t.grad for t in inputs])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.skipif(ON_GPU, reason="counts lanes through the interpreter")
@pytest.mark.parametrize("scale_h,scale_w", [(2, 2), (3.3, 5.5)])
def test_kernels_evaluate_the_pairs_the_plan_counts(monkeypatch, scale_h, scale_w):
    """Every lane of every α evaluation inside the kernels, counted as they run, is `footprints.evaluated_pairs`."""
    from rasterizer import footprints, project, triton_backend

    lanes = []
    evaluate = triton_backend._sigma_weight

    def counting(dx, *args):
        lanes.append(dx.numel)
        return evaluate(dx, *args)

    monkeypatch.setattr(triton_backend, "_sigma_weight", counting)
    xy, chol, col, height, width = lattice_field(2, *LR, scale_h, scale_w, seed=8)
    inputs = [t.clone().requires_grad_(True) for t in (xy, chol, col)]
    out = rasterize(*inputs, height, width, backend="triton")
    forward = sum(int(n) for n in lanes)
    lanes.clear()
    out.sum().backward()
    expected = footprints.evaluated_pairs(project(xy, chol, col, height, width), height, width)
    assert forward == sum(int(n) for n in lanes) == expected > 0


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
    assert_gradients_match_finite_differences(lambda *args: rasterize(*args, backend="triton"), DEVICE)


def test_auto_picks_triton_only_on_cuda():
    assert rasterizer.resolve_backend("auto", torch.device("cpu")) != "triton"
    if ON_GPU:
        assert rasterizer.resolve_backend("auto", torch.device("cuda")) == "triton"


@pytest.mark.parametrize("height,width", [(1, 23), (17, 1), (1, 1)])
def test_one_pixel_high_and_wide_renders_match_brute_force(height, width):
    """Sizes equal to 1 are constexprs to the JIT: the kernels must not treat them as tensors."""
    xy, chol, col, _, _ = lattice_field(2, 3, 4, height / 3, width / 4, seed=height + width)
    weight = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(4))
    inputs = [t.clone().requires_grad_(True) for t in to_device(xy, chol, col)]
    out = rasterize(*inputs, height, width, backend="triton")
    assert out.shape == (2, 3, height, width)
    assert relative_error(out.detach(), rasterize_brute_force(xy, chol, col, height, width)) <= TOLERANCE
    (out * weight.to(DEVICE)).sum().backward()
    refs = [t.clone().requires_grad_(True) for t in to_device(xy, chol, col)]
    (rasterize(*refs, height, width, backend="torch") * weight.to(DEVICE)).sum().backward()
    for ours, ref in zip(inputs, refs):
        assert ((ours.grad - ref.grad).abs().max() / ref.grad.abs().max()) < 1e-4


# `auto`: the Triton backend only after its probe has run it on the device; else torch, with one warning.

@pytest.fixture
def fresh_probes(monkeypatch):
    """No probe run yet in this process; on the CPU, `auto` may pick triton (run by the interpreter)."""
    monkeypatch.setattr(rasterizer, "PROBED", {})
    monkeypatch.setattr(rasterizer.BACKENDS["triton"], "auto_device_types", ("cuda", DEVICE))


def test_auto_picks_triton_once_its_probe_passes(fresh_probes, recwarn):
    with torch.inference_mode():  # the probe needs gradients; callers often render without them
        assert rasterizer.resolve_backend("auto", torch.device(DEVICE)) == "triton"
    assert rasterizer.PROBED == {("triton", DEVICE): ""}
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


class _FailingLaunch:
    """Stands for a kernel whose compilation fails on this machine, as Triton reports it."""

    def __getitem__(self, grid):
        from triton.runtime.errors import PTXASError

        def launch(*args, **kwargs):
            raise PTXASError("ptxas fatal   : Value 'sm_999' is not defined for option 'gpu-name'")
        return launch


def test_auto_falls_back_to_the_next_backend_when_triton_cannot_compile(fresh_probes, monkeypatch):
    from rasterizer import triton_backend
    from triton.runtime.errors import PTXASError

    monkeypatch.setattr(triton_backend, "_forward_kernel", _FailingLaunch())
    xy, chol, col, height, width = lattice_field(1, 3, 3, 2, 2, seed=9)
    xy, chol, col = to_device(xy, chol, col)
    with pytest.warns(RuntimeWarning) as caught:
        out = rasterize(xy, chol, col, height, width)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "triton backend cannot run" in messages[0] and "PTXASError" in messages[0] and "sm_999" in messages[0]
    fallback = rasterizer.resolve_backend("auto", xy.device)  # torch on CUDA; numba (if installed) on the CPU
    assert fallback in ("torch", "numba")
    # the same sum; on CUDA the torch backend's index_add_ adds in no fixed order, so equal to fp32 rounding
    assert relative_error(out, rasterize(xy, chol, col, height, width, backend=fallback).cpu().double()) <= 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: no second warning, no second probe
        assert relative_error(rasterize(xy, chol, col, height, width), out.cpu().double()) <= 1e-6
    with pytest.raises(PTXASError):  # asked for by name, it never falls back
        rasterize(xy, chol, col, height, width, backend="triton")


@pytest.mark.skipif(ON_GPU, reason="needs a machine without CUDA")
def test_auto_on_a_cuda_device_that_cannot_run_triton_uses_torch(monkeypatch):
    monkeypatch.setattr(rasterizer, "PROBED", {})
    with pytest.warns(RuntimeWarning, match=r"triton backend cannot run on cuda .*CUDA"):
        assert rasterizer.resolve_backend("auto", torch.device("cuda")) == "torch"
