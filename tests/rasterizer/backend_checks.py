"""Checks that every rasterizer backend's tests share: the relative error against the float64 brute-force sum
(beyond what the α ≥ 1/255 cut-off leaves to rounding, on large fields), a field whose Gaussians sit on and beyond
the image border, and the float64 finite differences of a weighted sum that a backend's fp32 gradients must
match."""
from __future__ import annotations

from typing import Callable

import torch

from rasterizer.brute_force import drawn_alpha, rasterize_brute_force, sigma_brute_force, sum_colours
from rasterizer.projection import ALPHA_MIN
from conftest import lattice_field

Render = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, int], torch.Tensor]
TOLERANCE = 1e-5  # of max |output|: every backend's fp32 sum against the float64 one
# A (pixel, Gaussian) pair whose float64 α lies within this relative distance of the 1/255 cut-off may fall on
# either side of it in a backend's fp32 arithmetic (σ ≈ 5.5 carries ~1e-6 of rounding): a step of ~0.004·colour
# that no fp32 sum can promise to match. Large fields hold a few such pairs.
CUTOFF_BAND = 1e-4


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out − ref| / max |ref|, in float64, on the CPU."""
    return ((out.double().cpu() - ref).abs().max() / ref.abs().max()).item()


def forward_error(out: torch.Tensor, xy: torch.Tensor, cholesky: torch.Tensor, colour: torch.Tensor) -> float:
    """relative_error of `out` against the brute-force render of the field, less at each pixel the slack of the
    cut-off: Σ α·|colour| over its pairs whose α lies within CUTOFF_BAND of 1/255."""
    height, width = out.shape[-2:]
    sigma, ok = sigma_brute_force(xy, cholesky, height, width)
    ref = sum_colours(drawn_alpha(sigma, ok), colour)
    alpha = torch.exp(-sigma)
    near = ok & (sigma >= 0) & ((alpha / ALPHA_MIN - 1).abs() <= CUTOFF_BAND)
    slack = sum_colours(torch.where(near, alpha, torch.zeros_like(alpha)), colour.abs())
    excess = ((out.double().cpu() - ref).abs() - slack).clamp(min=0)
    return (excess.max() / ref.abs().max()).item()


def border_field() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """A float64 field with centres on, just outside and far outside the image edges, and Gaussians wide enough
    that tails from outside reach in."""
    xy, chol, col, height, width = lattice_field(1, 4, 4, 4, 4, seed=7, dtype=torch.float64)
    xy = xy.clone()
    xy[0, 0, :, 1] = -1.0 - torch.linspace(0, 0.6, xy.shape[2], dtype=torch.float64)
    xy[0, -1, :, 1] = 1.0 + torch.linspace(0, 0.6, xy.shape[2], dtype=torch.float64)
    xy[0, :, 0, 0] = -1.05
    xy[0, :, -1, 0] = 3.0  # far beyond: contributes nothing
    return xy, chol * 3, col, height, width


def assert_gradients_match_finite_differences(render: Render, device: str | torch.device = "cpu") -> None:
    """The directional derivative of a weighted sum of `render`'s fp32 output, from its analytic gradients,
    against central differences of the float64 brute-force sum (to 1e-3 relative)."""
    xy, chol, col, height, width = lattice_field(1, 3, 3, 2.5, 2.5, seed=13, dtype=torch.float64)
    weight = torch.randn(1, 3, height, width, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    inputs = [t.float().to(device).requires_grad_(True) for t in (xy, chol, col)]
    (render(*inputs, height, width) * weight.float().to(device)).sum().backward()
    g = torch.Generator().manual_seed(3)
    directions = [torch.randn(t.shape, dtype=torch.float64, generator=g) for t in (xy, chol, col)]
    directions[0] *= 1e-2  # xy is normalised: a pixel is ~0.1 of it here

    def loss(step: float) -> torch.Tensor:
        shifted = [t + step * d for t, d in zip((xy, chol, col), directions)]
        return (rasterize_brute_force(*shifted, height, width) * weight).sum()

    eps = 1e-6
    numeric = (loss(eps) - loss(-eps)) / (2 * eps)
    analytic = sum((t.grad.double().cpu() * d).sum() for t, d in zip(inputs, directions))
    assert abs(analytic - numeric) <= 1e-3 * abs(numeric)
