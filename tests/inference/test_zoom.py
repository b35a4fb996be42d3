"""The continuous zoom: spec parsing, frame geometry, window renders against full renders, video files."""
from __future__ import annotations

import math

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image

from gaussian import GaussianField, make_dgp_dictionary
from inference import zoom


def random_field(h: int, w: int, seed: int = 0, sharpness: float = 3.0) -> GaussianField:
    """A field shaped as the head makes it: O(1) colours, offsets in (−1, 1), dictionary-mixed covariances."""
    g = torch.Generator().manual_seed(seed)
    dictionary = make_dgp_dictionary()
    logits = torch.randn(1, 2 * h, 2 * w, dictionary.shape[0], generator=g) * sharpness
    return GaussianField(colour=torch.rand(1, 2 * h, 2 * w, 3, generator=g),
                         cholesky=torch.softmax(logits, -1) @ dictionary,
                         offset=torch.rand(1, 2 * h, 2 * w, 2, generator=g) * 2 - 1)


@pytest.mark.parametrize("text,expected", [("1:8:60", (1.0, 8.0, 60)), ("2.5:0.5:3", (2.5, 0.5, 3)),
                                           ("4:4:1", (4.0, 4.0, 1))])
def test_parse_zoom(text, expected):
    spec = zoom.parse_zoom(text)
    assert (spec.start, spec.end, spec.frames) == expected


@pytest.mark.parametrize("text", ["1:8", "1:8:60:2", "a:8:60", "1:8:2.5", "0:8:60", "1:-2:5", "nan:8:5", "1:inf:5",
                                  "1:8:0"])
def test_parse_zoom_rejects(text):
    with pytest.raises(zoom.ZoomError):
        zoom.parse_zoom(text)


def test_levels_are_geometric_from_start_to_end():
    levels = zoom.zoom_levels(zoom.ZoomSpec(1.0, 8.0, 4))
    assert levels == pytest.approx([1.0, 2.0, 4.0, 8.0])
    assert zoom.zoom_levels(zoom.ZoomSpec(3.0, 8.0, 1)) == [3.0]


def test_window_is_the_image_scaled_about_the_focus():
    lr_size, focus, start = (12, 16), (3.0, 10.0), 1.5
    assert zoom.zoom_window(lr_size, focus, start, start) == pytest.approx((0, 0, 12, 16))
    for level in (2.0, 3.7, 12.0):
        top, left, height, width = zoom.zoom_window(lr_size, focus, start, level)
        assert (height, width) == pytest.approx((12 * start / level, 16 * start / level))
        # The focus keeps its place in the frame: it sits at the same fraction of the window at every level.
        assert ((focus[0] - top) / height, (focus[1] - left) / width) == pytest.approx((3 / 12, 10 / 16))


@pytest.mark.parametrize("size", [(12, 16), (29, 37), (7, 40)])
def test_whole_window_is_the_head_render(size, tiny_sr_model):
    field = random_field(6, 8)
    expected = tiny_sr_model.render(field, size=size)
    assert (zoom.render_window(field, (0, 0, 6, 8), size) - expected).abs().max() < 1e-5


@pytest.mark.parametrize("focus", [(6.0, 8.0), (3.0, 4.0), (0.0, 0.0), (12.0, 16.0), (12.0, 2.0)])
@pytest.mark.parametrize("scale", [2, 3])
def test_zoom_frame_at_integer_scale_is_a_crop_of_the_full_render(focus, scale, tiny_sr_model):
    """Frame at level s (start 1, frame = LR size) = the matching crop of the full render at scale s."""
    field = random_field(12, 16, sharpness=8.0)  # sharp logits: elongated Gaussians reach further
    full = tiny_sr_model.render(field, scale=scale)
    top, left, height, width = zoom.zoom_window((12, 16), focus, 1.0, float(scale))
    frame = zoom.render_window(field, (top, left, height, width), (12, 16))
    rows, cols = round(top * scale), round(left * scale)
    assert math.isclose(rows, top * scale) and math.isclose(cols, left * scale)
    assert (frame - full[..., rows:rows + 12, cols:cols + 16]).abs().max() < 1e-4


