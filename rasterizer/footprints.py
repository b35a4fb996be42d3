"""Each Gaussian's own footprint, and the work plan the Triton kernels and the pair counter share.

A Gaussian draws pixel (i, j) iff σ ≤ ln 255. With u = j − X, v = i − Y and Σ⁻¹ = L⁻ᵀL⁻¹ (inverse factors
p, q, r: Σ⁻¹_xx = p² + r²q²), the drawn rows are |v| ≤ h = √(2 ln 255 · Σ_yy) (the projection's y extent), and on
row v the drawn columns lie within w = √(2 ln 255 / Σ⁻¹_xx) of the ellipse's centre line u = s·v, s = r²q / Σ⁻¹_xx.
The footprint is that parallelogram in pixels: rows ⌈Y − h⌉…⌊Y + h⌋ clipped to the image, and on each row the
⌊2w⌋ + 1 columns from ⌈X + s(i − Y) − w⌉, clipped to the image. It holds the ellipse (4/π of its area, plus
rounding), whatever the Gaussian's orientation or elongation.

The kernels run one lane per Gaussian, BLOCK lanes per program, each lane stepping through its own footprint;
a program runs as many steps as its largest footprint. Gaussians are ordered by footprint size (a stable sort) so
that the Gaussians of one program have footprints of about the same size. `plan` computes all of this once, as
torch operations on the Gaussians' device (nothing copied to the host); the kernels' launch and loop bounds and
`evaluated_pairs` all read it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .projection import EXTENT_SLACK, SIGMA_MAX, ProjectedGaussians

# Gaussians (lanes) per program: one warp. Fewer lanes idle less behind a program's largest footprint.
BLOCK = 32
# Relative slack on a row's first column for the fp32 rounding of X + s(i − Y) − w in the kernels (8 ulps of the
# largest term), so that no drawn pixel ever falls outside the footprint.
COORD_SLACK = 2.0 ** -20
# Columns of `ints`: the Gaussian's flat index (batch · Hg · Wg + cell), its first row, the columns a lane steps
# through per row, the row's full column count before clipping, and the lane's steps (rows × columns).
INT_FIELDS = 5
INDEX, FIRST_ROW, COLUMNS, SPAN, COUNT = range(INT_FIELDS)
# Columns of `floats`: the centre line's slope s and the half-width w.
FLOAT_FIELDS = 2
SLOPE, HALF_WIDTH = range(FLOAT_FIELDS)


@dataclass
class Plan:
    """The kernels' work: per lane (Gaussians in footprint-size order) `ints` (N, 5) int32 and `floats` (N, 2)
    float32, columns as named above; `steps` (programs,) int32, the largest COUNT among each program's lanes."""

    ints: torch.Tensor
    floats: torch.Tensor
    steps: torch.Tensor


def plan(gaussians: ProjectedGaussians, height: int, width: int) -> Plan:
    """The footprint of every Gaussian of the (B, Hg, Wg) field rendered at height x width, in program order."""
    means = gaussians.means.detach().reshape(-1, 2).float()
    p, q, r = gaussians.inv_factors.detach().reshape(-1, 3).float().unbind(-1)
    extents = gaussians.extents.reshape(-1, 2).float()
    x, y = means.unbind(-1)
    valid = extents[:, 0] > 0
    precision_xx = torch.where(valid, p * p + r * r * q * q, torch.ones_like(p))
    slope = torch.where(valid, r * r * q / precision_xx, torch.zeros_like(p))
    rows_half = extents[:, 1]
    half = torch.sqrt(2 * SIGMA_MAX / precision_xx)
    half = half * (1 + EXTENT_SLACK) + EXTENT_SLACK + (x.abs() + slope.abs() * rows_half + half) * COORD_SLACK
    first_row = torch.ceil(y - rows_half).clamp(min=0)
    rows = (torch.floor(y + rows_half).clamp(max=height - 1) - first_row + 1).clamp(min=0)
    reach_x = slope.abs() * rows_half + half  # the parallelogram's horizontal half-extent about X
    touches = valid & (x + reach_x >= 0) & (x - reach_x <= width - 1) & (rows > 0)
    # A half-width past this spans the whole image on every row already: capped there, spans stay int32.
    half = torch.minimum(half, width + x.abs() + slope.abs() * rows_half + 1)
    span = torch.floor(2 * half) + 1  # a row's columns; those inside the image, at most `width`, are stepped
    columns = span.clamp(max=width)
    # exact in int64 (fp32 loses integers past 2^24); ≤ height · width, which the backend keeps below 2^31
    count = torch.where(touches, rows.long() * columns.long(), 0).to(torch.int32)
    count, order = torch.sort(count, stable=True)
    ints = torch.stack((order.to(torch.int32), first_row[order].to(torch.int32), columns[order].to(torch.int32),
                        span[order].to(torch.int32), count), -1).contiguous()
    floats = torch.stack((slope[order], half[order]), -1).contiguous()
    pad = (-count.numel()) % BLOCK
    steps = torch.cat((count, count.new_zeros(pad))).view(-1, BLOCK).amax(1)
    return Plan(ints, floats, steps.contiguous())


def evaluated_pairs(gaussians: ProjectedGaussians, height: int, width: int) -> int:
    """The (pixel, Gaussian) pairs each Triton kernel (forward, and backward alike) evaluates for this field: every
    lane of every program, for as many steps as its program runs."""
    return BLOCK * int(plan(gaussians, height, width).steps.long().sum())
