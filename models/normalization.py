"""Input normalisation shared by the encoders: the DIV2K training-set RGB mean of the SR literature."""
from __future__ import annotations

import torch

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def subtract_rgb_mean(x: torch.Tensor) -> torch.Tensor:
    """Subtract the DIV2K mean from a (B, 3, H, W) image; other channel counts are returned unchanged."""
    if x.shape[1] != len(DIV2K_RGB_MEAN):
        return x
    return x - torch.tensor(DIV2K_RGB_MEAN, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
