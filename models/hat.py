"""HAT, the Hybrid Attention Transformer (Chen et al., "Activating More Pixels in Image Super-Resolution
Transformer", CVPR 2023), used as a feature encoder.

Module and parameter names follow the authors' code, so that their HAT_SRx4 weights and the official
ContinuousSR checkpoints load with `strict=True`. The forward pass stops before `conv_last`: it returns the
64-channel features of the x`upscale` pixel-shuffle upsampler (or the 1x body features without upsampler).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoder import HAT_ENCODE_BYTES_PER_LR_PIXEL
from .registry import register
from .window_blocks import (INIT_STD, UPSAMPLERS, DropPath, Mlp, PatchEmbed, PatchUnEmbed, WindowAttention,
                            WindowSREncoder, biased_attention, gather_bias, init_transformer_weights,
                            relative_position_index, shifted_window_mask, StochasticDepthRates, window_partition,
                            window_reverse)

RESI_CONNECTIONS = ("1conv", "identity")

NormLayer = Callable[[int], nn.Module]


def overlapping_relative_position_index(window_size: int, overlap_win_size: int) -> torch.Tensor:
    """(ws², ows²) index into an OCAB bias table of (ws+ows−1)² rows, for every (query, key) pair.

    Queries lie in a ws x ws window, keys in the ows x ows window around it. The offset is the original's
    (ws − ows + 1), so some indices are negative; indexing the table wraps them around (Python semantics), a
    one-to-one mapping. It is kept as is because trained tables and stored index buffers depend on it.
    """
    def grid(size: int) -> torch.Tensor:
        return torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")).flatten(1)

    rel = (grid(overlap_win_size)[:, None, :] - grid(window_size)[:, :, None]).permute(1, 2, 0)
    rel = rel + (window_size - overlap_win_size + 1)
    return rel[..., 0] * (window_size + overlap_win_size - 1) + rel[..., 1]


class ChannelAttention(nn.Module):
    """RCAN channel attention: rescale channels by a gate computed from their global average."""

    def __init__(self, num_feat: int, squeeze_factor: int):
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_feat, num_feat // squeeze_factor, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_feat // squeeze_factor, num_feat, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CAB(nn.Module):
    """Channel-attention block: conv → GELU → conv → channel attention, the convolutional branch of a HAB."""

    def __init__(self, num_feat: int, compress_ratio: int, squeeze_factor: int):
        super().__init__()
        hidden = num_feat // compress_ratio
        self.cab = nn.Sequential(
            nn.Conv2d(num_feat, hidden, 3, 1, 1),
            nn.GELU(),
            nn.Conv2d(hidden, num_feat, 3, 1, 1),
            ChannelAttention(num_feat, squeeze_factor),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cab(x)


class HAB(nn.Module):
    """Hybrid attention block: (shifted) window attention plus a scaled CAB branch, then an MLP."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift_size: int = 0,
                 compress_ratio: int = 3, squeeze_factor: int = 30, conv_scale: float = 0.01,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: float | None = None, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, norm_layer: NormLayer = nn.LayerNorm):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size {shift_size} must lie in [0, window_size={window_size})")
        self.window_size = window_size
        self.shift_size = shift_size
        self.conv_scale = conv_scale
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.conv_block = CAB(dim, compress_ratio, squeeze_factor)
        self.drop_path = DropPath(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], rpi_sa: torch.Tensor,
                attn_mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, H·W, C) tokens; `attn_mask` is used only by shifted blocks."""
        h, w = x_size
        b, _, c = x.shape
        ws, shift = self.window_size, self.shift_size
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)

        conv_x = self.conv_block(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(b, h * w, c)

        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        windows = window_partition(x, ws).view(-1, ws * ws, c)
        windows = self.attn(windows, attn_mask if shift > 0 else None, rpi=rpi_sa)
        attn_x = window_reverse(windows.view(-1, ws, ws, c), ws, h, w)
        if shift > 0:
            attn_x = torch.roll(attn_x, shifts=(shift, shift), dims=(1, 2))
        attn_x = attn_x.reshape(b, h * w, c)

        x = shortcut + self.drop_path(attn_x) + conv_x * self.conv_scale
        return x + self.drop_path(self.mlp(self.norm2(x)))


class OCAB(nn.Module):
    """Overlapping cross-attention block: queries from ws x ws windows attend to keys and values from the
    larger ows x ows windows around them (ows = ws + int(overlap_ratio·ws)), then an MLP."""

    def __init__(self, dim: int, window_size: int, overlap_ratio: float, num_heads: int, qkv_bias: bool = True,
                 qk_scale: float | None = None, mlp_ratio: float = 2.0, norm_layer: NormLayer = nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.overlap_win_size = int(window_size * overlap_ratio) + window_size
        self.norm1 = norm_layer(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((window_size + self.overlap_win_size - 1) ** 2, num_heads))
        self.proj = nn.Linear(dim, dim)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=INIT_STD)

    def overlapping_windows(self, kv: torch.Tensor) -> torch.Tensor:
        """(B, 2C, H, W) keys and values → (2, B·nW, ows², C), one ows x ows window per ws x ws window.

        The original pads (ows − ws) // 2 zeros on every side, which gives one window too few per axis when
        ows − ws is odd (e.g. window 7, ratio 0.5); the extra zero row and column go to the bottom and right.
        """
        ws, ows = self.window_size, self.overlap_win_size
        before = (ows - ws) // 2
        after = ows - ws - before
        patches = F.unfold(F.pad(kv, (before, after, before, after)), ows, stride=ws)  # B, 2C·ows², nW
        b, _, nw = patches.shape
        patches = patches.view(b, 2, self.dim, ows * ows, nw).permute(1, 0, 4, 3, 2)
        return patches.reshape(2, b * nw, ows * ows, self.dim)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], rpi: torch.Tensor) -> torch.Tensor:
        """x: (B, H·W, C) tokens; rpi: (ws², ows²) bias index."""
        h, w = x_size
        b, _, c = x.shape
        ws, heads = self.window_size, self.num_heads
        shortcut = x
        qkv = self.qkv(self.norm1(x)).view(b, h, w, 3, c)
        q = window_partition(qkv[..., 0, :], ws).reshape(-1, ws * ws, heads, c // heads).transpose(1, 2)
        kv = qkv[..., 1:, :].reshape(b, h, w, 2 * c).permute(0, 3, 1, 2)
        k, v = self.overlapping_windows(kv).unflatten(-1, (heads, c // heads)).transpose(2, 3)

        bias = gather_bias(self.relative_position_bias_table, rpi)
        out = biased_attention(q, k, v, self.scale, bias)
        out = window_reverse(out.transpose(1, 2).reshape(-1, ws, ws, c), ws, h, w).reshape(b, h * w, c)

        x = self.proj(out) + shortcut
        return x + self.mlp(self.norm2(x))


class AttenBlocks(nn.Module):
    """The blocks of one RHAG: `depth` HABs (shifted windows on odd ones), then one OCAB."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, compress_ratio: int,
                 squeeze_factor: int, conv_scale: float, overlap_ratio: float, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: Sequence[float] = (), norm_layer: NormLayer = nn.LayerNorm):
        super().__init__()
        drop_path = drop_path or [0.0] * depth
        self.blocks = nn.ModuleList([
            HAB(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, compress_ratio,
                squeeze_factor, conv_scale, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop, drop_path[i],
                norm_layer)
            for i in range(depth)
        ])
        self.overlap_attn = OCAB(dim, window_size, overlap_ratio, num_heads, qkv_bias, qk_scale, mlp_ratio,
                                 norm_layer)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], rpi_sa: torch.Tensor, rpi_oca: torch.Tensor,
                attn_mask: torch.Tensor | None) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, x_size, rpi_sa, attn_mask)
        return self.overlap_attn(x, x_size, rpi_oca)


