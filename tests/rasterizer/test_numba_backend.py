"""The numba CPU backend against the float64 brute-force sum, the torch backend's gradients and finite
differences; skipped where numba is not installed."""
from __future__ import annotations

import threading

import pytest
import torch

import rasterizer
from rasterizer import rasterize
from rasterizer.brute_force import rasterize_brute_force
from conftest import lattice_field, make_tiny_model
from backend_checks import TOLERANCE, assert_gradients_match_finite_differences, border_field, relative_error

numba = pytest.importorskip("numba")
from rasterizer import numba_backend  # noqa: E402


def box_widths(xy, chol, col, height, width) -> torch.Tensor:
    """Widths in pixels of the Gaussians' α ≥ 1/255 boxes inside the image."""
    g = rasterizer.project(xy, chol, col, height, width)
    x, half_width = g.means[..., 0], g.extents[..., 0]
    return (x + half_width).clamp(max=width - 1) - (x - half_width).clamp(min=0)


def render(xy, chol, col, height, width):
    return rasterize(xy, chol, col, height, width, backend="numba")


@pytest.mark.parametrize("scale_h,scale_w", [(1.5, 1.5), (2, 2), (3.3, 3.3), (4, 4), (7.3, 7.3), (8, 8),
                                             (16, 16), (2.5, 5.25), (7, 1.75)])
def test_forward_matches_brute_force(scale_h, scale_w):
    xy, chol, col, height, width = lattice_field(2, 5, 6, scale_h, scale_w, seed=int(10 * scale_h + scale_w))
    out = render(xy, chol, col, height, width)
    assert out.shape == (2, 3, height, width) and out.dtype == torch.float32
    assert relative_error(out, rasterize_brute_force(xy, chol, col, height, width)) <= TOLERANCE


@pytest.mark.parametrize("sharpness", [0.0, 10.0])
def test_round_and_elongated_gaussians(sharpness):
    xy, chol, col, height, width = lattice_field(1, 8, 8, 3.3, 3.3, seed=3, sharpness=sharpness)
    out = render(xy, chol, col, height, width)
    assert relative_error(out, rasterize_brute_force(xy, chol, col, height, width)) <= TOLERANCE


def test_thin_rotated_gaussians():
    """Needle-like Gaussians at every angle: the row spans solved from the quadratic must not cut them."""
    xy, chol, col, height, width = lattice_field(1, 6, 6, 6, 6, seed=4)
    angle = torch.rand(chol.shape[:-1], generator=torch.Generator().manual_seed(4)) * torch.pi
    long_side, short_side = 9.0, 0.15  # pixels
    # L = R·diag(long, short) made lower-triangular: Σ = L Lᵀ with l11 = |Σ col 1|, as a Cholesky factor.
    c, s = torch.cos(angle), torch.sin(angle)
    sxx = (long_side * c) ** 2 + (short_side * s) ** 2
    sxy = (long_side ** 2 - short_side ** 2) * c * s
    syy = (long_side * s) ** 2 + (short_side * c) ** 2
    l11 = sxx.sqrt()
    l21 = sxy / l11
    l22 = (syy - l21 ** 2).clamp_min(1e-6).sqrt()
    chol = torch.stack((l11, l21, l22), -1)
    assert box_widths(xy, chol, col, height, width).max() > numba_backend.ROW_SPAN_MIN_WIDTH  # trimmed rows
    out = render(xy, chol, col, height, width)
    ref = rasterize_brute_force(xy, chol, col, height, width)
    assert relative_error(out, ref) <= TOLERANCE


@pytest.mark.parametrize("shape", [(1, 5, 1.0, 3.0), (5, 1, 3.0, 1.0), (3, 4, 2.9, 3.1), (6, 12, 6.1, 12.3)])
def test_odd_sizes_one_row_one_column_and_several_tiles(shape):
    h, w, scale_h, scale_w = shape
    xy, chol, col, height, width = lattice_field(2, h, w, scale_h, scale_w, seed=h * 7 + w)
    out = render(xy, chol, col, height, width)
    assert out.shape == (2, 3, height, width)
    assert relative_error(out, rasterize_brute_force(xy, chol, col, height, width)) <= TOLERANCE


