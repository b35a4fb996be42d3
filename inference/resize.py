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
