"""Tiled encoding: one Gaussian field for an LR image too large to encode at once, with no seams.

The image is cut into cores that partition it. Each core is encoded with `overlap` LR pixels of context on
every side: the context goes through the encoder, and the head (`ContinuousGaussian.encode`'s `core`) computes
only the lattice cells of the core (lattice cell (r, c) belongs to LR pixel (r // 2, c // 2)), reading the ring
of one cell around them that its 3x3 convolution needs: the head, most of the arithmetic, is never repeated.
The cores' cells are stitched into one field of the whole image, which is rendered once: the rendered image
has no seams by construction. Where the overlap covers the encoder's receptive field (the encoders that
declare `finite_receptive_field`: `receptive_margin`), the stitched field is the untiled one. Window-attention
encoders (SwinIR, HAT) see the whole image in principle: for them tiles are aligned to the attention windows
(`tile_multiple`) and a generous overlap makes the field agree closely, not exactly.

The head works in chunks of fixed size (gaussian.HEAD_CHUNK_PIXELS), so a tile's memory grows with its size
only through the encoder: the automatic tile size compares the encoder's `encode_bytes_per_lr_pixel`
(measured on the CPU by `scripts/measure_encode_memory.py`) with the free memory of the device, never more
than TILE_MEMORY_CAP on a CPU. Each encoder class declares these three traits (models/encoder.py: TilingTraits);
tiling asks the model's encoder, and an encoder that declares nothing gets TilingTraits' safe defaults.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from tqdm import tqdm

from gaussian import HEAD_CHUNK_BYTES, LATTICE_FACTOR, GaussianField
from models.encoder import TilingTraits

# LR pixels of context for encoders without a finite receptive field (window attention, channel attention).
ATTENTION_TILE_OVERLAP = 32
# Bytes per LR pixel of the stitched field itself: 4 Gaussians x (3 colour + 3 Cholesky + 2 offset) floats.
FIELD_BYTES_PER_LR_PIXEL = LATTICE_FACTOR ** 2 * 8 * 4
# Share of the free memory that one tile's encode may use (the rest: the canvas, the allocator, other programs).
MEMORY_FRACTION = 0.5
# The most memory one tile's encode (encoder and head chunk) is given on a CPU, however much is free: a megapixel
# photo then encodes within 2 GB of resident memory in all, and larger tiles would save little (only the
# encoder's work on the context is repeated: with the EDSR encoder, ~10 % of the arithmetic at this size). A GPU's
# memory is its own and measured exactly (free_memory): there only MEMORY_FRACTION of it bounds a tile.
TILE_MEMORY_CAP = 1 << 30
# The automatic choice never picks cores smaller than this (LR pixels): below it the overlap dominates.
MIN_AUTO_TILE = 32
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class Tile:
    """A core of the partition and the region encoded for it, both (top, left, bottom, right) in LR pixels."""

    core: tuple[int, int, int, int]
    context: tuple[int, int, int, int]


def _context(start: int, stop: int, overlap: int, align: int, length: int) -> tuple[int, int]:
    """[start, stop) widened by `overlap`, its ends moved outwards to multiples of `align`, clipped to the image."""
    low = max(start - overlap, 0) // align * align
    high = min(-(-(stop + overlap) // align) * align, length)
    return low, high


def plan_tiles(lr_size: tuple[int, int], tile: int, overlap: int, align: int = 1) -> list[Tile]:
    """Cores of `tile` x `tile` LR pixels (smaller at the bottom and right edges) partitioning the image."""
    if tile < 1 or overlap < 0 or align < 1:
        raise ValueError(f"tile must be ≥ 1, overlap ≥ 0, align ≥ 1; got {tile}, {overlap}, {align}")
    height, width = lr_size
    tiles = []
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            ctop, cbottom = _context(top, bottom, overlap, align, height)
            cleft, cright = _context(left, right, overlap, align, width)
            tiles.append(Tile((top, left, bottom, right), (ctop, cleft, cbottom, cright)))
    return tiles


def encoder_trait(model: nn.Module, name: str):
    """The TilingTraits attribute `name` of the model's encoder, or its safe default when it declares none."""
    return getattr(getattr(model, "encoder", None), name, getattr(TilingTraits, name))