def test_several_tiles_in_both_directions():
    xy, chol, col, height, width = lattice_field(1, 9, 18, 7.7, 15.1, seed=21)
    assert height > numba_backend.TILE_H and width > numba_backend.TILE_W
    out = render(xy, chol, col, height, width)
    assert relative_error(out, rasterize_brute_force(xy, chol, col, height, width)) <= TOLERANCE


def test_float64_is_exact():
    xy, chol, col, height, width = lattice_field(2, 6, 5, 2.7, 4.1, seed=5, dtype=torch.float64)
    out = render(xy, chol, col, height, width)
    assert out.dtype == torch.float64
    assert relative_error(out, rasterize_brute_force(xy, chol, col, height, width)) <= 1e-12


def test_gaussians_at_and_beyond_the_border():
    xy, chol, col, height, width = border_field()
    ref = rasterize_brute_force(xy, chol, col, height, width)
    assert ref.abs().max() > 0
    assert relative_error(render(xy, chol, col, height, width), ref) <= 1e-12


def test_degenerate_and_oversized_gaussians():
    xy, chol, col, height, width = lattice_field(1, 4, 4, 3, 3, seed=9)
    chol = chol.clone()
    chol[0, 0, :, 0] = 0  # l11 = 0
    chol[0, 1, :, 2] = 0  # l22 = 0
    chol[0, 3, 3] *= 12  # one far-reaching Gaussian widens every tile's window
    out = render(xy, chol, col, height, width)
    assert relative_error(out, rasterize_brute_force(xy, chol, col, height, width)) <= TOLERANCE


def test_large_gaussians_are_not_cut():
    xy, chol, col, height, width = lattice_field(1, 3, 4, 2, 2, seed=11, dtype=torch.float64)
    chol = chol * 8
    out = render(xy, chol, col, height, width)
    assert relative_error(out, rasterize_brute_force(xy, chol, col, height, width)) <= 1e-12


def test_nothing_valid_and_empty_lattices_render_zeros():
    xy, chol, col, height, width = lattice_field(2, 3, 3, 2, 2, seed=7)
    out = render(xy, torch.zeros_like(chol), col, height, width)
    assert out.shape == (2, 3, height, width) and torch.count_nonzero(out) == 0
    empty = render(xy[:, :0], chol[:, :0], col[:, :0], 5, 7)
    assert empty.shape == (2, 3, 5, 7) and torch.count_nonzero(empty) == 0


@pytest.mark.parametrize("channels", [1, 4, 7])
def test_channel_counts_other_than_three(channels):
    xy, chol, _, height, width = lattice_field(2, 4, 5, 3.5, 2.5, seed=12)
    col = torch.rand(*xy.shape[:-1], channels, generator=torch.Generator().manual_seed(12))
    out = render(xy, chol, col, height, width)
    assert out.shape == (2, channels, height, width)
    assert relative_error(out, rasterize_brute_force(xy, chol, col, height, width)) <= TOLERANCE


def test_other_dtypes_are_computed_in_float32():
    xy, chol, col, height, width = (t.bfloat16() if torch.is_tensor(t) else t
                                    for t in lattice_field(1, 4, 4, 3, 3, seed=14))
    out = numba_backend.rasterize_numba(xy, chol, col, height, width)
    assert out.dtype == torch.bfloat16
    single = numba_backend.rasterize_numba(xy.float(), chol.float(), col.float(), height, width)
    assert torch.equal(out, single.bfloat16())


