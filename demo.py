"""Upscale images with ContinuousSR: any scale or output size, whole folders, big images in tiles, zoom videos.

    python demo.py --input lr.png --output sr.png --scale 4 --model CKPT
    python demo.py --input lr.png --output sr.png --scale 3.5,2.25        # 3.5x taller, 2.25x wider
    python demo.py --input lr.png --output sr.png --size 1920x1080        # exactly 1920 wide, 1080 high
    python demo.py --input photos/ --output photos_x4/ --scale 4          # every image of a folder
    python demo.py --input lr.png --output zoom.mp4 --zoom 1:8:60 [--focus X,Y] [--size WxH] [--fps 30]
    python demo.py --input lr.png --output cmp.png --scale 4 --compare   # bicubic | ContinuousSR
    python demo.py --input lr.png --output sr.png --scale 4 --self-ensemble  # mean of 8 flips/transposes

Scales are height first, as the official demo reads them: --scale SH,SW scales the height by SH and the
width by SW (one number scales both), like the Python API's (s_h, s_w). Sizes and points are written as image
sizes are, width first: --size WxH, --focus X,Y. --gpu N (official) runs on CUDA device N, as --device cuda:N.
The image is encoded once into a field of Gaussians
and rendered at the requested size; an image too large for the free memory is encoded in overlapping tiles
whose fields are stitched and rendered as one (no seams). Alpha channels are resized apart, bicubic; outputs
are 8-bit, written through a temporary file and a rename. --self-ensemble averages the renders of the eight
flips and transposes of the input (inference/self_ensemble.py): eight encodes, a little sharper.

Exit status: 0 done; 2 bad usage or input (one line on stderr, no file written); 1 out of memory;
130 interrupted.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from tqdm import tqdm

import models
from gaussian import GaussianField, output_size
from inference import tiling, zoom
from inference.image_io import (IMAGE_SUFFIXES, MAX_OUTPUT_PIXELS, ImageError, image_size, is_image_file,
                                read_image_with_alpha, write_image)
from inference.resize import resize_bicubic
from inference.self_ensemble import OPTION_HELP as SELF_ENSEMBLE_HELP, TRANSFORMS, SelfEnsemble
from models import CheckpointError
from rasterizer import check_backend
from utils import (DEVICE_AUTO, DEVICE_CHOICES, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, NonFiniteError,
                   UsageError, check_finite, check_path, resolve_device, stop_cleanly_on_sigterm)

ROOT = Path(__file__).resolve().parent
# The checkpoint used without --model, relative to this folder (weights/MODEL_CARD.md describes it).
DEFAULT_MODEL: Path | None = Path("weights") / "continuoussr-edsr-baseline.pth"
DEFAULT_FPS = 30.0
AUTO = "auto"  # --backend and --tile
# --compare: width and value of the line between the two halves.
COMPARE_SEPARATOR_PX = 4
COMPARE_SEPARATOR_VALUE = 1.0
OUT_OF_MEMORY_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")

log = logging.getLogger("demo")


# ---------------------------------------------------------------------------------------------- arguments
def parse_pair(text: str, separator: str, what: str) -> tuple[float, float]:
    """'A' or 'A<sep>B' → (a, b) floats; one number stands for both."""
    parts = text.lower().split(separator)
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a number or two numbers joined by {separator!r}, "
                                         f"got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"{what} takes one or two numbers, got {text!r}")
    return values[0], values[1]


def scale_arg(text: str) -> tuple[float, float]:
    """'S' or 'SH,SW' (height first, as the official demo) → (s_h, s_w)."""
    s_h, s_w = parse_pair(text, ",", "--scale")
    if not all(math.isfinite(v) and v > 0 for v in (s_h, s_w)):
        raise argparse.ArgumentTypeError(f"scales must be positive and finite, got {text!r}")
    return s_h, s_w


def size_arg(text: str) -> tuple[int, int]:
    """'WxH' → (H, W)."""
    width, height = parse_pair(text, "x", "--size")
    if not all(v.is_integer() and v >= 1 for v in (width, height)) or "x" not in text.lower():
        raise argparse.ArgumentTypeError(f"--size must be WIDTHxHEIGHT in whole pixels (e.g. 1920x1080), "
                                         f"got {text!r}")
    return int(height), int(width)


def focus_arg(text: str) -> tuple[float, float]:
    """'X,Y' → (y, x)."""
    x, y = parse_pair(text, ",", "--focus")
    if not all(math.isfinite(v) for v in (x, y)) or "," not in text:
        raise argparse.ArgumentTypeError(f"--focus must be X,Y in input pixels, got {text!r}")
    return y, x


def zoom_arg(text: str) -> zoom.ZoomSpec:
    try:
        return zoom.parse_zoom(text)
    except zoom.ZoomError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def tile_arg(text: str) -> int | None:
    """'auto' → None; an integer ≥ 0 (0: never tile)."""
    if text == AUTO:
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"--tile must be 'auto' or a whole number of pixels, got {text!r}")
    return int(text)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 0, got {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (not the usage block) and exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="demo.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help=f"an image ({', '.join(IMAGE_SUFFIXES)}) or a folder of them")
    parser.add_argument("--output", required=True,
                        help="an image file (format from its suffix), a folder (with a folder --input), "
                             "or a .mp4/.gif (with --zoom)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--scale", type=scale_arg, metavar="S|SH,SW",
                        help="any positive scale; SH,SW is height first, as in the official demo: it scales the "
                             "height by SH and the width by SW (e.g. 4,2: 4x taller, 2x wider)")
    target.add_argument("--size", type=size_arg, metavar="WxH",
                        help="exact output size, width first as sizes are written: WIDTHxHEIGHT (e.g. 1920x1080 "
                             "is 1920 wide, 1080 high); with --zoom, the frame size")
    parser.add_argument("--model", help="a ContinuousSR checkpoint ({'model': {'name', 'args', 'sd'}}); "
                                        "default: the bundled model, once there is one")
    parser.add_argument("--device", default=DEVICE_AUTO,
                        help=f"{DEVICE_CHOICES} (default auto: CUDA if available, else the CPU)")
    parser.add_argument("--gpu", type=non_negative_int, metavar="N",
                        help="CUDA device N (the official flag; the same as --device cuda:N); an error without "
                             "CUDA, unless --device cpu is given")
    parser.add_argument("--backend", default=AUTO, help="rasterizer backend (auto picks the fastest available)")
    parser.add_argument("--tile", type=tile_arg, default=None, metavar="auto|N",
                        help="encode in tiles of N x N input pixels (0: never); auto: tile only when the image "
                             "does not fit in half the free memory, nor in "
                             f"{tiling.TILE_MEMORY_CAP / 2 ** 30:g} GiB (default)")
    parser.add_argument("--tile-overlap", type=non_negative_int, metavar="N",
                        help="input pixels of context around each tile (default: the encoder's receptive field "
                             f"for convolutional encoders, {tiling.ATTENTION_TILE_OVERLAP} for attention ones)")
    parser.add_argument("--max-pixels", type=positive_int, default=MAX_OUTPUT_PIXELS, metavar="N",
                        help=f"refuse outputs (or frames) above N pixels (default {MAX_OUTPUT_PIXELS:,})")
    parser.add_argument("--compare", action="store_true",
                        help="write bicubic (left) | ContinuousSR (right) side by side, at the output size")
    parser.add_argument("--zoom", type=zoom_arg, metavar="START:END:FRAMES",
                        help="a continuous zoom video (.mp4 or .gif) from level START to END (output pixels "
                             "per input pixel, geometric steps) in FRAMES frames of the input size x START "
                             "(or --size), e.g. 1:8:60")
    parser.add_argument("--focus", type=focus_arg, metavar="X,Y",
                        help="the point the zoom scales the image about (it stays still in the frame), in input "
                             "pixels from the top-left corner (default: the centre)")
    parser.add_argument("--self-ensemble", action="store_true",
                        help=f"{SELF_ENSEMBLE_HELP}; still images only")
    parser.add_argument("--fps", type=positive_float, default=DEFAULT_FPS, help="frames per second of a zoom")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bars")
    return parser


# ---------------------------------------------------------------------------------------------- set-up
@dataclass
class Settings:
    """What every image of a run shares."""

    device: torch.device
    backend: str
    tile: int | None  # None: automatic
    overlap: int | None  # None: the model's default
    max_pixels: int
    progress: bool
    self_ensemble: bool = False


def model_path(arg: str | None) -> Path:
    """--model, else the bundled model; a clear error when neither exists."""
    if arg:
        return Path(arg)
    if DEFAULT_MODEL is None:
        raise UsageError("a model is needed: pass --model CKPT (a ContinuousSR checkpoint)")
    path = DEFAULT_MODEL if DEFAULT_MODEL.is_absolute() else ROOT / DEFAULT_MODEL
    if not path.is_file():
        raise UsageError(f"the bundled model {path} is missing: pass --model CKPT (a ContinuousSR checkpoint)")
    return path


def load_model(path: Path, device: torch.device) -> nn.Module:
    model = models.sr_model_from_checkpoint(path, device)
    log.info("model %s (%s encoder) on %s", path, type(getattr(model, "encoder", model)).__name__, device)
    return model


def check_writable(path: Path) -> None:
    """Fail before any work if `path` could not be created: its nearest existing folder must take a file."""
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {path}: {folder} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def target_size(lr_size: tuple[int, int], scale: tuple[float, float] | None, size: tuple[int, int] | None,
                max_pixels: int) -> tuple[int, int]:
    """Output (H, W) for --scale or --size, refused when empty or above `max_pixels` (before any allocation)."""
    if size is None:
        height, width = lr_size[0] * scale[0], lr_size[1] * scale[1]
        if not height * width <= max_pixels:
            raise UsageError(f"scale x{scale[0]:g},{scale[1]:g} makes a {width:.3g}x{height:.3g} output, above "
                             f"--max-pixels {max_pixels:,}")
        try:
            size = output_size(lr_size, scale=scale)
        except ValueError:
            raise UsageError(f"scale x{scale[0]:g},{scale[1]:g} makes an empty output from a "
                             f"{lr_size[1]}x{lr_size[0]} image") from None
    if size[0] * size[1] > max_pixels:
        raise UsageError(f"a {size[1]}x{size[0]} output has {size[0] * size[1]:,} pixels, above --max-pixels "
                         f"{max_pixels:,}")
    return size


# ---------------------------------------------------------------------------------------------- work
def encode(model: nn.Module, lr: torch.Tensor, settings: Settings,
           on_tile: Callable[[int, int], None] | None = None) -> GaussianField:
    """The image's field: in tiles when --tile asks for it or the image does not fit in memory.

    `on_tile(done, total)` is called before the first tile and after each (total 1 when untiled).
    """
    height, width = lr.shape[-2:]
    overlap = tiling.default_overlap(model) if settings.overlap is None else settings.overlap
    tile = settings.tile
    if tile is None:
        tile = tiling.auto_tile(model, (height, width), tiling.free_memory(settings.device), overlap)
    if tile and tile < max(height, width):
        count = len(tiling.plan_tiles((height, width), tile, overlap))
        log.info("encoding in %d tiles of %d px (+%d px context)", count, tile, overlap)
    else:
        tile = None
    return tiling.encode_tiled(model, lr, tile, overlap, tiling.tile_alignment(model), settings.progress, on_tile)


def upscale(model: nn.Module, rgb: torch.Tensor, size: tuple[int, int], settings: Settings) -> torch.Tensor:
    """(3, h, w) → (3, H, W) in [0, 1] on the CPU."""
    def encode_image(lr: torch.Tensor) -> GaussianField:
        return encode(model, lr, settings)

    renderer, encoder = model, encode_image
    if settings.self_ensemble:
        log.info("self-ensemble: %d encodes", len(TRANSFORMS))
        renderer = SelfEnsemble(model, encode_image)
        encoder = renderer.encode
    start = time.perf_counter()
    with torch.inference_mode():
        field = encoder(rgb[None].to(settings.device)).check_finite()
        if settings.device.type == "cuda":
            torch.cuda.synchronize(settings.device)  # CUDA runs asynchronously: time the encode, not its launch
        encoded = time.perf_counter()
        sr = renderer.render(field, size=size, backend=settings.backend)[0]
        sr = check_finite(sr, "the render").clamp(0, 1).cpu()
    log.info("encode %.2f s, render %.2f s", encoded - start, time.perf_counter() - encoded)
    return sr


def side_by_side(left: torch.Tensor, right: torch.Tensor, fill: float) -> torch.Tensor:
    """(C, H, W) images joined left to right with a COMPARE_SEPARATOR_PX-wide line of `fill`."""
    line = left.new_full((left.shape[0], left.shape[1], COMPARE_SEPARATOR_PX), fill)
    return torch.cat((left, line, right), -1)


def process_image(model: nn.Module, source: Path, target: Path, rgb: torch.Tensor, alpha: torch.Tensor | None,
                  size: tuple[int, int], compare: bool, settings: Settings) -> None:
    """Upscale one decoded image to `size` and write it (or the bicubic | SR comparison) to `target`."""
    log.info("%s: %dx%d → %dx%d", source, rgb.shape[2], rgb.shape[1], size[1], size[0])
    sr = upscale(model, rgb, size, settings)
    alpha = resize_bicubic(alpha, size) if alpha is not None else None
    if compare:
        sr = side_by_side(resize_bicubic(rgb, size), sr, COMPARE_SEPARATOR_VALUE)
        alpha = side_by_side(alpha, alpha, 1.0) if alpha is not None else None
    write_image(target, sr, alpha)
    log.info("wrote %s", target)


def run_file(args: argparse.Namespace, settings: Settings) -> int:
    source, target = Path(args.input), Path(args.output)
    if target.is_dir():
        raise UsageError(f"--output {target} is a folder; give a file name (a folder is for a folder --input)")
    if not is_image_file(target):
        raise UsageError(f"--output {target}: unsupported image format (use one of {', '.join(IMAGE_SUFFIXES)})")
    if target.resolve() == source.resolve():
        raise UsageError(f"--output is the input file {source}; write the result elsewhere")
    size = target_size(image_size(source), args.scale, args.size, settings.max_pixels)  # from the header
    rgb, alpha = read_image_with_alpha(source)  # a damaged file fails here, before the model loads
    check_writable(target)
    model = load_model(model_path(args.model), settings.device)
    process_image(model, source, target, rgb, alpha, size, args.compare, settings)
    return EXIT_OK


def run_folder(args: argparse.Namespace, settings: Settings) -> int:
    source, target = Path(args.input), Path(args.output)
    if target.exists() and not target.is_dir():
        raise UsageError(f"--output {target} is a file; with a folder --input it must be a folder")
    if target.resolve() == source.resolve():
        raise UsageError("--output is the input folder; the originals would be overwritten")
    if is_image_file(target):
        raise UsageError(f"--output {target} names an image; with a folder --input it must be a folder")
    files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if is_image_file(p)]
    for path in files:
        if not is_image_file(path):
            log.warning("skipping %s: not an image (%s)", path, ", ".join(IMAGE_SUFFIXES))
    if not images:
        raise UsageError(f"no images in {source} ({', '.join(IMAGE_SUFFIXES)})")
    check_writable(target / images[0].name)
    model = load_model(model_path(args.model), settings.device)
    written = 0
    for path in tqdm(images, desc="images", unit="image", disable=not settings.progress):
        try:
            size = target_size(image_size(path), args.scale, args.size, settings.max_pixels)  # before decoding
            rgb, alpha = read_image_with_alpha(path)
        except (ImageError, UsageError) as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        process_image(model, path, target / path.name, rgb, alpha, size, args.compare, settings)
        written += 1
    log.info("wrote %d of %d images to %s", written, len(images), target)
    if written == 0:
        raise UsageError(f"no image in {source} could be read")
    return EXIT_OK


def run_zoom(args: argparse.Namespace, settings: Settings) -> int:
    source, target = Path(args.input), Path(args.output)
    if args.scale is not None:
        raise UsageError("--zoom sets the scale of every frame; set the frame size with --size WxH instead")
    if args.compare:
        raise UsageError("--compare makes a still image; it does not combine with --zoom")
    if args.self_ensemble:
        raise UsageError("--self-ensemble is for still images; it does not combine with --zoom")
    if source.is_dir():
        raise UsageError("--zoom takes one image, not a folder")
    suffix = target.suffix.lower()
    if suffix not in zoom.VIDEO_SUFFIXES:
        raise UsageError(f"--output {target}: a zoom is written as {' or '.join(zoom.VIDEO_SUFFIXES)}")
    zoom.check_video_support(suffix, args.fps)
    spec = args.zoom
    lr_size = image_size(source)
    size = args.size or zoom.frame_size(lr_size, spec.start, suffix)
    zoom.check_frame_size(size, suffix)
    target_size(lr_size, None, size, settings.max_pixels)
    focus = args.focus if args.focus is not None else (lr_size[0] / 2, lr_size[1] / 2)
    if not (0 <= focus[0] <= lr_size[0] and 0 <= focus[1] <= lr_size[1]):
        raise UsageError(f"--focus {focus[1]:g},{focus[0]:g} lies outside the {lr_size[1]}x{lr_size[0]} image")
    rgb, _ = read_image_with_alpha(source)  # a video has no alpha: the colour is taken as stored
    check_writable(target)
    model = load_model(model_path(args.model), settings.device)
    log.info("%s: zoom x%g → x%g in %d frames of %dx%d, focus %g,%g", source, spec.start, spec.end, spec.frames,
             size[1], size[0], focus[1], focus[0])
    with torch.inference_mode():
        field = encode(model, rgb[None].to(settings.device), settings).check_finite()
        frames = zoom.render_zoom(field, spec, focus, size, settings.backend)
        count = zoom.write_video(target, tqdm(frames, desc="frames", unit="frame", total=spec.frames,
                                              disable=not settings.progress), args.fps)
    log.info("wrote %s (%d frames, %g fps)", target, count, args.fps)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    for option, value in (("--input", args.input), ("--output", args.output)):
        if not value.strip():
            raise UsageError(f"{option} is empty: give a file or folder")
        try:
            check_path(value)
        except OSError as exc:
            raise UsageError(f"{option}: {exc.strerror}") from None
    source = Path(args.input)
    if not source.exists():
        raise UsageError(f"no such file or folder: {source}")
    if args.zoom is None and args.scale is None and args.size is None:
        raise UsageError("give the output size: --scale S|SH,SW or --size WxH (or --zoom START:END:FRAMES)")
    if args.focus is not None and args.zoom is None:
        raise UsageError("--focus is the centre of a --zoom; it needs --zoom")
    device = resolve_device(args.device, args.gpu)
    backend = check_backend(args.backend, device)
    settings = Settings(device, backend, args.tile, args.tile_overlap, args.max_pixels, not args.quiet,
                        args.self_ensemble)
    if args.zoom is not None:
        return run_zoom(args, settings)
    if source.is_dir():
        return run_folder(args, settings)
    return run_file(args, settings)


# ---------------------------------------------------------------------------------------------- entry point
class _TqdmHandler(logging.Handler):
    """Log lines that do not break a progress bar; warnings say so."""

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "warning: " if record.levelno >= logging.WARNING else ""
        tqdm.write(prefix + record.getMessage(), file=sys.stderr)


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OUT_OF_MEMORY_MESSAGES)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed on one line
        return int(exc.code or EXIT_OK)
    log.handlers = [_TqdmHandler()]
    log.propagate = False
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    stop_cleanly_on_sigterm()
    try:
        return run(args)
    except (UsageError, ImageError, CheckpointError, zoom.ZoomError) as exc:
        print(f"demo.py: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteError as exc:
        print(f"demo.py: error: {exc}; nothing was written", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:  # SIGINT, or SIGTERM (utils.Terminated): partial outputs are already removed
        print("demo.py: interrupted; nothing partial was left", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001  only memory exhaustion is expected here; anything else re-raises
        if not _is_out_of_memory(exc):
            raise
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"demo.py: error: out of memory ({detail}); try a smaller --tile or a smaller output",
              file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
