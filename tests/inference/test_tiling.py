"""Tiled encoding: the plan partitions the image, the margin bounds the receptive field, tiles leave no trace."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import models
from conftest import smooth_image
from gaussian import GaussianField
from inference import tiling

TINY_SWINIR = {"name": "continuous-gaussian", "args": {"encoder_spec": {"name": "swinir", "args": {
    "upsampler": "pixelshuffle", "upscale": 4, "embed_dim": 12, "depths": [1], "num_heads": [1],
    "window_size": 4, "img_size": 16}}}}
FIELD_NAMES = [f.name for f in dataclasses.fields(GaussianField)]


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


def test_auto_tile_fits_the_budget(tiny_sr_model):
    per_pixel = tiling.encode_bytes_per_lr_pixel(tiny_sr_model)
    overlap = 7
    assert tiling.auto_tile(tiny_sr_model, (100, 100), None, overlap) is None  # unknown memory: no tiling
    assert tiling.auto_tile(tiny_sr_model, (100, 100), 1 << 40, overlap) is None  # fits
    free = 4 * 300 * 300 * per_pixel
    tile = tiling.auto_tile(tiny_sr_model, (2000, 3000), free, overlap)
    field_bytes = 2000 * 3000 * tiling.FIELD_BYTES_PER_LR_PIXEL
    assert (tile + 2 * overlap) ** 2 * per_pixel <= free * tiling.MEMORY_FRACTION - field_bytes
    assert (tile + 2 * overlap + 2) ** 2 * per_pixel > free * tiling.MEMORY_FRACTION - field_bytes
    assert tiling.auto_tile(tiny_sr_model, (2000, 3000), 1 << 20, overlap) == tiling.MIN_AUTO_TILE


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
