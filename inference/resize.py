"""Bicubic resizing of image tensors: the baseline beside super-resolution, and the path of alpha channels."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_bicubic(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) or (B, C, h, w) in [0, 1] → `size` (H, W), clamped to [0, 1].

    Pixel centres are aligned (align_corners=False); when either side shrinks, the kernel is widened
    (antialias) so that the result is a filtered image, not an aliased sample of it.
    """
    batched = image.ndim == 4
    batch = image if batched else image[None]
    antialias = size[0] < batch.shape[-2] or size[1] < batch.shape[-1]
    out = F.interpolate(batch, size=tuple(size), mode="bicubic", align_corners=False, antialias=antialias)
    out = out.clamp(0, 1)
    return out if batched else out[0]


def resize_bicubic_window(image: torch.Tensor, window: tuple[float, float, float, float], size: tuple[int, int]
                          ) -> torch.Tensor:
    """The LR window (top, left, height, width) of `image` ((C, h, w) or (B, C, h, w)) resized bicubic to `size`
    (H, W), clamped to [0, 1]: the bicubic counterpart of `zoom.render_window`.

    Output pixel (i, j) samples the cubic kernel (a = −0.75, borders replicated, as `resize_bicubic`) at LR
    position (top + (i + ½)·height/H, left + (j + ½)·width/W); the whole image as the window is
    `resize_bicubic` when enlarging. No antialiasing: a window shrunk below x1 is sampled, not filtered.
    """
    batched = image.ndim == 4
    batch = image if batched else image[None]
    (top, left, win_h, win_w), (height, width) = window, size
    lr_h, lr_w = batch.shape[-2:]
    rows = top + (torch.arange(height, dtype=torch.float64) + 0.5) * (win_h / height)
    cols = left + (torch.arange(width, dtype=torch.float64) + 0.5) * (win_w / width)
    # grid_sample's normalised coordinates (align_corners=False): −1 and 1 are the image's outer edges.
    y, x = torch.meshgrid(2 * rows / lr_h - 1, 2 * cols / lr_w - 1, indexing="ij")
    grid = torch.stack((x, y), -1).to(batch.dtype).expand(batch.shape[0], height, width, 2)
    out = F.grid_sample(batch, grid.to(batch.device), mode="bicubic", padding_mode="border", align_corners=False)
    out = out.clamp(0, 1)
    return out if batched else out[0]
