"""RDN encoder (Zhang et al. 2018) with the authors' module names (`SFENet1`, `RDBs`, `GFF`, `UPNet`)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .encoder import RDN_ENCODE_BYTES_PER_LR_PIXEL, TilingTraits
from .registry import register

# RDNconfig → (number of RDBs, conv layers per RDB, growth rate), as in the RDN paper.
RDN_CONFIGS = {"A": (20, 6, 32), "B": (16, 8, 64)}


class RDBConv(nn.Module):
    """One densely connected conv: its output is concatenated to its input."""

    def __init__(self, in_channels: int, grow_rate: int, k_size: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, grow_rate, k_size, padding=(k_size - 1) // 2),
                                  nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv(x)), 1)


class RDB(nn.Module):
    """Residual dense block: dense convs, local feature fusion (`LFF`), local residual."""

    def __init__(self, g0: int, grow_rate: int, n_conv_layers: int, k_size: int):
        super().__init__()
        self.convs = nn.Sequential(*[RDBConv(g0 + c * grow_rate, grow_rate, k_size) for c in range(n_conv_layers)])
        self.LFF = nn.Conv2d(g0 + n_conv_layers * grow_rate, g0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LFF(self.convs(x)) + x


@register("rdn")
class RDN(TilingTraits, nn.Module):
    """RDN; with upsampling, returns the x`scale` features of `UPNet` without its final RGB conv."""

    finite_receptive_field = True  # stride-1 'same' convolutions and pixel shuffles only
    encode_bytes_per_lr_pixel = RDN_ENCODE_BYTES_PER_LR_PIXEL

    def __init__(self, G0: int = 64, RDNkSize: int = 3, RDNconfig: str = "B", scale: int = 2,
                 no_upsampling: bool = False, n_colors: int = 3):
        super().__init__()
        if RDNconfig not in RDN_CONFIGS:
            raise ValueError(f"unknown RDNconfig {RDNconfig!r} (known: {', '.join(RDN_CONFIGS)})")
        n_blocks, n_convs, grow = RDN_CONFIGS[RDNconfig]
        pad = (RDNkSize - 1) // 2
        self.SFENet1 = nn.Conv2d(n_colors, G0, RDNkSize, padding=pad)
        self.SFENet2 = nn.Conv2d(G0, G0, RDNkSize, padding=pad)
        self.RDBs = nn.ModuleList([RDB(G0, grow, n_convs, RDNkSize) for _ in range(n_blocks)])
        self.GFF = nn.Sequential(nn.Conv2d(n_blocks * G0, G0, 1), nn.Conv2d(G0, G0, RDNkSize, padding=pad))
        self.no_upsampling = no_upsampling
        self.out_dim = G0 if no_upsampling else grow
        self.feature_scale = 1 if no_upsampling else scale
        if no_upsampling:
            return
        if scale in (2, 3):
            up = [nn.Conv2d(G0, grow * scale * scale, RDNkSize, padding=pad), nn.PixelShuffle(scale)]
        elif scale == 4:
            up = [nn.Conv2d(G0, grow * 4, RDNkSize, padding=pad), nn.PixelShuffle(2),
                  nn.Conv2d(grow, grow * 4, RDNkSize, padding=pad), nn.PixelShuffle(2)]
        else:
            raise ValueError(f"RDN scale {scale} is not supported (use 2, 3 or 4)")
        self.UPNet = nn.Sequential(*up, nn.Conv2d(grow, n_colors, RDNkSize, padding=pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.SFENet1(x)
        x = self.SFENet2(shallow)
        block_outputs = []
        for block in self.RDBs:
            x = block(x)
            block_outputs.append(x)
        x = self.GFF(torch.cat(block_outputs, 1)) + shallow
        if self.no_upsampling:
            return x
        return self.UPNet[:-1](x)
