"""Image-quality metrics of the LIIF-family evaluation protocol (docs/DESIGN.md §7): PSNR and SSIM, Y conversion,
shave.

PSNR follows EDSR/LIIF's `calc_psnr`: on images in [0, 1], benchmark sets score the luma of the *difference*
with EDSR's weights (65.738, 129.057, 25.064)/256 and shave ceil(scale) pixels from each side; DIV2K scores RGB
and shaves ceil(scale) + 6. SSIM is Wang et al.'s, as the SR literature computes it: on the BT.601 luma in
[16, 235] (`rgb_to_y`), an 11x11 Gaussian window with σ = 1.5, K1 = 0.01, K2 = 0.03, data range 255, averaged
over the positions where the window lies inside the (shaved) image, with the same shave as PSNR.
Everything is computed in float64, per image; callers clamp model outputs to [0, 1] first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# EDSR/LIIF weights applied to the [0, 1] RGB difference: ≈ BT.601 luma rescaled by 256/255, as published.
BENCHMARK_Y_WEIGHTS = (65.738, 129.057, 25.064)
BENCHMARK_Y_DIVISOR = 256.0
# ITU-R BT.601 studio-swing luma: Y = 16 + 65.481 R + 128.553 G + 24.966 B for RGB in [0, 1] → Y in [16, 235].
BT601_Y_WEIGHTS = (65.481, 128.553, 24.966)
BT601_Y_OFFSET = 16.0
Y_DATA_RANGE = 255.0
# DIV2K's protocol shaves this many pixels beyond the scale.
DIV2K_EXTRA_SHAVE = 6
# Wang et al. SSIM constants.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
EVAL_KINDS = ("benchmark", "div2k")


def _as_batch(image: torch.Tensor) -> torch.Tensor:
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"expected RGB images (B, 3, H, W) or (3, H, W), got {tuple(image.shape)}")
    return image.double()


def rgb_to_y(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1], (B, 3, H, W) or (3, H, W) → BT.601 luma (B, 1, H, W) in [16, 235], float64."""
    rgb = _as_batch(rgb)
    weights = rgb.new_tensor(BT601_Y_WEIGHTS).view(1, 3, 1, 1)
    return (rgb * weights).sum(1, keepdim=True) + BT601_Y_OFFSET


def shave(image: torch.Tensor, pixels: int) -> torch.Tensor:
    """Crop `pixels` from each side of the last two dimensions (the border the protocol ignores)."""
    if pixels < 0:
        raise ValueError(f"shave must be ≥ 0, got {pixels}")
    height, width = image.shape[-2:]
    if 2 * pixels >= min(height, width):
        raise ValueError(f"a {height}x{width} image has nothing left after shaving {pixels} pixels per side")
    return image[..., pixels:height - pixels, pixels:width - pixels] if pixels else image


def psnr(sr: torch.Tensor, hr: torch.Tensor, shave_pixels: int = 0, y_channel: bool = False) -> torch.Tensor:
    """PSNR (dB) per image, (B,), for RGB in [0, 1]; on the EDSR luma of the difference when `y_channel`.

    A perfect match gives +inf.
    """
    sr, hr = _as_batch(sr), _as_batch(hr)
    if sr.shape != hr.shape:
        raise ValueError(f"PSNR needs equal shapes, got {tuple(sr.shape)} and {tuple(hr.shape)}")
    diff = sr - hr
    if y_channel:
        weights = diff.new_tensor(BENCHMARK_Y_WEIGHTS).view(1, 3, 1, 1) / BENCHMARK_Y_DIVISOR
        diff = (diff * weights).sum(1, keepdim=True)
    mse = shave(diff, shave_pixels).pow(2).mean(dim=(1, 2, 3))
    return -10 * torch.log10(mse)


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    radius = SSIM_WINDOW // 2
    taps = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    window = torch.exp(-taps ** 2 / (2 * SSIM_SIGMA ** 2))
    return window / window.sum()


def _filter_valid(image: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of (B, 1, H, W), kept only where the whole window lies inside the image."""
    image = F.conv2d(image, window.view(1, 1, -1, 1))
    return F.conv2d(image, window.view(1, 1, 1, -1))


def ssim(sr: torch.Tensor, hr: torch.Tensor, shave_pixels: int = 0) -> torch.Tensor:
    """SSIM per image, (B,), on the BT.601 luma (`rgb_to_y`) of RGB images in [0, 1], after the shave."""
    sr, hr = _as_batch(sr), _as_batch(hr)
    if sr.shape != hr.shape:
        raise ValueError(f"SSIM needs equal shapes, got {tuple(sr.shape)} and {tuple(hr.shape)}")
    x, y = shave(rgb_to_y(sr), shave_pixels), shave(rgb_to_y(hr), shave_pixels)
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels after the shave, "
                         f"got {tuple(x.shape[-2:])}")
    window = _gaussian_window(x.dtype, x.device)
    mu_x, mu_y = _filter_valid(x, window), _filter_valid(y, window)
    var_x = _filter_valid(x * x, window) - mu_x ** 2
    var_y = _filter_valid(y * y, window) - mu_y ** 2
    cov = _filter_valid(x * y, window) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * Y_DATA_RANGE) ** 2, (SSIM_K2 * Y_DATA_RANGE) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))


@dataclass(frozen=True)
class EvalProtocol:
    """How a test set is scored: `kind` 'benchmark' (Y, shave ceil(s)) or 'div2k' (RGB, shave ceil(s) + 6)."""

    kind: str
    scale: float

    def __post_init__(self):
        if self.kind not in EVAL_KINDS:
            raise ValueError(f"unknown evaluation kind {self.kind!r} (known: {', '.join(EVAL_KINDS)})")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"evaluation scale must be positive, got {self.scale}")

    @classmethod
    def from_eval_type(cls, eval_type: str) -> "EvalProtocol":
        """Parse the configs' `eval_type`, e.g. 'benchmark-4' or 'div2k-2.5'."""
        kind, sep, scale = str(eval_type).strip().rpartition("-")
        try:
            value = float(scale)
        except ValueError:
            value = math.nan
        if not sep or not math.isfinite(value):
            raise ValueError(f"eval_type must look like benchmark-4 or div2k-4, got {eval_type!r}")
        return cls(kind, value)

    def at_scale(self, scale: float) -> "EvalProtocol":
        return EvalProtocol(self.kind, scale)

    @property
    def shave(self) -> int:
        return math.ceil(self.scale) + (DIV2K_EXTRA_SHAVE if self.kind == "div2k" else 0)

    @property
    def y_channel(self) -> bool:
        return self.kind == "benchmark"

    def score(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'psnr', 'ssim'} per image for outputs `sr` (clamped here to [0, 1]) against `hr`."""
        sr = sr.clamp(0, 1)
        return {"psnr": psnr(sr, hr, self.shave, self.y_channel), "ssim": ssim(sr, hr, self.shave)}