def receptive_margin(model: nn.Module) -> int | None:
    """LR pixels of context that determine a lattice cell exactly, or None if the encoder has no finite bound.

    Walks the modules backwards from the head's lattice to the LR image, growing the interval of positions a
    cell depends on: a k x k convolution widens it by k // 2 at its own resolution, a pixel (un)shuffle changes
    the resolution. Every convolution is counted as if all lay on one path, so for residual and dense networks
    this is an upper bound.
    """
    if not encoder_trait(model, "finite_receptive_field"):
        return None
    low, high = 0, LATTICE_FACTOR  # the lattice cells of one LR pixel, at the lattice resolution
    for module in reversed(list(model.modules())):
        if isinstance(module, nn.Conv2d):
            if any(s != 1 for s in module.stride):
                return None
            reach = max((k - 1) // 2 * d for k, d in zip(module.kernel_size, module.dilation))
            low, high = low - reach, high + reach
        elif isinstance(module, nn.PixelShuffle):
            factor = module.upscale_factor
            low, high = low // factor, -(-high // factor)
        elif isinstance(module, nn.PixelUnshuffle):
            factor = module.downscale_factor
            low, high = low * factor, high * factor
    return max(-low, high - 1)


def default_overlap(model: nn.Module) -> int:
    """The receptive margin where it is finite, else ATTENTION_TILE_OVERLAP."""
    margin = receptive_margin(model)
    return ATTENTION_TILE_OVERLAP if margin is None else margin


def tile_alignment(model: nn.Module) -> int:
    """Tile boundaries must fall on multiples of this (the attention window), so windows match the untiled ones."""
    return int(encoder_trait(model, "tile_multiple"))


def encode_bytes_per_lr_pixel(model: nn.Module) -> int:
    """The encoder's estimate of `encode`'s peak memory per LR pixel (TilingTraits)."""
    return int(encoder_trait(model, "encode_bytes_per_lr_pixel"))


def free_memory(device: torch.device) -> int | None:
    """Bytes free on `device`: the CUDA allocator's view, or MemAvailable of /proc/meminfo; None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def tile_memory_cap(device: torch.device) -> int | None:
    """The most memory a tile's encode may use on `device` whatever is free: TILE_MEMORY_CAP on a CPU, none on CUDA."""
    return None if device.type == "cuda" else TILE_MEMORY_CAP


def auto_tile(model: nn.Module, lr_size: tuple[int, int], free_bytes: int | None, overlap: int,
              cap: int | None = TILE_MEMORY_CAP) -> int | None:
    """The core size for an image of `lr_size` given `free_bytes` (None: unknown), or None when the whole image
    is encoded at once within the budget: min(MEMORY_FRACTION of the free memory less the field, `cap`), less
    the head's chunk (`cap` None: the free memory alone; with neither known, TILE_MEMORY_CAP)."""
    height, width = lr_size
    per_pixel = encode_bytes_per_lr_pixel(model)
    bounds = [] if cap is None else [cap]
    if free_bytes is not None:
        bounds.append(free_bytes * MEMORY_FRACTION - height * width * FIELD_BYTES_PER_LR_PIXEL)
    budget = (min(bounds) if bounds else TILE_MEMORY_CAP) - HEAD_CHUNK_BYTES
    if height * width * per_pixel <= budget:
        return None
    side = math.isqrt(max(int(budget // per_pixel), 0))  # the side of the encoded region, context included
    return max(side - 2 * overlap, MIN_AUTO_TILE)


def encode_tiled(model: nn.Module, lr: torch.Tensor, tile: int | None, overlap: int, align: int = 1,
                 progress: bool = True, on_tile: Callable[[int, int], None] | None = None) -> GaussianField:
    """The field of `lr` (B, 3, h, w), encoded core by core (`tile` None: the whole image at once) and stitched.

    Each tile's context goes through the encoder, and the head runs on its core's cells only (`model.encode`'s
    `core`). With `progress`, a bar on a terminal follows the head's chunks over the whole image, with the time
    left. `on_tile(done, total)` is called before the first tile and after each (for progress shown elsewhere).
    """
    height, width = lr.shape[-2:]
    tiles = plan_tiles((height, width), tile or max(height, width), overlap, align)
    report = on_tile or (lambda done, total: None)
    report(0, len(tiles))
    f = LATTICE_FACTOR
    names = [field.name for field in dataclasses.fields(GaussianField)]
    stitched: dict[str, torch.Tensor] = {}
    with tqdm(total=height * width, desc="encode", unit="px", unit_scale=True, leave=False,
              disable=None if progress else True) as bar:  # None: shown on a terminal only
        for done, t in enumerate(tiles, 1):
            (top, left, bottom, right), (ctop, cleft, cbottom, cright) = t.core, t.context
            part = model.encode(lr[..., ctop:cbottom, cleft:cright],
                                core=(top - ctop, left - cleft, bottom - ctop, right - cleft), on_chunk=bar.update)
            report(done, len(tiles))
            if len(tiles) == 1:
                return part
            for name in names:
                piece = getattr(part, name)
                if name not in stitched:
                    stitched[name] = piece.new_empty(piece.shape[0], f * height, f * width, piece.shape[-1])
                stitched[name][:, f * top:f * bottom, f * left:f * right] = piece
    return GaussianField(**stitched)
