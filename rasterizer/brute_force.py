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


def drawn_alpha(sigma: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """α = exp(−σ) where the Gaussian is drawn (σ ≥ 0, α ≥ 1/255, positive definite), else 0; same shape as σ."""
    alpha = torch.clamp(torch.exp(-sigma), max=1.0)
    return torch.where((sigma >= 0) & (alpha >= ALPHA_MIN) & ok, alpha, torch.zeros_like(alpha))


def sum_colours(alpha: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float64 Σ_n alpha[b, n] · colour[b, n] for alpha (B, N, H, W) and colour (B, ..., C)."""
    colour = colour.detach().to(torch.float64)
    return torch.einsum("bnhw,bnc->bchw", alpha, colour.reshape(colour.shape[0], -1, colour.shape[-1]))


def rasterize_brute_force(xy: torch.Tensor, cholesky: torch.Tensor, colour: torch.Tensor, height: int,
                          width: int) -> torch.Tensor:
    """(B, C, height, width) float64 render, each formula written out as in the design."""
    return sum_colours(drawn_alpha(*sigma_brute_force(xy, cholesky, height, width)), colour)
