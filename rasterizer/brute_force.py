"""The oracle every backend is tested against: the docs/DESIGN.md §4 sum over all pixels × all Gaussians in float64.

O(pixels × Gaussians) memory: for small test fields only.
"""
from __future__ import annotations

import torch

from .projection import ALPHA_MIN


def sigma_brute_force(xy: torch.Tensor, cholesky: torch.Tensor, height: int,
                      width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(σ, drawn): (B, N, height, width) float64 exponents σ at every pixel centre, and (B, N, 1, 1) whether
    each covariance is positive definite."""
    xy, cholesky = (t.detach().to(torch.float64) for t in (xy, cholesky))
    batch = xy.shape[0]
    X = (width * (xy[..., 0] + 1) / 2).reshape(batch, -1, 1, 1)
    Y = (height * (xy[..., 1] + 1) / 2).reshape(batch, -1, 1, 1)
    l11, l21, l22 = (v.reshape(batch, -1, 1, 1) for v in cholesky.unbind(-1))
    a, b, c = l11 * l11, l11 * l21, l21 * l21 + l22 * l22
    det = a * c - b * b
    ok = det > 0
    det = torch.where(ok, det, torch.ones_like(det))
    A, B, C = c / det, -b / det, a / det
    j = torch.arange(width, dtype=torch.float64).view(1, 1, 1, width)
    i = torch.arange(height, dtype=torch.float64).view(1, 1, height, 1)
    dx, dy = X - j, Y - i
    return 0.5 * (A * dx * dx + C * dy * dy) + B * dx * dy, ok


def rasterize_brute_force(xy: torch.Tensor, cholesky: torch.Tensor, colour: torch.Tensor, height: int,
                          width: int) -> torch.Tensor:
    """(B, C, height, width) float64 render, each formula written out as in the design."""
    sigma, ok = sigma_brute_force(xy, cholesky, height, width)
    batch, channels = xy.shape[0], colour.shape[-1]
    alpha = torch.clamp(torch.exp(-sigma), max=1.0)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_MIN) & ok, alpha, torch.zeros_like(alpha))
    return torch.einsum("bnhw,bnc->bchw", alpha, colour.detach().to(torch.float64).reshape(batch, -1, channels))
