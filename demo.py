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
are 8-bit, written through a temporary file and a rename. A gray input (its three channels equal, as every
grayscale file reads) gives a grayscale (L or LA) output: the luma of the render, BT.601 weights (the model's
render of a gray image is not exactly gray). --compare labels its halves "bicubic" and "ContinuousSR". --self-ensemble averages the renders of the eight
flips and transposes of the input (inference/self_ensemble.py): eight encodes, a little sharper.

Exit status: 0 done; 2 bad usage or input (one line on stderr, no file written); 1 out of memory;
130 interrupted.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import entry_point  # the standard library only: its guard is up before the heavy imports

if __name__ == "__main__":
    entry_point.starting("demo.py")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

import cli  # noqa: E402
from inference import tiling, zoom  # noqa: E402
from inference.arguments import (  # noqa: E402
    AUTO, add_precision_option, focus_arg, non_negative_int, positive_float, positive_int, scale_arg, size_arg,
    tile_arg, zoom_arg)
from inference.image_io import (  # noqa: E402
    IMAGE_SUFFIXES, MAX_OUTPUT_PIXELS, ImageError, check_output_size, image_size, is_image_file, read_image_with_alpha,
    write_image)
from inference.pipeline import (  # noqa: E402
    Settings, comparison, comparison_size, encode, is_gray, load_model, luma, model_path, side_by_side, target_size,
    upscale)
from inference.resize import resize_bicubic  # noqa: E402
from inference.self_ensemble import OPTION_HELP as SELF_ENSEMBLE_HELP  # noqa: E402
from rasterizer import check_backend  # noqa: E402
from utils import (  # noqa: E402
    DEVICE_AUTO, DEVICE_CHOICES, EXIT_OK, UsageError, check_path, check_writable, resolve_device)

DEFAULT_FPS = 30.0
OPAQUE = 1.0  # the alpha of --compare's separator

log = logging.getLogger("demo")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.OneLineParser(prog="demo.py", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
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
                                        "default: the bundled model (weights/continuoussr-edsr-baseline.pth)")
    parser.add_argument("--device", default=DEVICE_AUTO,
                        help=f"{DEVICE_CHOICES} (default auto: CUDA if available, else the CPU)")
    parser.add_argument("--gpu", type=non_negative_int, metavar="N",
                        help="CUDA device N (the official flag; the same as --device cuda:N); an error without "
                             "CUDA, unless --device cpu is given")
    parser.add_argument("--backend", default=AUTO, help="rasterizer backend (auto picks the fastest available)")
    parser.add_argument("--tile", type=tile_arg, default=None, metavar="auto|N",
                        help="encode in tiles of N x N input pixels (0: never); auto: tile only when the image "
                             "does not fit in half the free memory, nor (on a CPU) in "
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
    add_precision_option(parser)
    parser.add_argument("--self-ensemble", action="store_true",
                        help=f"{SELF_ENSEMBLE_HELP}; still images only")
    parser.add_argument("--fps", type=positive_float, default=DEFAULT_FPS, help="frames per second of a zoom")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bars")
    return parser


# ---------------------------------------------------------------------------------------------- work
def checked_size(source: Path, target: Path, args: argparse.Namespace, settings: Settings) -> tuple[int, int]:
    """The SR size for `source` (from its header), refused when above --max-pixels or when `target`'s format
    cannot store what is written (with --compare, both halves)."""
    size = target_size(image_size(source), args.scale, args.size, settings.max_pixels)
    check_output_size(target.suffix, comparison_size(size) if args.compare else size)
    return size


def process_image(model: nn.Module, source: Path, target: Path, rgb: torch.Tensor, alpha: torch.Tensor | None,
                  size: tuple[int, int], compare: bool, settings: Settings) -> None:
    """Upscale one decoded image to `size` and write it (or the bicubic | SR comparison) to `target`; a gray
    image is written as grayscale."""
    log.info("%s: %dx%d → %dx%d", source, rgb.shape[2], rgb.shape[1], size[1], size[0])
    sr = upscale(model, rgb, size, settings)
    if is_gray(rgb):
        rgb, sr = rgb[:1], luma(sr)
    alpha = resize_bicubic(alpha, size) if alpha is not None else None
    if compare:
        sr = comparison(rgb, sr)
        alpha = side_by_side(alpha, alpha, OPAQUE) if alpha is not None else None
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
    size = checked_size(source, target, args, settings)  # from the header
    rgb, alpha = read_image_with_alpha(source)  # a damaged file fails here, before the model loads
    check_writable(target)
    model = load_model(model_path(args.model), settings.device, args.precision)
    process_image(model, source, target, rgb, alpha, size, args.compare, settings)
    return EXIT_OK


def run_folder(args: argparse.Namespace, settings: Settings) -> int:
    """Upscale every image of a folder. A file that is not an image, or cannot be read, is skipped with a warning;
    the warnings wait for the first image written, so that a run that writes nothing reports one error line."""
    source, target = Path(args.input), Path(args.output)
    if target.exists() and not target.is_dir():
        raise UsageError(f"--output {target} is a file; with a folder --input it must be a folder")
    if target.resolve() == source.resolve():
        raise UsageError("--output is the input folder; the originals would be overwritten")
    if is_image_file(target):
        raise UsageError(f"--output {target} names an image; with a folder --input it must be a folder")
    files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if is_image_file(p)]
    skipped = [f"{p}: not an image ({', '.join(IMAGE_SUFFIXES)})" for p in files if not is_image_file(p)]
    sizes = {}
    for path in images:
        try:
            sizes[path] = checked_size(path, target / path.name, args, settings)  # from the headers
        except (ImageError, UsageError) as exc:
            skipped.append(f"{path}: {exc}")
    if not sizes:
        raise UsageError(f"no image in {source} can be read ({_skips(skipped)})" if skipped else
                         f"no images in {source} ({', '.join(IMAGE_SUFFIXES)})")
    check_writable(target / next(iter(sizes)).name)
    model = load_model(model_path(args.model), settings.device, args.precision)
    written = 0
    for path, size in tqdm(sizes.items(), desc="images", unit="image", disable=not settings.progress):
        try:
            rgb, alpha = read_image_with_alpha(path)
        except ImageError as exc:
            skipped.append(f"{path}: {exc}")
            continue
        process_image(model, path, target / path.name, rgb, alpha, size, args.compare, settings)
        written += 1
        for reason in skipped:
            log.warning("skipping %s", reason)
        skipped.clear()
    if written == 0:
        raise UsageError(f"no image in {source} can be read ({_skips(skipped)})")
    log.info("wrote %d of %d images to %s", written, len(images), target)
    return EXIT_OK


def _skips(reasons: list[str]) -> str:
    """The first of `reasons` a folder's files were skipped for, and how many more there are."""
    return reasons[0] + (f"; and {len(reasons) - 1} more" if len(reasons) > 1 else "")


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
    model = load_model(model_path(args.model), settings.device, args.precision)
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


def main(argv: list[str] | None = None) -> int:
    args = cli.parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    for logger in (log, logging.getLogger("inference")):  # this program's lines and the library's
        logger.handlers = [_TqdmHandler()]
        logger.propagate = False
        logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    return cli.run("demo.py", lambda: run(args), usage_errors=(zoom.ZoomError,), non_finite="; nothing was written",
                   interrupted="interrupted; nothing partial was left",
                   out_of_memory="; try a smaller --tile or a smaller output")


if __name__ == "__main__":
    sys.exit(main())
