"""A continuous zoom: encode an image once, then render each video frame from a window of its Gaussian field.

Zoom levels are output pixels per LR pixel. Frame k has level z_k = start·(end/start)^(k/(n−1)): geometric, so
the apparent speed of the zoom is constant. Every frame has the same size F = (H_f, W_f), by default the LR size
times `start`; at level z it shows the LR window of size (h, w)·start/z, the image's own rectangle scaled about
the focus point (a homothety: the focus stays still in the frame, everything else moves away from it). At
z = start the frame is the whole image; with the default focus (the image's centre) the zoom is centred.

`render_window` renders any window of a field: it keeps only the lattice cells whose Gaussians can reach the
window (a margin taken from the actual field) and places them in the frame with `gaussian.output_gaussians`,
the formulas `ContinuousGaussian.render` uses for the whole image.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image

from gaussian import DGP_UNIT, GaussianField, output_gaussians
from inference.image_io import to_uint8
from rasterizer import SIGMA_MAX, rasterize
from utils import atomic_file, atomic_path, check_finite

VIDEO_SUFFIXES = (".mp4", ".gif")
# H.264 in 4:2:0 (what players expect of an .mp4) needs even frame sides.
MP4_SIDE_MULTIPLE = 2
MP4_CODEC = "libx264"
MP4_PIXEL_FORMAT = "yuv420p"
MP4_QUALITY = 8  # imageio-ffmpeg's 0–10 scale
MS_PER_SECOND = 1000
GIF_LOOP_FOREVER = 0
# A GIF stores each frame's delay in whole centiseconds, as a 16-bit number: 0.01 s to 655.35 s.
GIF_DELAY_UNITS_PER_SECOND = 100
GIF_MAX_DELAY_UNITS = 0xFFFF
# Frame rates an .mp4 is written at: ffmpeg's H.264 timing needs a rate it can hold as a rational of modest size.
MIN_MP4_FPS = 1e-3
MAX_MP4_FPS = 1000.0
# Zoom levels (output pixels per input pixel) a frame may have. Above MAX, an LR pixel spans more output pixels
# than float32 positions resolve across an image (~1e-7 relative), and below MIN a frame holds thousands of
# images' worth of sub-pixel Gaussians: neither is a picture, so both are refused.
MIN_ZOOM_LEVEL = 1e-3
MAX_ZOOM_LEVEL = 1e4
MAX_ZOOM_FRAMES = 100_000  # an hour of video at 30 fps


class ZoomError(ValueError):
    """A zoom that cannot be made; the message is one line for the user."""


@dataclass(frozen=True)
class ZoomSpec:
    start: float
    end: float
    frames: int


def parse_zoom(text: str) -> ZoomSpec:
    """'START:END:FRAMES' (e.g. '1:8:60'): positive finite levels, at least one frame."""
    parts = text.split(":")
    if len(parts) != 3:
        raise ZoomError(f"zoom must be START:END:FRAMES (e.g. 1:8:60), got {text!r}")
    try:
        start, end, frames = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise ZoomError(f"zoom must be START:END:FRAMES with numbers START, END and an integer FRAMES, got {text!r}"
                        ) from None
    if not all(math.isfinite(v) and v > 0 for v in (start, end)):
        raise ZoomError(f"zoom levels must be positive and finite, got {text!r}")
    if not all(MIN_ZOOM_LEVEL <= v <= MAX_ZOOM_LEVEL for v in (start, end)):
        raise ZoomError(f"zoom levels must lie between {MIN_ZOOM_LEVEL:g} and {MAX_ZOOM_LEVEL:g} (output pixels "
                        f"per input pixel), got {text!r}")
    if not 1 <= frames <= MAX_ZOOM_FRAMES:
        raise ZoomError(f"a zoom has 1 to {MAX_ZOOM_FRAMES:,} frames, got {frames}")
    return ZoomSpec(start, end, frames)


def zoom_levels(spec: ZoomSpec) -> list[float]:
    """The level of each frame, geometric from start to end (both included)."""
    if spec.frames == 1:
        return [spec.start]
    ratio = spec.end / spec.start
    return [spec.start * ratio ** (k / (spec.frames - 1)) for k in range(spec.frames)]


def zoom_window(lr_size: tuple[int, int], focus: tuple[float, float], start: float, level: float
                ) -> tuple[float, float, float, float]:
    """(top, left, height, width) in LR pixels of the frame at `level`: the image scaled by start/level about focus.

    `focus` is (y, x) in LR pixels, (0, 0) the image's top-left corner.
    """
    shrink = start / level
    (height, width), (fy, fx) = lr_size, focus
    return fy * (1 - shrink), fx * (1 - shrink), height * shrink, width * shrink


def field_reach(field: GaussianField) -> float:
    """LR pixels beyond its lattice anchor that any Gaussian of `field` can draw into (drift + α ≥ 1/255 radius)."""
    l11, l21, l22 = (field.cholesky / DGP_UNIT).unbind(-1)
    variance = torch.maximum(l11 * l11, l21 * l21 + l22 * l22)
    radius = math.sqrt(2 * SIGMA_MAX * float(variance.max())) if variance.numel() else 0.0
    drift = float(field.offset.abs().max()) if field.offset.numel() else 0.0
    return drift + radius


def render_window(field: GaussianField, window: tuple[float, float, float, float], size: tuple[int, int],
                  backend: str = "auto", reach: float | None = None) -> torch.Tensor:
    """Render the LR window (top, left, height, width) of `field` at `size` (H, W): (B, C, H, W), unclamped.

    The window (0, 0, h, w) gives exactly `model.render(field, size=size)`; a window inside the image at
    scale s is the matching crop of the full render at s. `reach` (from `field_reach`) can be passed when
    rendering many windows of one field.
    """
    top, left, win_h, win_w = window
    height, width = size
    if win_h <= 0 or win_w <= 0 or height < 1 or width < 1:
        raise ValueError(f"window {window} and size {size} must be positive")
    h, w = field.lr_size
    margin = (field_reach(field) if reach is None else reach) + 1  # + 1: a cell's anchor lies within its pixel
    r0, r1 = max(math.floor(top - margin), 0), min(math.ceil(top + win_h + margin), h)
    c0, c1 = max(math.floor(left - margin), 0), min(math.ceil(left + win_w + margin), w)
    batch, channels = field.colour.shape[0], field.colour.shape[-1]
    if r0 >= r1 or c0 >= c1:
        return field.colour.new_zeros(batch, channels, height, width)
    xy, cholesky, colour = output_gaussians(field, size, window, ((r0, r1), (c0, c1)))
    return rasterize(xy, cholesky, colour, height, width, backend)


def frame_size(lr_size: tuple[int, int], start: float, suffix: str) -> tuple[int, int]:
    """The default frame size: the LR size times the start level, rounded up to even sides for .mp4."""
    multiple = MP4_SIDE_MULTIPLE if suffix == ".mp4" else 1
    return tuple(max(multiple, -(-round(side * start) // multiple) * multiple) for side in lr_size)


def check_frame_size(size: tuple[int, int], suffix: str) -> None:
    if suffix == ".mp4" and any(side % MP4_SIDE_MULTIPLE for side in size):
        raise ZoomError(f"an .mp4 needs even frame sides (H.264, 4:2:0), got {size[1]}x{size[0]}; choose an even "
                        "--size or write a .gif")


def render_zoom(field: GaussianField, spec: ZoomSpec, focus: tuple[float, float], size: tuple[int, int],
                backend: str = "auto") -> Iterable[np.ndarray]:
    """Yield the frames of the zoom as (H, W, 3) uint8 arrays (the first sample of a batched field)."""
    reach = field_reach(field)
    for level in zoom_levels(spec):
        window = zoom_window(field.lr_size, focus, spec.start, level)
        yield to_uint8(check_finite(render_window(field, window, size, backend, reach)[0], f"the frame at x{level:g}"))


def fps_range(suffix: str) -> tuple[float, float]:
    """The frame rates (lowest, highest) a video with `suffix` can hold."""
    if suffix.lower() == ".gif":
        return GIF_DELAY_UNITS_PER_SECOND / GIF_MAX_DELAY_UNITS, float(GIF_DELAY_UNITS_PER_SECOND)
    return MIN_MP4_FPS, MAX_MP4_FPS


def check_video_support(suffix: str, fps: float | None = None) -> None:
    """Fail early if this machine cannot write `suffix` (.mp4 needs the ffmpeg binary of imageio-ffmpeg), or the
    format cannot hold `fps` frames per second: before any frame is rendered, not after the last."""
    if suffix.lower() not in VIDEO_SUFFIXES:
        raise ZoomError(f"a zoom is written as {' or '.join(VIDEO_SUFFIXES)}, not {suffix!r}")
    if fps is not None:
        low, high = fps_range(suffix)
        if not low <= fps <= high:  # also refuses NaN
            raise ZoomError(f"a {suffix.lower()} holds {low:.4g} to {high:g} frames per second, got --fps {fps:g}")
    if suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ZoomError("writing .mp4 needs the imageio-ffmpeg package (pip install imageio-ffmpeg); "
                            ".gif works without it") from None


def _write_gif(path: Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """All frames into one looping GIF with PIL (which, like every GIF writer, holds them until the file is
    written) through `atomic_file`; returns the number of frames. A failed write raises OSError and leaves
    nothing behind."""
    images = [Image.fromarray(frame) for frame in frames]
    with atomic_file(path) as f:
        if images:
            images[0].save(f, format="GIF", save_all=True, append_images=images[1:],
                           duration=MS_PER_SECOND / fps, loop=GIF_LOOP_FOREVER)
    return len(images)


def _write_mp4(path: Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """Frames streamed to ffmpeg (H.264); returns the number of frames. On a failure the writer is closed (once:
    imageio's legacy writers mark themselves closed first). ffmpeg runs quietly and does not report its
    own failures to the writer (a full disk leaves a truncated file and no error), so the finished file is read
    back: OSError unless it holds every frame."""
    import imageio.v2 as imageio
    import imageio_ffmpeg

    writer = imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec=MP4_CODEC, quality=MP4_QUALITY,
                                pixelformat=MP4_PIXEL_FORMAT, macro_block_size=1, ffmpeg_log_level="quiet")
    count = 0
    try:
        for frame in frames:
            writer.append_data(frame)
            count += 1
        writer.close()
    except BaseException:
        with contextlib.suppress(Exception):
            writer.close()
        raise
    try:
        written, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (RuntimeError, OSError):
        written = None
    if written != count:
        raise OSError(f"ffmpeg could not finish the video (is the disk full?): {count} frames sent, "
                      f"{'an unreadable file' if written is None else f'{written} in the file'}")
    return count


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float) -> int:
    """Write frames to .mp4 or .gif through a temporary file and a rename; returns the number of frames."""
    path = Path(path)
    suffix = path.suffix.lower()
    check_video_support(suffix, fps)
    try:
        if suffix == ".gif":
            return _write_gif(path, frames, fps)
        with atomic_path(path) as tmp:
            return _write_mp4(tmp, frames, fps)
    except BrokenPipeError:
        raise ZoomError(f"cannot write {path}: ffmpeg stopped before the last frame (is the disk full?)") from None
    except OSError as exc:
        detail = exc.strerror or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ZoomError(f"cannot write {path}: {detail}") from None
