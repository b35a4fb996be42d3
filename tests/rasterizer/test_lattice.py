"""The output-pixel formula (rasterizer/lattice.py) and its two evaluations: torch and the compiled CPU pass."""
from __future__ import annotations

import pytest
import torch

import rasterizer
from rasterizer.lattice import centre, lattice_points_torch

# (factor, left, top, win_w, win_h, 1/W, 1/H, s_x, s_y): a window of an 8x10 LR image shown at 13x17.
CONSTS = (2, 0.7, 1.3, 3.1, 2.5, 1 / 17, 1 / 13, 17 / 3.1 / 4, 13 / 2.5 / 4)


def test_centre_puts_output_pixel_centres_where_the_design_says():
    """docs/DESIGN.md §3: LR position u shown over a window is at X = s·(u − origin) − ½ output pixels, given to
    the rasterizer as 2X/W − 1; the LR position of output pixel j's centre is therefore at X = j."""
    width, origin, extent = 17, 0.7, 3.1
    for j in range(width):
        u = origin + (j + 0.5) * extent / width  # the LR position of output pixel j's centre
        index, offset = 0, u  # a cell at the origin of the lattice, drifted to u
        assert centre(index, 1, offset, origin, extent, 1 / width, 1, 2) == pytest.approx(2 * j / width - 1,
                                                                                          abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows,cols", [((0, 8), (0, 10)), ((2, 8), (0, 6))])
def test_the_compiled_pass_gives_the_torch_numbers_bit_for_bit(dtype, rows, cols, monkeypatch):
    numba_backend = pytest.importorskip("rasterizer.numba_backend")
    torch.manual_seed(3)
    offset = torch.rand(2, 8, 10, 2, dtype=dtype) * 2 - 1
    cholesky = torch.randn(2, 8, 10, 3, dtype=dtype)
    calls = []
    compiled_pass = numba_backend.lattice_points
    monkeypatch.setattr(numba_backend, "lattice_points", lambda *args: calls.append(args) or compiled_pass(*args))
    with torch.no_grad():
        compiled = rasterizer.lattice_points(offset, cholesky, rows, cols, CONSTS)
    assert len(calls) == 1  # the compiled pass ran
    reference = lattice_points_torch(offset, cholesky, rows, cols, CONSTS)
    for ours, theirs in zip(compiled, reference):
        assert ours.dtype == dtype and torch.equal(ours, theirs)


def test_tensors_that_need_gradients_take_torch(monkeypatch):
    numba_backend = pytest.importorskip("rasterizer.numba_backend")
    monkeypatch.setattr(numba_backend, "lattice_points", lambda *args: pytest.fail("compiled pass with gradients"))
    offset = torch.zeros(1, 2, 2, 2, requires_grad=True)
    xy, scaled = rasterizer.lattice_points(offset, torch.ones(1, 2, 2, 3), (0, 2), (0, 2), CONSTS)
    assert xy.requires_grad and xy.shape == (1, 2, 2, 2) and scaled.shape == (1, 2, 2, 3)