@numba.njit
def compiled_projection(xy, chol, consts, means, factors, extents):
    """The projection the numba kernels apply to each Gaussian they meet, over a whole lattice."""
    batch, hg, wg = xy.shape[0], xy.shape[1], xy.shape[2]
    for b in range(batch):
        for r in range(hg):
            for c in range(wg):
                X, Y, ex, ey = numba_backend._centre_extents(xy, chol, b, r, c, consts)
                means[b, r, c, 0], means[b, r, c, 1], extents[b, r, c, 0], extents[b, r, c, 1] = X, Y, ex, ey
                p, q, rr = numba_backend._factors(chol, b, r, c, consts[5])
                factors[b, r, c, 0], factors[b, r, c, 1], factors[b, r, c, 2] = p, q, rr


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_projection_is_the_torch_projection(dtype):
    """The numba kernels project each Gaussian (`_centre_extents`, `_factors`) exactly as `projection.project`,
    degenerate factors included; extents (used only to cull, with slack) to an ulp, as torch's vectorised square
    root is not always correctly rounded."""
    xy, chol, col, height, width = lattice_field(2, 5, 7, 3.7, 2.2, seed=23, dtype=dtype)
    chol = chol.clone()
    chol[0, 1, :, 0] = 0  # l11 = 0
    chol[1, 2, 3, 2] = 0  # l22 = 0
    chol[1, 0, 0] = -chol[1, 0, 0]  # negative diagonals are valid factors
    ref = rasterizer.project(xy, chol, col, height, width)
    batch, hg, wg, _ = col.shape
    means, factors, extents = (torch.full((batch, hg, wg, k), float("nan"), dtype=dtype) for k in (2, 3, 2))
    compiled_projection(xy.numpy(), chol.numpy(), numba_backend._projection_consts(dtype, height, width),
                        means.numpy(), factors.numpy(), extents.numpy())
    assert torch.equal(means, ref.means) and torch.equal(factors, ref.inv_factors)
    assert torch.equal(extents == 0, ref.extents == 0)
    assert torch.allclose(extents, ref.extents, rtol=2 * torch.finfo(dtype).eps, atol=0)
    valid = (ref.extents[..., 0] > 0)[..., None]
    assert torch.equal(ref.colours, torch.where(valid, col, 0))  # what the kernels skip: degenerate Gaussians


def test_float32_exp_is_within_two_ulp():
    @numba.njit
    def exp_neg(values, out):
        for k in range(values.size):
            out[k] = numba_backend._exp_neg(values[k])

    sigma = torch.linspace(0, numba_backend.SIGMA_CLAMP, 1_000_001).numpy()
    out = torch.empty(sigma.shape).numpy()
    exp_neg(sigma, out)
    exact = torch.exp(-torch.from_numpy(sigma).double())
    ulp = torch.from_numpy(out).double().sub(exact).abs() / torch.finfo(torch.float32).eps / exact
    assert ulp.max() <= 2  # in units of the float32 spacing at the value (relative to 2^-23)


def test_threads_give_identical_results():
    """Each tile owns its pixels and each Gaussian its gradients: no races, so 1 or 2 threads agree bitwise."""
    xy, chol, col, height, width = lattice_field(3, 9, 10, 4.5, 7.25, seed=15)
    weight = torch.randn(3, 3, height, width, generator=torch.Generator().manual_seed(15))
    results = []
    saved = torch.get_num_threads()
    try:
        for threads in (1, 2, 2):
            torch.set_num_threads(threads)
            inputs = [t.clone().requires_grad_(True) for t in (xy, chol, col)]
            out = render(*inputs, height, width)
            (out * weight).sum().backward()
            results.append([out.detach()] + [t.grad for t in inputs])
    finally:
        torch.set_num_threads(saved)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


def test_concurrent_calls_from_python_threads():
    xy, chol, col, height, width = lattice_field(1, 6, 6, 4, 4, seed=16)
    expected = render(xy, chol, col, height, width)
    outputs = [None] * 4

    def work(k):
        outputs[k] = render(xy, chol, col, height, width)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(outputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(out, expected) for out in outputs)


def assert_gradients_match_torch(xy, chol, col, height, width, seed: int) -> None:
    """The numba backend's gradients of a random weighting of the render are the torch backend's."""
    weight = torch.randn(xy.shape[0], col.shape[-1], height, width, generator=torch.Generator().manual_seed(seed))
    grads = {}
    for backend in ("numba", "torch"):
        inputs = [t.clone().requires_grad_(True) for t in (xy, chol, col)]
        (rasterize(*inputs, height, width, backend=backend) * weight).sum().backward()
        grads[backend] = [t.grad for t in inputs]
    for ours, ref in zip(grads["numba"], grads["torch"]):
        assert ((ours - ref).abs().max() / ref.abs().max()) < 1e-4


@pytest.mark.parametrize("scale_h,scale_w,channels", [(1.5, 1.5, 3), (4, 4, 3), (2.5, 6, 3), (3, 3, 4)])
def test_gradients_match_the_torch_backend(scale_h, scale_w, channels):
    xy, chol, _, height, width = lattice_field(2, 5, 6, scale_h, scale_w, seed=11)
    col = torch.rand(*xy.shape[:-1], channels, generator=torch.Generator().manual_seed(11))
    assert_gradients_match_torch(xy, chol, col, height, width, seed=1)


