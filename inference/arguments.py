"""Argument types of the command lines that upscale (demo.py, viewer.py, scripts/): each turns an option's text
into its value or raises argparse.ArgumentTypeError with a one-line reason.

Scales are height first, as the official demo reads them (--scale SH,SW); sizes and points are written as image
sizes are, width first (--size WxH, --focus X,Y).
"""
from __future__ import annotations

import argparse
import math

from gaussian import PRECISIONS
from inference import zoom

AUTO = "auto"  # --backend and --tile: chosen for the image and the device
PRECISION_HELP = ("the encoder's and head's arithmetic (the field and the rasterizer stay fp32): fp32 (default), "
                  "tf32 (CUDA matrix products), bf16 (autocast, on CUDA or a CPU with native bf16; elsewhere it "
                  "runs fp32). bf16 against fp32, the bundled model on test-split crops: -0.10 dB at x2, -0.02 at "
                  "x4, -0.01 at x8 (benchmarks/precision-bf16-test-crops-cpu-2026-12-07.json)")


def add_precision_option(parser: argparse.ArgumentParser) -> None:
    """--precision, as every front end that encodes takes it."""
    parser.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0], help=PRECISION_HELP)


def number(text: str) -> float:
    """float(text) as a user writes numbers: Python's digit separators ('1_0' is 10 to float) are refused."""
    if "_" in text:
        raise ValueError(f"not a number: {text!r}")
    return float(text)


def parse_pair(text: str, separator: str, what: str) -> tuple[float, float]:
    """'A' or 'A<sep>B' → (a, b) floats; one number stands for both."""
    parts = text.lower().split(separator)
    try:
        values = [number(p) for p in parts]
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
    """'START:END:FRAMES' → the zoom's spec."""
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
        value = number(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def positive_floats(text: str) -> list[float]:
    """'6,8,16' → [6.0, 8.0, 16.0]: comma-separated positive, finite numbers."""
    return [positive_float(part) for part in text.split(",")]
