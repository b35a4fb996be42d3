"""Pieces shared by the window-attention encoders (SwinIR, HAT), named as in their original code."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoder import TilingTraits


INIT_STD = 0.02  # truncated-normal std of Linear weights, bias tables and position embeddings
UPSAMPLER_FEATURES = 64  # `num_feat` of the pixel-shuffle upsampler: the channels handed to the Gaussian head
UPSAMPLERS = ("pixelshuffle", "")


class StochasticDepthRates(Sequence[float]):
    """Drop-path probability of each of `blocks` blocks, rising linearly from 0 to `rate` (torch.linspace's
    values), computed when indexed; a slice is a view. Plain Python, so that a model builds on the meta device
    (which holds no values), and nothing as long as the model's depth exists before its blocks do: a depth too
    large to build is refused by its weights' size (models.registry.check_buildable), not by a list's."""

    def __init__(self, rate: float, blocks: int, start: int = 0, stop: int | None = None):
        self.rate, self.blocks, self.start = rate, blocks, start
        self.stop = blocks if stop is None else stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("only contiguous slices of the rates are supported")
            return StochasticDepthRates(self.rate, self.blocks, self.start + start, self.start + max(stop, start))
        position = index + len(self) if index < 0 else index
        if not 0 <= position < len(self):
            raise IndexError(f"block {index} of {len(self)}")
        return 0.0 if self.blocks == 1 else self.rate * (self.start + position) / (self.blocks - 1)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability `drop_prob`."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    """Transformer feed-forward block: fc1 → GELU → fc2 (parameter names `fc1`, `fc2`)."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 drop: float = 0.0):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) → (B·nW, ws, ws, C) non-overlapping windows."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    # contiguous() so callers can .view() the windows even when reshape would return a strided view.
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, c)


def window_reverse(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `window_partition`: (B·nW, ws, ws, C) → (B, H, W, C)."""
    b = windows.shape[0] // ((h // window_size) * (w // window_size))
    x = windows.view(b, h // window_size, w // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


def relative_position_index(window_size: int) -> torch.Tensor:
    """(ws², ws²) index into a ((2ws−1)², heads) bias table for every pair of positions in a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    flat = coords.flatten(1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0) + (window_size - 1)
    return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


def shifted_window_mask(h: int, w: int, window_size: int, shift_size: int) -> torch.Tensor:
    """(nW, ws², ws²) additive mask (0 or −100) that keeps shifted-window attention inside each region."""
    img_mask = torch.zeros((1, h, w, 1))
    spans = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    region = 0
    for hs in spans:
        for ws in spans:
            img_mask[:, hs, ws, :] = region
            region += 1
    windows = window_partition(img_mask, window_size).view(-1, window_size * window_size)
    mask = windows[:, None, :] - windows[:, :, None]
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def gather_bias(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(heads, Nq, Nk) relative position bias: rows of an (entries, heads) table picked by an (Nq, Nk) index."""
    return table[index.flatten()].view(*index.shape, -1).permute(2, 0, 1)


def biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, bias: torch.Tensor,
                     mask: torch.Tensor | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(scale·q·kᵀ + bias [+ mask]) · v over (B·nW, heads, N, d) windows (fused where the device can).

    `bias` is (heads, Nq, Nk); `mask` (nW, Nq, Nk) is added per window, windows ordered batch-major as
    `window_partition` makes them.
    """
    bias = bias.unsqueeze(0)
    if mask is not None:
        num_windows = mask.shape[0]
        bias = (bias + mask.unsqueeze(1)).repeat(q.shape[0] // num_windows, 1, 1, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout_p, scale=scale)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ws x ws windows, with a learned relative-position bias.

    With `own_index` the (ws², ws²) bias index is this module's persistent buffer (SwinIR's layout); without,
    the caller passes a shared one (HAT keeps it once at the top level).
    """

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True,
                 qk_scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 own_index: bool = False):
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.attn_drop = attn_drop
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        if own_index:
            self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=INIT_STD)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                rpi: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B·nW, ws², C) window tokens; mask: (nW, ws², ws²) shifted-window mask or None; rpi: the bias
        index when the module has none of its own."""
        b_, n, c = x.shape
        q, k, v = self.qkv(x).view(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        index = self.relative_position_index if rpi is None else rpi
        bias = gather_bias(self.relative_position_bias_table, index)
        out = biased_attention(q, k, v, self.scale, bias, mask, self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b_, n, c)))


class PatchEmbed(nn.Module):
    """(B, C, H, W) → (B, H·W, C) tokens, with an optional LayerNorm (`norm`)."""

    def __init__(self, embed_dim: int, norm_layer: type[nn.Module] | None = nn.LayerNorm):
        super().__init__()
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


class PatchUnEmbed(nn.Module):
    """(B, H·W, C) tokens → (B, C, H, W)."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.embed_dim = embed_dim

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], self.embed_dim, x_size[0], x_size[1])


class Upsample(nn.Sequential):
    """Pixel-shuffle upsampler for scale 2^n or 3: (conv to 4C or 9C, PixelShuffle) per step."""

    def __init__(self, scale: int, num_feat: int):
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"upscale {scale} is not supported (use 2^n or 3)")
        super().__init__(*layers)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad the bottom and right of (B, C, H, W) so that H and W are multiples of `multiple`."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    # Reflection needs pad < size; fall back to replicate for images smaller than the window.
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def init_transformer_weights(m: nn.Module) -> None:
    """The original SwinIR/HAT initialisation: truncated-normal Linear weights, zero biases, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=INIT_STD)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class WindowSREncoder(TilingTraits, nn.Module):
    """The shell SwinIR and HAT share around their deep features.

    Subclasses build `conv_first`, `conv_after_body` and `forward_features`, call `build_tail` last (module
    order is state-dict order), and set `window_size`, `upsampler`.

    As in the official ContinuousSR encoders, the image goes in as it is: no mean subtraction and no `img_range`
    scaling (the authors' SR models do both; ContinuousSR's trained weights expect neither).
    """

    window_size: int
    upsampler: str

    @property
    def tile_multiple(self) -> int:
        """Tiles are cut at multiples of the attention window (tiling: windows match the untiled image's)."""
        return self.window_size

    def build_tail(self, embed_dim: int, in_chans: int, upscale: int, upsampler: str) -> None:
        """For 'pixelshuffle': conv_before_upsample, the x`upscale` upsample and an unused conv_last (kept so that
        the authors' SR checkpoints load strictly); for '': nothing, the body features are the output."""
        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, UPSAMPLER_FEATURES, 3, 1, 1),
                                                      nn.LeakyReLU(inplace=True))
            self.upsample = Upsample(upscale, UPSAMPLER_FEATURES)
            self.conv_last = nn.Conv2d(UPSAMPLER_FEATURES, in_chans, 3, 1, 1)
            self.out_dim, self.feature_scale = UPSAMPLER_FEATURES, upscale
        else:
            self.out_dim, self.feature_scale = embed_dim, 1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) image in [0, 1] → (B, out_dim, h·feature_scale, w·feature_scale) features.

        The input is reflect-padded to a multiple of the window and the features cropped back, so the result
        describes exactly the given image.
        """
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.window_size)
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        if self.upsampler == "pixelshuffle":
            x = self.upsample(self.conv_before_upsample(x))
        return x[..., :h * self.feature_scale, :w * self.feature_scale]
