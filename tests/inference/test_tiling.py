"""Tiled encoding: the plan partitions the image, the margin bounds the receptive field, tiles leave no trace."""
from __future__ import annotations

import dataclasses
import io
import math
import sys

import pytest
import torch
import torch.nn.functional as F

import gaussian
import models
from conftest import smooth_image
from gaussian import GaussianField, LATTICE_FACTOR, make_dgp_dictionary
from inference import tiling

TINY_SWINIR = {"name": "continuous-gaussian", "args": {"encoder_spec": {"name": "swinir", "args": {
    "upsampler": "pixelshuffle", "upscale": 4, "embed_dim": 12, "depths": [1], "num_heads": [1],
    "window_size": 4, "img_size": 16}}}}
FIELD_NAMES = [f.name for f in dataclasses.fields(GaussianField)]
# Each encoder in a tiny configuration (RDN: its released one), as the head takes it (64 channels at x4).
TINY_ENCODERS = {
    "edsr-baseline": {"no_upsampling": False, "scale": 4, "n_resblocks": 1},
    "rdn": {"scale": 4},
    "swinir": TINY_SWINIR["args"]["encoder_spec"]["args"],
    "hat": {"upsampler": "pixelshuffle", "upscale": 4, "embed_dim": 12, "depths": [1], "num_heads": [2],
            "window_size": 4, "img_size": 16, "compress_ratio": 3, "squeeze_factor": 4, "mlp_ratio": 2},
}


def field_difference(a: GaussianField, b: GaussianField) -> float:
    return max(float((getattr(a, n) - getattr(b, n)).abs().max()) for n in FIELD_NAMES)


@pytest.mark.parametrize("size,tile,overlap,align", [((20, 28), 8, 3, 1), ((7, 5), 4, 10, 1), ((9, 9), 9, 2, 1),
                                                     ((30, 17), 8, 5, 4), ((1, 13), 3, 0, 1)])
def test_plan_cores_partition_the_image_and_contexts_cover_the_overlap(size, tile, overlap, align):
    height, width = size
    coverage = torch.zeros(size, dtype=torch.int64)
    for t in tiling.plan_tiles(size, tile, overlap, align):
        top, left, bottom, right = t.core
        ctop, cleft, cbottom, cright = t.context
        coverage[top:bottom, left:right] += 1
        assert bottom - top <= tile and right - left <= tile
        assert ctop <= max(top - overlap, 0) and cleft <= max(left - overlap, 0)
        assert cbottom >= min(bottom + overlap, height) and cright >= min(right + overlap, width)
        assert 0 <= ctop and 0 <= cleft and cbottom <= height and cright <= width
        for lo, hi, length in ((ctop, cbottom, height), (cleft, cright, width)):
            assert lo % align == 0 and (hi % align == 0 or hi == length)
    assert torch.equal(coverage, torch.ones_like(coverage))


@pytest.mark.parametrize("args", [(0, 2, 1), (4, -1, 1), (4, 2, 0)])
def test_plan_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        tiling.plan_tiles((10, 10), *args)


def test_receptive_margin_bounds_the_measured_dependence(tiny_sr_model):
    """The margin must contain every LR pixel a lattice cell depends on (measured by the gradient's support)."""
    margin = tiling.receptive_margin(tiny_sr_model)
    size, centre = 19, 9
    image = torch.rand(1, 3, size, size, requires_grad=True)
    field = tiny_sr_model.encode(image)
    cells = (0, slice(2 * centre, 2 * centre + 2), slice(2 * centre, 2 * centre + 2))
    sum(getattr(field, n)[cells].sum() for n in FIELD_NAMES).backward()
    rows, cols = torch.nonzero(image.grad.abs().sum((0, 1))).T
    reach = max(centre - int(rows.min()), int(rows.max()) - centre, centre - int(cols.min()), int(cols.max()) - centre)
    # Upper bound (the encoder's unused RGB convolution is counted too), but not a loose one.
    assert reach <= margin <= reach + 1