def test_window_render_keeps_far_reaching_gaussians(tiny_sr_model):
    """A Gaussian anchored outside the window whose tail reaches into it is drawn (the margin is the field's)."""
    field = random_field(10, 10)
    field.cholesky[:] = 0.5
    field.cholesky[0, 0, 0] = torch.tensor([40.0, 0.0, 40.0])  # σ = 10 LR px, at the top-left corner
    full = tiny_sr_model.render(field, scale=2)
    frame = zoom.render_window(field, (5, 5, 5, 5), (10, 10))
    assert (frame - full[..., 10:, 10:]).abs().max() < 1e-4
    assert (zoom.render_window(field, (5, 5, 5, 5), (10, 10), reach=0.0) - full[..., 10:, 10:]).abs().max() > 1e-3


def test_window_outside_the_image_is_empty():
    frame = zoom.render_window(random_field(4, 4), (100, 100, 4, 4), (8, 8))
    assert frame.shape == (1, 3, 8, 8) and not frame.any()


def test_frame_size_defaults():
    assert zoom.frame_size((11, 15), 1.0, ".gif") == (11, 15)
    assert zoom.frame_size((11, 15), 1.0, ".mp4") == (12, 16)
    assert zoom.frame_size((12, 16), 2.5, ".mp4") == (30, 40)
    zoom.check_frame_size((12, 16), ".mp4")
    zoom.check_frame_size((11, 15), ".gif")
    with pytest.raises(zoom.ZoomError):
        zoom.check_frame_size((11, 16), ".mp4")


def frames(count: int, size=(12, 16)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


def test_gif_has_every_frame_at_the_frame_rate(tmp_path):
    path = tmp_path / "z.gif"
    assert zoom.write_video(path, frames(3), fps=20) == 3
    with Image.open(path) as gif:
        assert gif.n_frames == 3 and gif.size == (16, 12) and gif.info["duration"] == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.gif"]


def test_mp4_has_every_frame_at_the_frame_rate(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    path = tmp_path / "z.mp4"
    assert zoom.write_video(path, frames(4), fps=12) == 4
    reader = imageio.get_reader(path)
    try:
        assert reader.count_frames() == 4
        assert reader.get_meta_data()["fps"] == 12 and reader.get_meta_data()["size"] == (16, 12)
    finally:
        reader.close()


def test_failed_video_leaves_no_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "z.gif"
    path.write_bytes(b"old")

    def broken():
        yield from frames(2)
        raise RuntimeError("render failed")

    with pytest.raises(RuntimeError):
        zoom.write_video(path, broken(), fps=10)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["z.gif"]


def test_video_suffix_is_checked(tmp_path):
    with pytest.raises(zoom.ZoomError):
        zoom.write_video(tmp_path / "z.avi", frames(1), fps=10)


@pytest.mark.parametrize("suffix,fps", [(".gif", 1e-3), (".gif", 150.0), (".gif", math.nan), (".mp4", 1e6),
                                        (".mp4", 1e-9), (".gif", math.inf)])
def test_a_frame_rate_the_format_cannot_hold_is_refused_before_any_frame(tmp_path, suffix, fps):
    """A GIF's delay is whole centiseconds in 16 bits: a rate outside it failed only once every frame was
    rendered; it is refused up front, and write_video takes no frame from its source."""
    with pytest.raises(zoom.ZoomError, match="frames per second"):
        zoom.check_video_support(suffix, fps)
    taken = []

    def source():
        for frame in frames(2):
            taken.append(frame)
            yield frame

    with pytest.raises(zoom.ZoomError, match="frames per second"):
        zoom.write_video(tmp_path / f"z{suffix}", source(), fps)
    assert taken == [] and list(tmp_path.iterdir()) == []


def test_the_slowest_and_fastest_gif_rates_are_kept_exactly(tmp_path):
    low, high = zoom.fps_range(".gif")
    for fps, delay_ms in ((low, zoom.GIF_MAX_DELAY_UNITS * 10), (high, 10)):
        assert zoom.write_video(tmp_path / "z.gif", frames(2), fps) == 2
        with Image.open(tmp_path / "z.gif") as gif:
            assert gif.info["duration"] == delay_ms
