"""The ContinuousSR head: LR features → a lattice of 2D Gaussians (4 per LR pixel) → an image at any size.

`encode` does everything that depends only on the image (encoder, colours, covariance weights, offsets);
`render` does only what depends on the output size (centres and covariances in output pixels, rasterizing).
The formulas are docs/DESIGN.md §3; parameter names match the official checkpoints.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn

from models.mlp import MLP
from models.registry import make
from utils import check_finite
from rasterizer import lattice_points, rasterize

# Gaussians per LR pixel along each axis (PixelUnshuffle(2) of the x4 features).
LATTICE_FACTOR = 2
ENCODER_FEATURE_CHANNELS = 64
ENCODER_FEATURE_SCALE = 4
HEAD_CHANNELS = ENCODER_FEATURE_CHANNELS * LATTICE_FACTOR ** 2
LEAKY_RELU_SLOPE = 0.01
# Deep Gaussian Prior: Cholesky factors (l11, l21, l22) in LR pixels × DGP_UNIT, as in the paper's dictionary.
DGP_L11 = (0.0, 0.41, 0.62, 0.98, 1.13, 1.29, 1.64, 1.85, 2.36)
DGP_L21 = (-0.86, -0.36, -0.16, 0.19, 0.34, 0.49, 0.84, 1.04, 1.54)
DGP_L22 = (0.0, 0.33, 0.53, 0.88, 1.03, 1.18, 1.53, 1.73, 2.23)
DGP_UNIT = 4.0
# LR pixels (4 Gaussians each) whose head (conv1, the 730-way dictionary softmax, the MLPs) is computed at once:
# bounds the head's memory whatever the image (HEAD_CHUNK_BYTES), with matrix products still large enough to
# run at the CPU's full rate. Chunks are whole LR rows where a row fits.
HEAD_CHUNK_PIXELS = 1 << 11
# The dictionary's rows are padded to a multiple of this for the head's matrix products (see ContinuousGaussian._head).
DICTIONARY_ROW_MULTIPLE = 16
# Peak bytes of the head's work on one chunk (its temporaries), measured with scripts/measure_encode_memory.py
# (2-core CPU, torch 2.13, fp32, 2026-12-07): tiling adds it to the encoder's own memory.
HEAD_CHUNK_BYTES = 134090752
# Arithmetic of encode() (encoder and head): exact fp32, TF32 matmuls/convolutions on CUDA, or bf16 autocast.
# The field is always returned in fp32 and the rasterizer always accumulates in fp32.
PRECISIONS = ("fp32", "tf32", "bf16")


_warned_cpu_bf16 = False


def cpu_bf16_native() -> bool:
    """Whether this CPU runs bf16 matmuls/convolutions natively (oneDNN's own check: AVX512-BF16, AMX, or
    AVX512 cores it has bf16 kernels for). Elsewhere oneDNN falls back to a reference bf16 GEMM that is
    tens of times slower than fp32 (64-109x measured on an AVX2-only EPYC)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def _cpu_bf16_fallback() -> None:
    """Warn, once per process, that bf16 on this CPU runs as fp32."""
    global _warned_cpu_bf16
    if not _warned_cpu_bf16:
        _warned_cpu_bf16 = True
        warnings.warn(f"bf16 requested, but this CPU has no native bf16 (torch reports CPU capability "
                      f"{torch.backends.cpu.get_cpu_capability()}): running fp32 instead, which is much faster "
                      f"here", RuntimeWarning, stacklevel=4)


