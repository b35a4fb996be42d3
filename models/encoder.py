"""What tiled encoding (inference/tiling.py) asks of an encoder, declared by each encoder class.

Tiling cuts an LR image into cores, encodes each with some context around it and stitches the cores' Gaussians
into one field (docs/DESIGN.md §2). How much context is enough, and where a cut may fall, depends on the
encoder: each encoder class says it here, and tiling asks the encoder object (never a table of classes).
"""
from __future__ import annotations

# Peak bytes of the encoder's forward (float32, no autograd, its x4 features included) per LR pixel, measured with
# scripts/measure_encode_memory.py for each encoder class in its released configuration (2-core CPU, torch 2.13,
# 2026-12-07). The head adds a fixed amount whatever the image (it works in chunks: gaussian.HEAD_CHUNK_BYTES).
# Smaller configurations need less, so the figures err on the safe side for them. An encoder that declares
# nothing gets the largest measured.
EDSR_ENCODE_BYTES_PER_LR_PIXEL = 9537
RDN_ENCODE_BYTES_PER_LR_PIXEL = 19618
SWINIR_ENCODE_BYTES_PER_LR_PIXEL = 13864
HAT_ENCODE_BYTES_PER_LR_PIXEL = 44516
LARGEST_ENCODE_BYTES_PER_LR_PIXEL = HAT_ENCODE_BYTES_PER_LR_PIXEL


class TilingTraits:
    """Mixin of every encoder class: what tiling needs to know, with safe defaults.

    finite_receptive_field: True when the encoder is made only of stride-1 'same' convolutions, pixel
        (un)shuffles and per-pixel layers, listed in forward order, so that `tiling.receptive_margin` can bound
        the context a lattice cell depends on from the module list (tiled = untiled exactly). False (default)
        for attention, whose context is the whole image: tiling then uses a fixed generous overlap.
    encode_bytes_per_lr_pixel: peak memory of the encoder per LR pixel (the automatic tile size's estimate).
    tile_multiple: tile boundaries must fall on multiples of this many LR pixels (window attention: the window,
        so that tiles' windows are the untiled image's windows); 1 by default.
    """

    finite_receptive_field: bool = False
    encode_bytes_per_lr_pixel: int = LARGEST_ENCODE_BYTES_PER_LR_PIXEL
    tile_multiple: int = 1  # a class attribute or a property (WindowSREncoder: its window)
