"""SwinIR (Liang et al. 2021, classical SR) as a feature encoder for the Gaussian head.

Module and parameter names follow the original implementation, so the SwinIR authors' x4 classical-SR
weights load with `strict=True`. `forward` stops before `conv_last`: it returns the 64-channel features
after the x4 pixel-shuffle upsampler (or the 1x body features when `upsampler=''`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .encoder import SWINIR_ENCODE_BYTES_PER_LR_PIXEL
from .registry import register
from .window_blocks import (INIT_STD, UPSAMPLERS, DropPath, Mlp, PatchEmbed, PatchUnEmbed, WindowAttention,
                            WindowSREncoder, init_transformer_weights, shifted_window_mask,
                            StochasticDepthRates, window_partition, window_reverse)

RESI_LRELU_SLOPE = 0.2  # LeakyReLU slope inside the '3conv' residual connection


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention + MLP, each with a pre-LayerNorm and a residual connection.

    The shifted-window mask for `input_resolution` is a persistent buffer (`attn_mask`, as in the original
    checkpoints); other input sizes get their mask computed on the fly.
    """

    def __init__(self, dim: int, input_resolution: tuple[int, int], num_heads: int, window_size: int = 7,
                 shift_size: int = 0, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 norm_layer: type[nn.Module] = nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        if min(self.input_resolution) <= self.window_size:
            # A window covering the whole training image: no partitioning and no shift (as the original does).
            self.shift_size = 0
            self.window_size = min(self.input_resolution)
        if not 0 <= self.shift_size < self.window_size:
            raise ValueError(f"shift_size {self.shift_size} must lie in [0, window_size={self.window_size})")

        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, self.window_size, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                    attn_drop=attn_drop, proj_drop=drop, own_index=True)
        self.drop_path = DropPath(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        attn_mask = (shifted_window_mask(*self.input_resolution, self.window_size, self.shift_size)
                     if self.shift_size > 0 else None)
        self.register_buffer("attn_mask", attn_mask)

    def mask_for(self, x_size: tuple[int, int], like: torch.Tensor) -> torch.Tensor | None:
        """The shifted-window mask for an (H, W) token grid: the stored one or, for other sizes, a new one."""
        if self.shift_size == 0:
            return None
        if tuple(x_size) == self.input_resolution:
            return self.attn_mask
        return shifted_window_mask(*x_size, self.window_size, self.shift_size).to(device=like.device,
                                                                                   dtype=like.dtype)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        """x: (B, H·W, C) tokens of an (H, W) grid whose sides are multiples of the window size."""
        h, w = x_size
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift_size > 0:
            y = torch.roll(y, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows = window_partition(y, self.window_size).view(-1, self.window_size * self.window_size, c)
        windows = self.attn(windows, mask=self.mask_for(x_size, x))
        y = window_reverse(windows.view(-1, self.window_size, self.window_size, c), self.window_size, h, w)
        if self.shift_size > 0:
            y = torch.roll(y, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = x + self.drop_path(y.reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nn.Module):
    """`depth` Swin blocks alternating regular and shifted windows (shift = window_size // 2)."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: float | None = None, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float | Sequence[float] = 0.0,
                 norm_layer: type[nn.Module] = nn.LayerNorm):
        super().__init__()
        rates = [drop_path] * depth if isinstance(drop_path, (int, float)) else drop_path
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim, input_resolution, num_heads, window_size=window_size,
                                 shift_size=0 if i % 2 == 0 else window_size // 2, mlp_ratio=mlp_ratio,
                                 qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                                 drop_path=rates[i], norm_layer=norm_layer)
            for i in range(depth)])

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, x_size)
        return x


def residual_conv(dim: int, resi_connection: str) -> nn.Module:
    """The conv closing a residual group: one 3x3 conv ('1conv') or a cheaper bottleneck stack ('3conv')."""
    if resi_connection == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if resi_connection == "3conv":
        return nn.Sequential(nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(RESI_LRELU_SLOPE, inplace=True),
                             nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(RESI_LRELU_SLOPE, inplace=True),
                             nn.Conv2d(dim // 4, dim, 3, 1, 1))
    raise ValueError(f"unknown resi_connection {resi_connection!r} (use '1conv' or '3conv')")


class RSTB(nn.Module):
    """Residual Swin Transformer Block: a BasicLayer and a conv, wrapped in a residual connection."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: float | None = None, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float | Sequence[float] = 0.0,
                 norm_layer: type[nn.Module] = nn.LayerNorm, resi_connection: str = "1conv"):
        super().__init__()
        self.residual_group = BasicLayer(dim, input_resolution, depth, num_heads, window_size, mlp_ratio=mlp_ratio,
                                         qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                                         drop_path=drop_path, norm_layer=norm_layer)
        self.conv = residual_conv(dim, resi_connection)
        self.patch_embed = PatchEmbed(dim, norm_layer=None)
        self.patch_unembed = PatchUnEmbed(dim)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        y = self.patch_unembed(self.residual_group(x, x_size), x_size)
        return self.patch_embed(self.conv(y)) + x


@register("swinir")
class SwinIR(WindowSREncoder):
    """SwinIR encoder: shallow conv, residual Swin groups, then (for 'pixelshuffle') the x`upscale` upsampler.

    `forward` returns `out_dim`-channel features at `feature_scale` times the input size. `conv_last` is
    built (so the authors' SR checkpoints load strictly) but not used; `img_range` is accepted for the specs'
    sake and unused (the image goes in unnormalised, see WindowSREncoder).
    """

    encode_bytes_per_lr_pixel = SWINIR_ENCODE_BYTES_PER_LR_PIXEL

    def __init__(self, img_size: int | Sequence[int] = 64, patch_size: int = 1, in_chans: int = 3,
                 embed_dim: int = 180, depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
                 num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6), window_size: int = 8, mlp_ratio: float = 2.0,
                 qkv_bias: bool = True, qk_scale: float | None = None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 norm_layer: type[nn.Module] = nn.LayerNorm, ape: bool = False, patch_norm: bool = True,
                 upscale: int = 4, img_range: float = 1.0, upsampler: str = "pixelshuffle",
                 resi_connection: str = "1conv"):
        super().__init__()
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"SwinIR encoder supports upsampler 'pixelshuffle' (x{upscale} features) or '' "
                             f"(1x features), not {upsampler!r}")
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        img_hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.patches_resolution = (img_hw[0] // patch_size, img_hw[1] // patch_size)
        self.upscale = upscale
        self.upsampler = upsampler
        self.window_size = window_size
        self.embed_dim = embed_dim
        self.ape = ape

        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim, norm_layer=norm_layer if patch_norm else None)
        self.patch_unembed = PatchUnEmbed(embed_dim)
        if ape:
            num_patches = self.patches_resolution[0] * self.patches_resolution[1]
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, num_patches, embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=INIT_STD)
        self.pos_drop = nn.Dropout(drop_rate)

        drop_path = StochasticDepthRates(drop_path_rate, sum(depths))  # stochastic depth decay rule
        starts = [sum(depths[:i]) for i in range(len(depths) + 1)]
        self.layers = nn.ModuleList([
            RSTB(embed_dim, self.patches_resolution, depths[i], num_heads[i], window_size, mlp_ratio=mlp_ratio,
                 qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                 drop_path=drop_path[starts[i]:starts[i + 1]], norm_layer=norm_layer,
                 resi_connection=resi_connection)
            for i in range(len(depths))])
        self.norm = norm_layer(embed_dim)
        self.conv_after_body = residual_conv(embed_dim, resi_connection)

        self.build_tail(embed_dim, in_chans, upscale, upsampler)
        self.apply(init_transformer_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Deep features: (B, embed_dim, H, W) → residual Swin groups → final LayerNorm → same shape."""
        x_size = (x.shape[2], x.shape[3])
        x = self.patch_embed(x)
        if self.ape:
            x = x + self.absolute_pos_embed
        x = self.pos_drop(x)
        for layer in self.layers:
            x = layer(x, x_size)
        return self.patch_unembed(self.norm(x), x_size)