@contextlib.contextmanager
def encode_precision(precision: str, device: torch.device) -> Iterator[None]:
    """Run the enclosed encoder/head work at `precision` (one of PRECISIONS), restoring global flags after.

    bf16 on a CPU without native bf16 (`cpu_bf16_native`) warns once and runs fp32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (use one of {', '.join(PRECISIONS)})")
    if precision == "bf16" and device.type == "cpu" and not cpu_bf16_native():
        _cpu_bf16_fallback()
        yield
    elif precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    elif precision == "tf32":
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    else:
        yield


def make_dgp_dictionary() -> torch.Tensor:
    """The (730, 3) dictionary: the Cartesian product of the three value lists, then a row of zeros."""
    rows = list(itertools.product(DGP_L11, DGP_L21, DGP_L22)) + [(0.0, 0.0, 0.0)]
    return torch.tensor(rows, dtype=torch.float32)


@dataclass
class GaussianField:
    """Everything `render` needs, computed once per image. Each tensor is (B, 2h, 2w, ·).

    colour: RGB per Gaussian (unclamped). cholesky: (l11, l21, l22) in LR pixels × 4. offset: drift of the
    centre from its lattice anchor in LR pixels, in (−1, 1).
    """

    colour: torch.Tensor
    cholesky: torch.Tensor
    offset: torch.Tensor

    @property
    def lr_size(self) -> tuple[int, int]:
        return self.colour.shape[1] // LATTICE_FACTOR, self.colour.shape[2] // LATTICE_FACTOR

    def check_finite(self) -> "GaussianField":
        """The field itself, or utils.NonFiniteError if any colour, covariance or drift is NaN or infinite (a NaN
        Gaussian would otherwise vanish from the render without a trace)."""
        for name in ("colour", "cholesky", "offset"):
            check_finite(getattr(self, name), f"the Gaussian field's {name}")
        return self

    def to(self, *args, **kwargs) -> "GaussianField":
        return GaussianField(self.colour.to(*args, **kwargs), self.cholesky.to(*args, **kwargs),
                             self.offset.to(*args, **kwargs))


def parse_scale(scale: float | Sequence[float] | torch.Tensor) -> tuple[float, float]:
    """(s_h, s_w) from a number, a pair, or the official tensor forms (scalar, (1,), (1, 2), rows of one scale)."""
    if isinstance(scale, torch.Tensor):
        values = scale.detach().double().cpu()
        if values.ndim == 2 and values.shape[-1] in (1, 2):
            if not torch.all(values == values[0]):
                raise ValueError("every sample of a batch must share one scale")
            values = values[0]
        values = values.reshape(-1).tolist()
    elif isinstance(scale, (int, float)):
        values = [float(scale)]
    else:
        values = [float(v) for v in scale]
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise ValueError(f"a scale is one number or (s_h, s_w), got {len(values)} numbers")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"scales must be finite and positive, got {values}")
    return values[0], values[1]


def output_gaussians(field: GaussianField, size: tuple[int, int],
                     window: tuple[float, float, float, float] | None = None,
                     cells: tuple[tuple[int, int], tuple[int, int]] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rasterizer's inputs (xy, cholesky, colour) for the LR `window` of `field` shown at `size` (H, W).

    Cell (r, c) sits at LR position u = (c/2 + offset_x, r/2 + offset_y); with the window (top, left, win_h,
    win_w) (default: the whole image, which is `render`) drawn at scale (s_h, s_w) = (H/win_h, W/win_w), its
    centre is X = s_w·(u_x − left) − ½, Y = s_h·(u_y − top) − ½ in output pixels (docs/DESIGN.md §3), given to
    the rasterizer normalised (`rasterizer.lattice.centre`, the formula's one definition); its Cholesky factor is
    (s_w·l11, s_h·l21, s_h·l22) / DGP_UNIT. `cells` ((r0, r1), (c0, c1)), in LR pixels, keeps only the lattice
    cells of those LR pixels (a window's neighbourhood); default all. Shapes: xy (B, Hg, Wg, 2), cholesky
    (B, Hg, Wg, 3), colour (B, Hg, Wg, C).
    """
    height, width = size
    h, w = field.lr_size
    top, left, win_h, win_w = window if window is not None else (0.0, 0.0, float(h), float(w))
    (r0, r1), (c0, c1) = cells if cells is not None else ((0, h), (0, w))
    f = LATTICE_FACTOR
    # l11 scales with the width, l21 and l22 with the height (python scalars: no host-to-device copy)
    scale_x, scale_y = width / win_w / DGP_UNIT, height / win_h / DGP_UNIT
    rows, cols = (f * r0, f * r1), (f * c0, f * c1)
    xy, cholesky = lattice_points(field.offset, field.cholesky, rows, cols,
                                  (f, left, top, win_w, win_h, 1 / width, 1 / height, scale_x, scale_y))
    return xy, cholesky, field.colour[:, slice(*rows), slice(*cols)]