def test_attention_encoders_have_no_finite_margin_and_align_to_windows():
    model = models.make(TINY_SWINIR)
    assert tiling.receptive_margin(model) is None
    assert tiling.default_overlap(model) == tiling.ATTENTION_TILE_OVERLAP
    assert tiling.tile_alignment(model) == 4


@pytest.fixture(scope="module")
def image_and_field(tiny_sr_model):
    image = smooth_image(16, 24)[None]
    with torch.no_grad():
        return image, tiny_sr_model.encode(image)


@pytest.mark.slow
def test_tiled_field_and_render_equal_untiled(tiny_sr_model, image_and_field):
    image, untiled = image_and_field
    overlap = tiling.default_overlap(tiny_sr_model)
    with torch.no_grad():
        tiled = tiling.encode_tiled(tiny_sr_model, image, 8, overlap, progress=False)
        assert field_difference(tiled, untiled) < 1e-4
        reference = tiny_sr_model.render(untiled, scale=(3.5, 2.25))
        assert (tiny_sr_model.render(tiled, scale=(3.5, 2.25)) - reference).abs().max() < 1e-4
    assert reference.std() > 0.05  # a render with structure, so that the comparison means something


def whole_lattice_field(model: torch.nn.Module, inp: torch.Tensor) -> GaussianField:
    """The field of `inp` by the design's formulas, the whole lattice at once (docs/DESIGN.md §3)."""
    feat = F.pixel_unshuffle(model.encoder(inp), LATTICE_FACTOR)
    activated = F.leaky_relu(feat, gaussian.LEAKY_RELU_SLOPE)
    queries = F.conv2d(activated, model.conv1.weight, model.conv1.bias, padding=1).permute(0, 2, 3, 1)
    dictionary = make_dgp_dictionary()
    weights = torch.softmax(queries @ model.mlp_vector(dictionary).T, -1)
    return GaussianField(model.mlp(feat.permute(0, 2, 3, 1)), weights @ dictionary,
                         torch.tanh(model.mlp_offset(activated.permute(0, 2, 3, 1))))


def stitched_whole_lattice_fields(model: torch.nn.Module, lr: torch.Tensor, tiles: list[tiling.Tile]) -> GaussianField:
    """Each tile's context encoded whole (head included) and cropped to its core, the cores put together."""
    f = LATTICE_FACTOR
    parts = {}
    for t in tiles:
        (top, left, bottom, right), (ctop, cleft, cbottom, cright) = t.core, t.context
        field = whole_lattice_field(model, lr[..., ctop:cbottom, cleft:cright])
        for name in FIELD_NAMES:
            piece = getattr(field, name)[:, f * (top - ctop):f * (bottom - ctop), f * (left - cleft):f * (right - cleft)]
            parts.setdefault(name, {}).setdefault(top, []).append(piece)
    return GaussianField(**{name: torch.cat([torch.cat(row, 2) for _, row in sorted(rows.items())], 1)
                            for name, rows in parts.items()})


@pytest.mark.parametrize("tile", [None, 8])
@pytest.mark.parametrize("encoder", TINY_ENCODERS)
def test_every_encoder_tiled_and_untiled_equals_the_whole_lattice_head(encoder, tile, monkeypatch):
    """The head in chunks, and in tiles only on the cores (and its convolution's ring), gives each tile the
    field that the whole lattice of its context gives, for every encoder (window encoders included, whose
    tiled field is close to the untiled one, not equal)."""
    torch.manual_seed(0)
    model = models.make({"name": "continuous-gaussian", "args": {"encoder_spec": {
        "name": encoder, "args": TINY_ENCODERS[encoder]}}}).eval()
    image = smooth_image(12, 16)[None]
    overlap, align = 4, tiling.tile_alignment(model)
    tiles = tiling.plan_tiles((12, 16), tile or 16, overlap, align)
    monkeypatch.setattr(gaussian, "HEAD_CHUNK_PIXELS", 20)  # rows of 16 pixels and parts of rows
    with torch.no_grad():
        reference = stitched_whole_lattice_fields(model, image, tiles)
        field = tiling.encode_tiled(model, image, tile, overlap, align, progress=False)
    scale = max(float(getattr(reference, n).abs().max()) for n in FIELD_NAMES)
    assert field_difference(field, reference) <= 1e-5 * max(1.0, scale)
    assert len(tiles) == (1 if tile is None else 4)