def test_gradients_of_wide_gaussians_match_the_torch_backend():
    """Boxes wider than ROW_SPAN_MIN_WIDTH: the backward gathers over the trimmed row spans, as the forward draws."""
    xy, chol, col, height, width = lattice_field(1, 6, 8, 8, 8, seed=21)
    chol = chol * 3
    assert box_widths(xy, chol, col, height, width).max() > numba_backend.ROW_SPAN_MIN_WIDTH  # trimmed rows
    assert_gradients_match_torch(xy, chol, col, height, width, seed=5)


def test_compiled_reach_is_the_lattice_reach():
    """The window margins the numba forward computes in a compiled loop are `projection.lattice_reach`'s."""
    xy, chol, col, height, width = lattice_field(2, 5, 6, 3.3, 2.5, seed=29, dtype=torch.float64)
    chol = chol.clone()
    chol[1, 2, 3] *= 9  # one far-reaching Gaussian sets a margin
    chol[0, :, 0, 0] = 0  # degenerate ones are left out
    consts = numba_backend._projection_consts(torch.float64, height, width)
    g = rasterizer.project(xy, chol, col, height, width)
    boxes = torch.full(xy.shape[:-1] + (4,), float("nan"), dtype=torch.float64)
    ours = torch.tensor(numba_backend._reach(xy.numpy(), chol.numpy(), consts, height, width, boxes.numpy()),
                        dtype=torch.float64)
    assert torch.allclose(ours, rasterizer.projection.lattice_reach(g.means, g.extents, height, width).double(),
                          rtol=0, atol=1e-5)
    # ... and it leaves every Gaussian's centre and half-widths for the tiles
    assert torch.equal(boxes[..., :2], g.means)
    assert torch.allclose(boxes[..., 2:], g.extents, rtol=2 * torch.finfo(torch.float64).eps, atol=0)
    none = torch.zeros_like(chol)
    g = rasterizer.project(xy, none, col, height, width)
    for lo_x, hi_x, lo_y, hi_y in (numba_backend._reach(xy.numpy(), none.numpy(), consts, height, width,
                                                        boxes.numpy()),
                                   rasterizer.projection.lattice_reach(g.means, g.extents, height, width).tolist()):
        assert lo_x > hi_x and lo_y > hi_y  # nothing valid: empty windows


def test_gradcheck_float64():
    xy, chol, col, height, width = lattice_field(1, 2, 3, 2.5, 3, seed=17, dtype=torch.float64)
    inputs = tuple(t.clone().requires_grad_(True) for t in (xy, chol, col))
    assert torch.autograd.gradcheck(lambda a, b, c: render(a, b, c, height, width), inputs,
                                    eps=1e-6, atol=1e-6, rtol=1e-4)


def test_float32_gradients_match_float64_finite_differences():
    assert_gradients_match_finite_differences(render)


def test_auto_picks_numba_on_cpu_and_torch_without_it(monkeypatch):
    assert rasterizer.resolve_backend("auto", torch.device("cpu")) == "numba"
    monkeypatch.setattr(rasterizer, "_numba_module", lambda: None)  # numba absent or not importable
    assert rasterizer.resolve_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="cannot run on cpu"):
        rasterizer.resolve_backend("numba", torch.device("cpu"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compile_kernels_covers_what_a_model_render_calls(monkeypatch, dtype):
    """Once compile_kernels(dtype) has run, a model's encode and render at an odd scale compile nothing more."""
    numba_backend.compile_kernels(dtype)

    def compile_again(*args, **kwargs):
        raise AssertionError("a render needed a kernel that compile_kernels did not compile")

    for kernel in (numba_backend._forward, numba_backend._lattice_points):
        monkeypatch.setattr(kernel, "_compile_for_args", compile_again)
    model = make_tiny_model().to(dtype)
    with torch.no_grad():
        out = model.render(model.encode(torch.rand(1, 3, 9, 7, dtype=dtype)), scale=(3.5, 2.25))
    assert out.dtype == dtype and out.shape[-2:] == (32, 16) and torch.isfinite(out).all()
