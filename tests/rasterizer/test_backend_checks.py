"""backend_checks.forward_error: it forgives the fp32 rounding at the α ≥ 1/255 cut-off and nothing else."""
from __future__ import annotations

import torch

from rasterizer import rasterize
from rasterizer.brute_force import rasterize_brute_force
from backend_checks import TOLERANCE, forward_error, relative_error
from conftest import lattice_field

# A field at x16 (seed found by search) where one (pixel, Gaussian) pair falls on the other side of the cut-off
# in fp32: the plain relative error sees a step of ~0.004·colour there.
FLIP_FIELD = dict(batch=1, h=6, w=5, scale_h=16, scale_w=16, seed=0)


def test_a_cutoff_flip_is_forgiven_but_a_wrong_pixel_or_a_lost_gaussian_is_not():
    xy, chol, col, height, width = lattice_field(**FLIP_FIELD)
    out = rasterize(xy, chol, col, height, width, backend="torch")
    ref = rasterize_brute_force(xy, chol, col, height, width)
    assert relative_error(out, ref) > 10 * TOLERANCE
    assert forward_error(out, xy, chol, col) <= TOLERANCE

    wrong = out.clone()
    wrong[0, 1, height // 2, width // 3] += 1e-3 * ref.abs().max().item()
    assert forward_error(wrong, xy, chol, col) >= 0.9e-3

    lost = col.clone()
    lost[0, 5, 4] = 0  # a Gaussian the backend did not draw
    assert forward_error(rasterize(xy, chol, lost, height, width, backend="torch"), xy, chol, col) > 10 * TOLERANCE