def test_too_little_overlap_shows(tiny_sr_model, image_and_field):
    """The control of the test above: without enough context, cores near tile edges differ."""
    image, untiled = image_and_field
    with torch.no_grad():
        tiled = tiling.encode_tiled(tiny_sr_model, image, 8, 1, progress=False)
    assert field_difference(tiled, untiled) > 1e-3


def test_one_tile_is_a_plain_encode(tiny_sr_model, image_and_field):
    image, untiled = image_and_field
    with torch.no_grad():
        assert field_difference(tiling.encode_tiled(tiny_sr_model, image, 64, 3, progress=False), untiled) == 0


@pytest.mark.parametrize("tile,count", [(8, 6), (64, 1)])  # 16x24 in 8x8 tiles: 2 rows of 3
def test_progress_is_reported_before_the_first_tile_and_after_each(tiny_sr_model, image_and_field, tile, count):
    image, _ = image_and_field
    calls = []
    with torch.no_grad():
        tiling.encode_tiled(tiny_sr_model, image, tile, 2, progress=False, on_tile=lambda *c: calls.append(c))
    assert calls == [(done, count) for done in range(count + 1)]


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tile", [8, None])
@pytest.mark.parametrize("terminal,progress,shown", [(True, True, True), (False, True, False), (True, False, False)])
def test_progress_bar_over_the_image_on_a_terminal_when_asked(tiny_sr_model, image_and_field, monkeypatch, tile,
                                                              terminal, progress, shown):
    """The bar counts the image's LR pixels (16x24 = 384) across tiles and chunks; quiet in a pipe or when asked."""
    image, _ = image_and_field
    stream = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    with torch.no_grad():
        tiling.encode_tiled(tiny_sr_model, image, tile, 2, progress=progress)
    assert ("encode" in stream.getvalue() and "/384" in stream.getvalue()) == shown


def encoded_bytes(model: torch.nn.Module, side: int) -> int:
    """The memory a tile of `side` x `side` LR pixels (context included) is expected to need."""
    return side ** 2 * tiling.encode_bytes_per_lr_pixel(model) + gaussian.HEAD_CHUNK_BYTES


def test_auto_tile_fits_the_budget(tiny_sr_model):
    overlap = 7
    assert tiling.auto_tile(tiny_sr_model, (100, 100), None, overlap) is None  # fits the cap (memory unknown)
    assert tiling.auto_tile(tiny_sr_model, (100, 100), 1 << 40, overlap) is None  # fits
    free = tiling.TILE_MEMORY_CAP
    tile = tiling.auto_tile(tiny_sr_model, (1000, 1500), free, overlap)
    budget = free * tiling.MEMORY_FRACTION - 1000 * 1500 * tiling.FIELD_BYTES_PER_LR_PIXEL
    assert budget < tiling.TILE_MEMORY_CAP  # the free memory decides here
    assert encoded_bytes(tiny_sr_model, tile + 2 * overlap) <= budget < encoded_bytes(tiny_sr_model,
                                                                                      tile + 2 * overlap + 2)
    assert tiling.auto_tile(tiny_sr_model, (1000, 1500), 1 << 20, overlap) == tiling.MIN_AUTO_TILE