def output_size(lr_size: tuple[int, int], scale=None, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """Output (H, W): `size` as given, or round(h·s_h) x round(w·s_w) as the official code."""
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale or size")
    if size is not None:
        height, width = (int(v) for v in size)
    else:
        s_h, s_w = parse_scale(scale)
        height, width = round(lr_size[0] * s_h), round(lr_size[1] * s_w)
    if height < 1 or width < 1:
        raise ValueError(f"output size {height}x{width} is empty")
    return height, width


class ContinuousGaussian(nn.Module):
    """Encoder + Gaussian head, registered as "continuous-gaussian" (models/__init__.py). `cnn_spec` and `fc_spec` are accepted, and unused, as in official checkpoints."""

    def __init__(self, encoder_spec: dict, cnn_spec: dict | None = None, fc_spec: dict | None = None):
        super().__init__()
        self.encoder = make(encoder_spec)
        channels = getattr(self.encoder, "out_dim", ENCODER_FEATURE_CHANNELS)
        feature_scale = getattr(self.encoder, "feature_scale", ENCODER_FEATURE_SCALE)
        if (channels, feature_scale) != (ENCODER_FEATURE_CHANNELS, ENCODER_FEATURE_SCALE):
            raise ValueError(
                f"encoder {encoder_spec.get('name')!r} gives {channels}-channel features at x{feature_scale}; the "
                f"head needs {ENCODER_FEATURE_CHANNELS} channels at x{ENCODER_FEATURE_SCALE} (e.g. EDSR/RDN with "
                "no_upsampling: false, scale: 4; SwinIR/HAT with upsampler: pixelshuffle, upscale: 4)")
        self.ps = nn.PixelUnshuffle(LATTICE_FACTOR)
        self.conv1 = nn.Conv2d(HEAD_CHANNELS, 512, 3, padding=1)
        self.leaky_relu = nn.LeakyReLU(LEAKY_RELU_SLOPE)
        self.mlp_vector = MLP(3, 512, [256, 512, 512, 512])
        self.mlp = MLP(HEAD_CHANNELS, 3, [512, 1024, 256, 128, 64])
        self.mlp_offset = MLP(HEAD_CHANNELS, 2, [512, 1024, 256, 128, 64])
        self.register_buffer("gau_dict", make_dgp_dictionary(), persistent=False)
        self.precision = "fp32"  # default for encode(); a run-time choice, not part of the checkpoint

    def encode(self, inp: torch.Tensor, precision: str | None = None,
               core: tuple[int, int, int, int] | None = None,
               on_chunk: Callable[[int], None] | None = None) -> GaussianField:
        """LR image (B, 3, h, w) in [0, 1] → its Gaussian field (fp32); independent of the output size.

        `precision` (default `self.precision`): 'fp32', 'tf32' or 'bf16' for the encoder and head arithmetic.
        `core` (top, left, bottom, right), in LR pixels: the field of only those pixels, the rest of `inp` being
        context for the encoder and the head's convolution (tiled encoding); default the whole image.
        `on_chunk(pixels)` is called after each chunk of the head with the LR pixels it covered (progress).
        """
        if inp.ndim != 4:
            raise ValueError(f"input must be (B, C, h, w), got {tuple(inp.shape)}")
        height, width = inp.shape[-2:]
        top, left, bottom, right = core if core is not None else (0, 0, height, width)
        if not (0 <= top < bottom <= height and 0 <= left < right <= width):
            raise ValueError(f"core {core} is not a region of the {height}x{width} image")
        with encode_precision(precision or self.precision, inp.device):
            # channels-last: oneDNN's fast layout for convolutions, and the head's per-cell rows without a copy
            features = self.encoder(inp.contiguous(memory_format=torch.channels_last))
            expected = (ENCODER_FEATURE_SCALE * height, ENCODER_FEATURE_SCALE * width)
            if tuple(features.shape[-2:]) != expected:
                raise RuntimeError(f"encoder features are {tuple(features.shape[-2:])}, expected {expected}")
            return self._head(features, (top, bottom), (left, right), inp.dtype, on_chunk)

    def _head(self, features: torch.Tensor, rows: tuple[int, int], cols: tuple[int, int], dtype: torch.dtype,
              on_chunk: Callable[[int], None] | None) -> GaussianField:
        """The field of LR `rows` x `cols` from the encoder's x4 `features`, chunk by chunk (HEAD_CHUNK_PIXELS).

        Each chunk unshuffles only its own features and a ring of `ring` lattice cells around them (conv1's
        reach), zero-padded where the ring leaves the features, as conv1's own padding would: the same
        numbers as the whole lattice at once, in bounded memory, and none of the head's work outside `rows` x
        `cols`.
        """
        f, unshuffle = LATTICE_FACTOR, self.ps.downscale_factor
        ring = self.conv1.kernel_size[0] // 2
        lattice_h, lattice_w = features.shape[-2] // unshuffle, features.shape[-1] // unshuffle
        batch, (top, bottom), (left, right) = features.shape[0], rows, cols
        colour, cholesky, offset = (features.new_empty((batch, f * (bottom - top), f * (right - left), channels),
                                                       dtype=dtype)
                                    for channels in (self.mlp.out_dim, self.gau_dict.shape[-1], self.mlp_offset.out_dim))
        dictionary = self.gau_dict.to(features.dtype)
        keys = self.mlp_vector(dictionary)
        # Padded to a multiple of DICTIONARY_ROW_MULTIPLE rows, whose logits are −inf (weight 0): the same mixture,
        # from matrix products without a ragged edge (730 columns run at about 60 % of the rate of 736).
        extra = -len(dictionary) % DICTIONARY_ROW_MULTIPLE
        keys = nn.functional.pad(keys, (0, 0, 0, extra))
        logit_bias = nn.functional.pad(keys.new_zeros(len(dictionary)), (0, extra), value=-math.inf)
        dictionary_t = nn.functional.pad(dictionary, (0, 0, 0, extra)).T.contiguous()
        chunk_w = min(right - left, HEAD_CHUNK_PIXELS)
        chunk_h = max(HEAD_CHUNK_PIXELS // chunk_w, 1)
        for r0, c0 in itertools.product(range(top, bottom, chunk_h), range(left, right, chunk_w)):
            r1, c1 = min(r0 + chunk_h, bottom), min(c0 + chunk_w, right)
            lo_r, hi_r = max(f * r0 - ring, 0), min(f * r1 + ring, lattice_h)  # the ring, within the features
            lo_c, hi_c = max(f * c0 - ring, 0), min(f * c1 + ring, lattice_w)
            feat = self.ps(features[..., unshuffle * lo_r:unshuffle * hi_r, unshuffle * lo_c:unshuffle * hi_c])
            feat = feat.contiguous(memory_format=torch.channels_last)
            activated = self.leaky_relu(feat)
            padding = (lo_c - (f * c0 - ring), f * c1 + ring - hi_c, lo_r - (f * r0 - ring), f * r1 + ring - hi_r)
            padded = nn.functional.pad(activated, padding).contiguous(memory_format=torch.channels_last)
            queries = nn.functional.conv2d(padded, self.conv1.weight, self.conv1.bias)
            inner = (..., slice(f * r0 - lo_r, f * r1 - lo_r), slice(f * c0 - lo_c, f * c1 - lo_c))
            out = (slice(None), slice(f * (r0 - top), f * (r1 - top)), slice(f * (c0 - left), f * (c1 - left)))
            colour[out] = self.mlp(feat[inner].permute(0, 2, 3, 1))
            offset[out] = torch.tanh(self.mlp_offset(activated[inner].permute(0, 2, 3, 1)))
            weights = torch.softmax(nn.functional.linear(queries.permute(0, 2, 3, 1), keys, logit_bias), dim=-1)
            cholesky[out] = nn.functional.linear(weights, dictionary_t)  # L0 = Σ_k w_k D_k
            if on_chunk is not None:
                on_chunk((r1 - r0) * (c1 - c0))
        return GaussianField(colour, cholesky, offset)

    def render(self, field: GaussianField, scale=None, size: tuple[int, int] | None = None,
               backend: str = "auto") -> torch.Tensor:
        """Rasterize a field at `scale` ((s_h, s_w), a number, or the official tensor) or at `size` (H, W)."""
        height, width = output_size(field.lr_size, scale, size)
        xy, cholesky, colour = output_gaussians(field, (height, width))
        return rasterize(xy, cholesky, colour, height, width, backend)

    def forward(self, inp: torch.Tensor, scale) -> torch.Tensor:
        """The official signature: `scale` is [[s_h, s_w]], (s,) or a scalar; returns the unclamped render."""
        return self.render(self.encode(inp), scale=scale)
