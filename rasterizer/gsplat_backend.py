"""Adapter to the official ContinuousSR rasterizer: the GaussianImage fork of gsplat
(`project_gaussians_2d` + `rasterize_gaussians_sum`), for side-by-side checks and benchmarks only.

It is registered only where that package (with its CUDA extension) is installed, and never picked by `auto`.
Known defects, kept as they are: each 16x16 tile sums only its first 256 Gaussians (wrong below x4) and a
tile-box cull trims a few far tails (docs/DESIGN.md §4).
"""
from __future__ import annotations

import torch
from gsplat.project_gaussians_2d import project_gaussians_2d
from gsplat.rasterize_sum import rasterize_gaussians_sum

from .projection import ProjectedGaussians

BLOCK = 16  # the fork's tile size, as the official head passes it


def supports(device: torch.device) -> bool:
    return device.type == "cuda"


def rasterize_gsplat(gaussians: ProjectedGaussians, height: int, width: int) -> torch.Tensor:
    """(B, C, height, width) through the fork, one image at a time (it has no batch dimension)."""
    batch, channels = gaussians.means.shape[0], gaussians.colours.shape[-1]
    x, y = gaussians.means.float().unbind(-1)
    xy = torch.stack((2 * x / width - 1, 2 * y / height - 1), -1).reshape(batch, -1, 2)
    # Back from the inverse factors (p, q, r) = (1/l11, l21/l11, 1/l22) to the Cholesky factors; degenerate
    # Gaussians (all zero) stay zero and the fork culls them.
    p, q, r = gaussians.inv_factors.float().unbind(-1)
    valid = (p != 0) & (r != 0)
    safe_p = torch.where(valid, p, torch.ones_like(p))
    safe_r = torch.where(valid, r, torch.ones_like(r))
    cholesky = (torch.stack((1 / safe_p, q / safe_p, 1 / safe_r), -1) * valid.unsqueeze(-1)).reshape(batch, -1, 3)
    colours = gaussians.colours.float().reshape(batch, -1, channels)
    tile_bounds = ((width + BLOCK - 1) // BLOCK, (height + BLOCK - 1) // BLOCK, 1)
    opacity = torch.ones(colours.shape[1], 1, device=colours.device)
    background = torch.zeros(channels, device=colours.device)
    images = []
    for b in range(batch):
        xys, depths, radii, conics, tiles_hit = project_gaussians_2d(xy[b], cholesky[b], height, width, tile_bounds)
        image = rasterize_gaussians_sum(xys, depths, radii, conics, tiles_hit, colours[b], opacity, height, width,
                                        BLOCK, BLOCK, background=background, return_alpha=False)
        images.append(image.permute(2, 0, 1))
    return torch.stack(images).to(gaussians.means.dtype)