@pytest.mark.parametrize("free", [None, 1 << 40])
def test_auto_tile_never_exceeds_the_cap(tiny_sr_model, free):
    """However much memory is free (or when it is unknown), a tile's encode stays within TILE_MEMORY_CAP; an
    image that fits under the cap is encoded whole."""
    overlap = 7
    tile = tiling.auto_tile(tiny_sr_model, (2000, 3000), free, overlap)
    cap = tiling.TILE_MEMORY_CAP
    assert encoded_bytes(tiny_sr_model, tile + 2 * overlap) <= cap < encoded_bytes(tiny_sr_model,
                                                                                   tile + 2 * overlap + 2)
    fits = math.isqrt((cap - gaussian.HEAD_CHUNK_BYTES) // tiling.encode_bytes_per_lr_pixel(tiny_sr_model))
    assert tiling.auto_tile(tiny_sr_model, (fits, fits), free, overlap) is None
    assert tiling.auto_tile(tiny_sr_model, (fits + 1, fits + 1), free, overlap) is not None


def test_on_cuda_only_the_free_memory_bounds_a_tile(tiny_sr_model):
    """The cap keeps a CPU's resident memory small; a GPU's free memory is measured exactly and is the only bound."""
    assert tiling.tile_memory_cap(torch.device("cpu")) == tiling.TILE_MEMORY_CAP
    assert tiling.tile_memory_cap(torch.device("cuda", 0)) is None
    overlap, size, free = 7, (2000, 3000), 1 << 40
    cap = tiling.tile_memory_cap(torch.device("cuda", 0))
    assert tiling.auto_tile(tiny_sr_model, size, free, overlap) is not None  # the CPU's cap tiles it
    assert tiling.auto_tile(tiny_sr_model, size, free, overlap, cap) is None  # a large GPU encodes it whole
    small = 4 * tiling.TILE_MEMORY_CAP  # half of it, less the field, is the budget
    tile = tiling.auto_tile(tiny_sr_model, size, small, overlap, cap)
    budget = small * tiling.MEMORY_FRACTION - size[0] * size[1] * tiling.FIELD_BYTES_PER_LR_PIXEL
    assert budget > tiling.TILE_MEMORY_CAP
    assert encoded_bytes(tiny_sr_model, tile + 2 * overlap) <= budget < encoded_bytes(tiny_sr_model,
                                                                                      tile + 2 * overlap + 2)


def test_tiling_asks_the_encoder_and_undeclared_encoders_get_safe_defaults():
    """Each encoder class declares its traits; an encoder that declares none is tiled as attention (no finite
    margin, the generous overlap), cut anywhere, with the largest measured memory estimate."""
    from models import encoder as traits
    from models.edsr import EDSREncoder
    from models.hat import HAT
    from models.rdn import RDN
    from models.swinir import SwinIR

    assert EDSREncoder.finite_receptive_field and RDN.finite_receptive_field
    assert not SwinIR.finite_receptive_field and not HAT.finite_receptive_field
    assert traits.LARGEST_ENCODE_BYTES_PER_LR_PIXEL == max(
        cls.encode_bytes_per_lr_pixel for cls in (EDSREncoder, RDN, SwinIR, HAT))

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Conv2d(3, 64, 3, padding=1)  # convolutional, but it does not say so

    plain = Plain()
    assert tiling.receptive_margin(plain) is None and tiling.default_overlap(plain) == tiling.ATTENTION_TILE_OVERLAP
    assert tiling.tile_alignment(plain) == 1
    assert tiling.encode_bytes_per_lr_pixel(plain) == traits.LARGEST_ENCODE_BYTES_PER_LR_PIXEL
    plain.encoder.encode_bytes_per_lr_pixel = 1000  # a foreign encoder can declare its own figure
    assert tiling.encode_bytes_per_lr_pixel(plain) == 1000


def test_free_memory_reads_meminfo(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:         1000 kB\nMemAvailable:   2048 kB\n")
    monkeypatch.setattr(tiling, "MEMINFO", meminfo)
    assert tiling.free_memory(torch.device("cpu")) == 2048 * 1024
    monkeypatch.setattr(tiling, "MEMINFO", tmp_path / "missing")
    assert tiling.free_memory(torch.device("cpu")) is None
