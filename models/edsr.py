"""EDSR encoders (Lim et al. 2017), laid out as the official ContinuousSR checkpoints (`edsr.*` keys)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .encoder import EDSR_ENCODE_BYTES_PER_LR_PIXEL, TilingTraits
from .registry import register

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
KERNEL_SIZE = 3


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, KERNEL_SIZE, padding=KERNEL_SIZE // 2)


class ResBlock(nn.Module):
    """conv → ReLU → conv, scaled by `res_scale` and added to the input (names `body.0`, `body.2`)."""

    def __init__(self, n_feats: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(conv3x3(n_feats, n_feats), nn.ReLU(inplace=True), conv3x3(n_feats, n_feats))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class Upsampler(nn.Sequential):
    """EDSR's pixel-shuffle upsampler for scale 2^n or 3."""

    def __init__(self, scale: int, n_feats: int):
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [conv3x3(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [conv3x3(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"EDSR scale {scale} is not supported (use 2^n or 3)")
        super().__init__(*layers)


class MeanShift(nn.Conv2d):
    """Fixed 1x1 convolution adding or subtracting the DIV2K mean; kept so that EDSR weights load as they are.

    The LIIF-family encoders (and the official ContinuousSR) do not apply it in the forward pass.
    """

    def __init__(self, rgb_range: float, sign: int = -1):
        super().__init__(3, 3, kernel_size=1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(DIV2K_RGB_MEAN)
        self.requires_grad_(False)


class EDSR(nn.Module):
    """EDSR body with the authors' module names (`head`, `body`, `tail`, `sub_mean`, `add_mean`)."""

    def __init__(self, n_resblocks: int, n_feats: int, res_scale: float, scale: int, no_upsampling: bool,
                 rgb_range: float, n_colors: int = 3):
        super().__init__()
        self.head = nn.Sequential(conv3x3(n_colors, n_feats))
        self.body = nn.Sequential(*[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)],
                                  conv3x3(n_feats, n_feats))
        self.no_upsampling = no_upsampling
        if not no_upsampling:
            self.tail = nn.Sequential(Upsampler(scale, n_feats), conv3x3(n_feats, n_colors))
        self.sub_mean = MeanShift(rgb_range)
        self.add_mean = MeanShift(rgb_range, sign=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features: LR-sized without upsampling, else the upsampler's output (the tail's RGB conv is skipped)."""
        x = self.head(x)
        x = x + self.body(x)
        if self.no_upsampling:
            return x
        return self.tail[0](x)


class EDSREncoder(TilingTraits, nn.Module):
    """The registered EDSR encoder: an `edsr` submodule, as in the official checkpoints."""

    finite_receptive_field = True  # stride-1 'same' convolutions and pixel shuffles only
    encode_bytes_per_lr_pixel = EDSR_ENCODE_BYTES_PER_LR_PIXEL

    def __init__(self, n_resblocks: int, n_feats: int, res_scale: float, scale: int, no_upsampling: bool,
                 rgb_range: float):
        super().__init__()
        self.edsr = EDSR(n_resblocks, n_feats, res_scale, scale, no_upsampling, rgb_range)
        self.out_dim = n_feats
        self.feature_scale = 1 if no_upsampling else scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.edsr(x)


@register("edsr-baseline")
def make_edsr_baseline(n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1, scale: int = 2,
                       no_upsampling: bool = True, rgb_range: float = 1) -> EDSREncoder:
    return EDSREncoder(n_resblocks, n_feats, res_scale, scale, no_upsampling, rgb_range)


@register("edsr-large")
def make_edsr_large(n_resblocks: int = 32, n_feats: int = 256, res_scale: float = 0.1, scale: int = 2,
                    no_upsampling: bool = True, rgb_range: float = 1) -> EDSREncoder:
    return EDSREncoder(n_resblocks, n_feats, res_scale, scale, no_upsampling, rgb_range)


register("edsr")(make_edsr_large)
