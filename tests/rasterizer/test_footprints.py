"""Footprints: every pair the float64 brute force draws lies in its Gaussian's footprint, and the plan's work
stays within twice the pairs drawn. The pixels are enumerated here from the plan's integers as the kernels step
through them (row = first row + t // columns, column from the row's first column), independently of Triton."""
from __future__ import annotations

import pytest
import torch

from rasterizer import footprints, project
from rasterizer.brute_force import drawn_alpha, sigma_brute_force
from conftest import lattice_field


def footprint_mask(xy, chol, col, height, width) -> torch.Tensor:
    """(B·N, height, width) bool: the pixels each Gaussian's lane steps through, as the kernels compute them."""
    work = footprints.plan(project(xy, chol, col, height, width), height, width)
    ints, floats = work.ints.long(), work.floats
    means = project(xy, chol, col, height, width).means.reshape(-1, 2)
    mask = torch.zeros(ints.shape[0], height, width, dtype=torch.bool)
    for lane in range(ints.shape[0]):
        g, first_row, columns, span, count = ints[lane].tolist()
        slope, half = floats[lane]
        x, y = means[g]
        for t in range(count):
            row = first_row + t // columns
            start = int(torch.ceil(x + slope * (torch.tensor(float(row)) - y) - half))
            column = max(start, 0) + t % columns
            if column <= min(start + span - 1, width - 1):
                mask[g, row, column] = True
    return mask


@pytest.mark.parametrize("scale_h,scale_w,sharpness", [(1, 1, 3.0), (2, 2, 3.0), (3.3, 3.3, 10.0), (2.5, 6, 3.0),
                                                       (7, 1.75, 10.0), (8, 8, 0.0)])
def test_every_drawn_pair_lies_in_its_footprint(scale_h, scale_w, sharpness):
    xy, chol, col, height, width = lattice_field(2, 3, 4, scale_h, scale_w, seed=7, sharpness=sharpness)
    xy = xy.clone()
    xy[0, 0, :, 1] -= 0.3  # centres above the top edge and beyond the right one: clipped footprints
    xy[1, :, -1, 0] += 0.4
    drawn = drawn_alpha(*sigma_brute_force(xy, chol, height, width)) > 0
    drawn = drawn.reshape(-1, height, width)
    inside = footprint_mask(xy, chol, col, height, width)
    assert drawn.any() and not (drawn & ~inside).any()


def test_degenerate_gaussians_have_empty_footprints_and_huge_ones_are_clipped():
    xy, chol, col, height, width = lattice_field(1, 3, 3, 2, 2, seed=5)
    chol = chol.clone()
    chol[0, 0] = 0  # degenerate
    chol[0, 2, 2] *= 1e6  # covers the image many times over
    work = footprints.plan(project(xy, chol, col, height, width), height, width)
    count = dict(zip(work.ints[:, footprints.INDEX].tolist(), work.ints[:, footprints.COUNT].tolist()))
    assert all(count[g] == 0 for g in range(chol.shape[2]))
    assert count[2 * chol.shape[2] + 2] == height * width


@pytest.mark.parametrize("scale,sharpness", [(2, 3.0), (4, 10.0), (5.5, 0.0)])
def test_the_work_is_within_twice_the_pairs_drawn(scale, sharpness):
    xy, chol, col, height, width = lattice_field(1, 24, 20, scale, scale, seed=3, sharpness=sharpness)
    drawn = int((drawn_alpha(*sigma_brute_force(xy, chol, height, width)) > 0).sum())
    assert footprints.evaluated_pairs(project(xy, chol, col, height, width), height, width) <= 2 * drawn


def test_programs_run_as_many_steps_as_their_largest_footprint():
    xy, chol, col, height, width = lattice_field(2, 6, 5, 3, 3, seed=1)
    work = footprints.plan(project(xy, chol, col, height, width), height, width)
    count = work.ints[:, footprints.COUNT]
    assert work.steps.shape == (-(-count.numel() // footprints.BLOCK),)
    for program, steps in enumerate(work.steps.tolist()):
        assert steps == count[program * footprints.BLOCK:(program + 1) * footprints.BLOCK].max()
    assert sorted(work.ints[:, footprints.INDEX].tolist()) == list(range(count.numel()))  # every Gaussian once
