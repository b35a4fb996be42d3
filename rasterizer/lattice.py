"""Where a field's lattice of Gaussians lands in an output image: the output-pixel formula, written once.

`centre` is plain arithmetic on numbers or tensors: `lattice_points` applies it to whole tensors (torch, with
gradients), and the numba backend compiles the same function into its one-pass CPU kernel
(`numba_backend.lattice_points`), so both give the same numbers bit for bit. docs/DESIGN.md §3 derives it.
"""
from __future__ import annotations

import torch


def centre(index, factor, offset, origin, extent, inv_size, one, two):
    """The normalised output coordinate (−1 and 1 are the image's edges) of lattice cell `index` along one axis.

    The cell sits at LR position u = index/factor + offset; a window starting at `origin` and `extent` LR pixels
    long, drawn over an output axis of 1/`inv_size` pixels, puts it at 2·(u − origin)/extent − 1 − inv_size (the
    output pixel j is centred on LR position origin + (j + ½)·extent·inv_size). `one` and `two` are 1 and 2 in
    the caller's number type, so that every operation keeps the input's precision.
    """
    return two * (index / factor + offset - origin) / extent - one - inv_size


def lattice_points_torch(offset: torch.Tensor, cholesky: torch.Tensor, rows: tuple[int, int],
                         cols: tuple[int, int], consts: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """`lattice_points` in torch operations (any device, differentiable)."""
    factor, left, top, win_w, win_h, inv_w, inv_h, scale_x, scale_y = consts
    kept = (slice(None), slice(*rows), slice(*cols))
    offset, cholesky = offset[kept], cholesky[kept]
    row_index = torch.arange(*rows, device=offset.device, dtype=offset.dtype)[:, None]
    col_index = torch.arange(*cols, device=offset.device, dtype=offset.dtype)
    x = centre(col_index, factor, offset[..., 0], left, win_w, inv_w, 1, 2)
    y = centre(row_index, factor, offset[..., 1], top, win_h, inv_h, 1, 2)
    scaled = torch.cat((cholesky[..., :1] * scale_x, cholesky[..., 1:] * scale_y), -1)
    return torch.stack((x, y), -1), scaled