class RHAG(nn.Module):
    """Residual hybrid attention group: blocks, then a conv on the feature map, plus a skip connection."""

    def __init__(self, dim: int, resi_connection: str = "1conv", **block_args):
        super().__init__()
        self.residual_group = AttenBlocks(dim, **block_args)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1) if resi_connection == "1conv" else nn.Identity()
        self.patch_embed = PatchEmbed(dim, norm_layer=None)
        self.patch_unembed = PatchUnEmbed(dim)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int], rpi_sa: torch.Tensor, rpi_oca: torch.Tensor,
                attn_mask: torch.Tensor | None) -> torch.Tensor:
        y = self.residual_group(x, x_size, rpi_sa, rpi_oca, attn_mask)
        return self.patch_embed(self.conv(self.patch_unembed(y, x_size))) + x


@register("hat")
class HAT(WindowSREncoder):
    """HAT encoder: (B, 3, h, w) in [0, 1] → (B, 64, h·upscale, w·upscale) upsampler features
    (`upsampler='pixelshuffle'`) or (B, embed_dim, h, w) body features (`upsampler=''`).

    Arguments and defaults are those of the original registered constructor (`img_range` is accepted for the
    specs' sake and unused: the image goes in unnormalised, see WindowSREncoder). `out_dim` and `feature_scale`
    describe the output.
    """

    encode_bytes_per_lr_pixel = HAT_ENCODE_BYTES_PER_LR_PIXEL

    def __init__(self, img_size: int | tuple[int, int] = 64, patch_size: int = 1, in_chans: int = 3,
                 embed_dim: int = 96, depths: Sequence[int] = (6, 6, 6, 6), num_heads: Sequence[int] = (6, 6, 6, 6),
                 window_size: int = 7, compress_ratio: int = 3, squeeze_factor: int = 30, conv_scale: float = 0.01,
                 overlap_ratio: float = 0.5, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_scale: float | None = None, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.1, norm_layer: NormLayer = nn.LayerNorm, ape: bool = False,
                 patch_norm: bool = True, upscale: int = 2, img_range: float = 1.0, upsampler: str = "",
                 resi_connection: str = "1conv"):
        super().__init__()
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"HAT upsampler {upsampler!r} is not supported (use one of {UPSAMPLERS})")
        if resi_connection not in RESI_CONNECTIONS:
            raise ValueError(f"HAT resi_connection {resi_connection!r} is not supported "
                             f"(use one of {RESI_CONNECTIONS})")
        self.in_chans = in_chans
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.overlap_ratio = overlap_ratio
        self.upscale = upscale
        self.upsampler = upsampler
        self.embed_dim = embed_dim
        self.ape = ape

        overlap_win_size = window_size + int(overlap_ratio * window_size)
        self.register_buffer("relative_position_index_SA", relative_position_index(window_size))
        self.register_buffer("relative_position_index_OCA",
                             overlapping_relative_position_index(window_size, overlap_win_size))

        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)

        self.patch_embed = PatchEmbed(embed_dim, norm_layer=norm_layer if patch_norm else None)
        self.patch_unembed = PatchUnEmbed(embed_dim)
        if ape:
            img_h, img_w = (img_size, img_size) if isinstance(img_size, int) else img_size
            num_patches = (img_h // patch_size) * (img_w // patch_size)
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, num_patches, embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=INIT_STD)
        self.pos_drop = nn.Dropout(p=drop_rate)

        dpr = StochasticDepthRates(drop_path_rate, sum(depths))  # stochastic depth grows with depth
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            start = sum(depths[:i])
            self.layers.append(RHAG(
                embed_dim, resi_connection, depth=depth, num_heads=heads, window_size=window_size,
                compress_ratio=compress_ratio, squeeze_factor=squeeze_factor, conv_scale=conv_scale,
                overlap_ratio=overlap_ratio, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[start:start + depth],
                norm_layer=norm_layer))
        self.norm = norm_layer(embed_dim)
        self.conv_after_body = (nn.Conv2d(embed_dim, embed_dim, 3, 1, 1) if resi_connection == "1conv"
                                else nn.Identity())

        self.build_tail(embed_dim, in_chans, upscale, upsampler)
        self.apply(init_transformer_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim, H, W) → (B, embed_dim, H, W) through the RHAGs; H, W multiples of the window."""
        x_size = (x.shape[2], x.shape[3])
        attn_mask = None
        if self.shift_size > 0:
            attn_mask = shifted_window_mask(*x_size, self.window_size, self.shift_size).to(x.device, x.dtype)

        x = self.patch_embed(x)
        if self.ape:
            if x.shape[1] != self.absolute_pos_embed.shape[1]:
                raise ValueError(f"ape=True needs {self.absolute_pos_embed.shape[1]} tokens (the padded "
                                 f"img_size), got {x.shape[1]}")
            x = x + self.absolute_pos_embed
        x = self.pos_drop(x)
        for layer in self.layers:
            x = layer(x, x_size, self.relative_position_index_SA, self.relative_position_index_OCA, attn_mask)
        return self.patch_unembed(self.norm(x), x_size)
