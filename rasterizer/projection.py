"""From the head's Gaussian parameters to what a rasterizer consumes: pixel centres, conics, colours, extents.

Everything here is plain differentiable torch on per-Gaussian tensors; backends only sum Gaussians over pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# A Gaussian is drawn where α = exp(−σ) ≥ 1/255 (the official rasterizer's cut-off), i.e. σ ≤ ln 255.
ALPHA_MIN = 1.0 / 255.0
SIGMA_MAX = math.log(255.0)
# Extents are widened by this much (relative and in pixels) so that float rounding never culls a drawn pixel.
EXTENT_SLACK = 1e-3
# Slack (pixels) on a lattice window's bounds so that float rounding never drops a Gaussian at the window's edge.
WINDOW_SLACK = 1e-3


@dataclass
class ProjectedGaussians:
    """Gaussians in output-pixel space, each tensor (B, Hg, Wg, ·) on the lattice of the head.

    means: (X, Y) centres, pixel (i, j) sitting at X = j, Y = i.
    inv_factors: (p, q, r) with L⁻¹d = (p·dx, r·(dy − q·dx)), so σ = ½|L⁻¹d|² = ½(A dx² + C dy²) + B dx dy
        without the cancellation that makes the conic form lose float32 precision on elongated Gaussians.
    colours: (C channels), zero for degenerate Gaussians.
    extents: half-widths (x, y) of the α ≥ 1/255 ellipse's bounding box, zero for degenerate Gaussians (not
        differentiable; used only for culling).
    """

    means: torch.Tensor
    inv_factors: torch.Tensor
    colours: torch.Tensor
    extents: torch.Tensor


def project(xy: torch.Tensor, cholesky: torch.Tensor, colour: torch.Tensor, height: int,
            width: int) -> ProjectedGaussians:
    """Normalised centres and Cholesky factors (output pixels) → pixel centres, inverse factors, extents."""
    x = width * (xy[..., 0] + 1) / 2
    y = height * (xy[..., 1] + 1) / 2
    l11, l21, l22 = cholesky.unbind(-1)
    # det(L Lᵀ) = (l11 l22)²: computed from the factor so that a degenerate factor gives exactly zero.
    valid = (l11 * l22) ** 2 > 0
    safe_l11 = torch.where(valid, l11, torch.ones_like(l11))
    safe_l22 = torch.where(valid, l22, torch.ones_like(l22))
    inv_factors = torch.stack((1 / safe_l11, l21 / safe_l11, 1 / safe_l22), -1) * valid.unsqueeze(-1)
    colours = colour * valid.unsqueeze(-1)
    with torch.no_grad():  # Σ_xx = l11², Σ_yy = l21² + l22²
        variances = torch.stack((l11 * l11, l21 * l21 + l22 * l22), -1)
        half_widths = torch.sqrt(2 * SIGMA_MAX * variances)
        extents = (half_widths * (1 + EXTENT_SLACK) + EXTENT_SLACK) * valid.unsqueeze(-1)
    return ProjectedGaussians(torch.stack((x, y), -1), inv_factors, colours, extents)


def lattice_reach(means: torch.Tensor, extents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(x_lo, x_hi, y_lo, y_hi), a float32 tensor on the Gaussians' device: bounds of (centre − anchor) ∓
    half-width over every valid Gaussian (means, extents: (B, Hg, Wg, 2) from `project`), widened by
    WINDOW_SLACK; lo > hi when none is valid. A Gaussian anchored at pixel position a (= W·c/Wg per axis) can only
    draw pixels within [a + lo, a + hi], so a tile needs only the lattice window these bounds give. Torch ops on
    the device, nothing copied to the host (the Triton backend); the numba backend computes the same bounds in a
    compiled loop (`numba_backend._reach`, held to this by a test).
    """
    hg, wg = means.shape[1:3]
    anchor_x = torch.arange(wg, device=means.device, dtype=means.dtype) * (width / wg)
    anchor_y = torch.arange(hg, device=means.device, dtype=means.dtype).unsqueeze(-1) * (height / hg)
    valid = extents[..., 0] > 0
    drift_x = means[..., 0] - anchor_x
    drift_y = means[..., 1] - anchor_y
    big = torch.finfo(means.dtype).max
    bounds = torch.stack((torch.where(valid, drift_x - extents[..., 0], big).amin(),
                          torch.where(valid, drift_x + extents[..., 0], -big).amax(),
                          torch.where(valid, drift_y - extents[..., 1], big).amin(),
                          torch.where(valid, drift_y + extents[..., 1], -big).amax()))
    # (−1, 1, −1, 1), made on the device so that nothing is copied from the host
    outward = 2.0 * (torch.arange(4, device=means.device) % 2) - 1
    # No valid Gaussian: an empty window (lo > hi) on both axes.
    bounds = torch.where(valid.any(), bounds, -outward)
    return (bounds + outward * WINDOW_SLACK).float().contiguous()
