"""Build paired LR sets from an HR folder with MATLAB's bicubic, as the benchmark packages were made.

For every HR image and every integer scale s: crop the HR image at the top left to a multiple of s
(MATLAB's `modcrop`), then `imresize(hr, 1/s, 'bicubic')` on the 8-bit image (`evaluation/imresize.py`). Writes
OUT/X{s}/{stem}x{s}.png — the layout of the benchmarks' LR_bicubic folders, which the `paired-image-folders`
dataset pairs with the HR folder by name.

    python scripts/make_lr.py --hr load/benchmark/Set5/HR --out load/benchmark/Set5/LR_bicubic --scales 2,3,4
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import entry_point  # noqa: E402  (the standard library only: its guard is up before the heavy imports)

if __name__ == "__main__":
    entry_point.starting("make_lr.py")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import cli  # noqa: E402
from evaluation.imresize import imresize  # noqa: E402
from inference.image_io import (  # noqa: E402
    MAX_8BIT, ImageError, image_size, is_image_file, read_image, to_uint8, write_image)
from utils import EXIT_OK, UsageError, check_writable  # noqa: E402


def parse_scales(text: str) -> list[int]:
    """'2,3,4' → [2, 3, 4]; paired sets need integer scales ≥ 2."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--scales must be comma-separated integers, got {text!r}") from None
    if not values or any(v != int(v) or v < 2 for v in values):
        raise UsageError(f"--scales must be integers ≥ 2 (paired LR sets use integer scales), got {text!r}")
    return sorted({int(v) for v in values})


def hr_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UsageError(f"HR folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
    if not files:
        raise UsageError(f"HR folder has no images: {folder}")
    return files


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Top-left crop of an (H, W, C) image to sides divisible by `scale`."""
    height, width = image.shape[:2]
    return image[:height - height % scale, :width - width % scale]


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """The LR image of an 8-bit (H, W, C) HR image at an integer scale: modcrop, then MATLAB bicubic 1/scale."""
    cropped = modcrop(hr, scale)
    if min(cropped.shape[:2]) == 0:
        raise UsageError(f"a {hr.shape[0]}x{hr.shape[1]} image is smaller than the scale {scale}")
    return imresize(cropped, size=(cropped.shape[0] // scale, cropped.shape[1] // scale))


def make_lr_sets(hr_dir: Path, out_dir: Path, scales: list[int]) -> int:
    """Write OUT/X{s}/{stem}x{s}.png for every HR image and scale; returns the number of images written."""
    files = hr_files(hr_dir)
    for path in files:  # every header and size checked before anything is written (decoding is checked as it goes)
        try:
            height, width = image_size(path)
        except ImageError as exc:
            raise UsageError(str(exc)) from None
        if min(height, width) < max(scales):
            raise UsageError(f"{path}: a {height}x{width} image is smaller than the scale {max(scales)}")
    check_writable(out_dir / f"X{scales[0]}" / f"{files[0].stem}x{scales[0]}.png")
    written = 0
    for path in tqdm(files, desc="make_lr", unit="image"):
        try:
            hr = to_uint8(read_image(path))
        except ImageError as exc:
            raise UsageError(str(exc)) from None
        for scale in scales:
            lr = torch.from_numpy(make_lr(hr, scale).transpose(2, 0, 1).copy()).float() / MAX_8BIT
            write_image(out_dir / f"X{scale}" / f"{path.stem}x{scale}.png", lr)
            written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = cli.OneLineParser(prog="make_lr", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hr", required=True, type=Path, help="folder of HR images")
    parser.add_argument("--out", required=True, type=Path, help="output root; LR images go to OUT/X{s}/")
    parser.add_argument("--scales", default="2,3,4", help="comma-separated integer scales (default 2,3,4)")
    args = cli.parse(parser, argv)
    return args if isinstance(args, int) else cli.run("make_lr.py", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    scales = parse_scales(args.scales)
    written = make_lr_sets(args.hr, args.out, scales)
    print(f"make_lr: wrote {written} LR images under {args.out} (scales {', '.join(map(str, scales))})")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
