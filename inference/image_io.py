"""Reading and writing images: any common format and mode in, float tensors in [0, 1] out, atomic writes.

Grayscale is replicated to RGB, palette images are expanded, 16-bit and 32-bit integer images are scaled by
their full range, and an alpha channel is returned separately when asked for (RGB is taken as stored). An EXIF
orientation is applied, as image viewers do: a sideways-stored photo is read, and sized, upright.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from utils import atomic_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_8BIT = 255.0
MAX_16BIT = 65535.0
# Inputs above this many pixels are refused from their header, before anything is decoded (2^27, e.g. 11585 x
# 11585: 1.6 GB as float RGB); PIL's own "decompression bomb" limit is set to the same number.
MAX_INPUT_PIXELS = 1 << 27
Image.MAX_IMAGE_PIXELS = MAX_INPUT_PIXELS
# Outputs above this many pixels are refused before anything is allocated (2^28: e.g. 16384 x 16384); the
# default of demo.py's --max-pixels and of the viewer's.
MAX_OUTPUT_PIXELS = 1 << 28
# The longest side each format stores, where it is below what an output may have: JPEG's (libjpeg's limit) and
# WebP's; PNG, BMP and TIFF store sides up to 2^31 - 1.
MAX_SIDE = {".jpg": 65500, ".jpeg": 65500, ".webp": 16383}


class ImageError(Exception):
    """An image that cannot be read or written; the message is one line naming the file."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _integer_plane(image: Image.Image, label: str) -> np.ndarray:
    """A single-channel high-bit-depth image scaled to [0, 1] by its type's range; a float image holding NaN or
    infinity (`label` names it) is an ImageError: such a pixel has no colour to upscale."""
    array = np.asarray(image)
    if image.mode == "F":
        if not np.isfinite(array).all():
            raise ImageError(f"{label} holds {int((~np.isfinite(array)).sum()):,} non-finite pixels (NaN or "
                             "infinity)")
        return np.clip(array.astype(np.float32), 0.0, 1.0)
    scale = MAX_16BIT if image.mode.startswith("I;16") or array.max(initial=0) <= MAX_16BIT else 2.0 ** 32 - 1
    return np.clip(array.astype(np.float64) / scale, 0.0, 1.0).astype(np.float32)


def _unreadable(label: str, exc: Exception) -> ImageError:
    """The one-line error for a file PIL cannot open or decode: its reason on one line, or the error's type."""
    return ImageError(f"cannot read {label}: {' '.join(str(exc).split()) or type(exc).__name__}")


def _open(source: str | os.PathLike | BinaryIO, label: str, max_pixels: int) -> Image.Image:
    """The image opened lazily (only its header read), refused with one ImageError line if it is not an image or
    holds more than `max_pixels` pixels: the one place every image is opened through."""
    try:
        with warnings.catch_warnings():  # PIL's warning band below its own limit: the size is checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
    except UnidentifiedImageError:
        raise ImageError(f"not an image (or an unsupported format): {label}") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{label} is too large to decode (its header claims more than {2 * MAX_INPUT_PIXELS:,} "
                         "pixels)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _unreadable(label, exc) from None
    if image.width * image.height > max_pixels:
        image.close()
        raise ImageError(f"{label} is {image.width}x{image.height} ({image.width * image.height:,} pixels), above "
                         f"the limit of {max_pixels:,}")
    return image


# EXIF orientation (tag 274) → the (transpose, flip rows, flip columns) that show the stored pixels upright, the
# transpose first: 1 upright, 2 mirrored, 3 upside down, 4 flipped, 5-8 turned a quarter (with or without a mirror).
ORIENTATION_TAG = 274
IMAGE_WIDTH_TAG, IMAGE_LENGTH_TAG = 256, 257  # a TIFF's stored size
ORIENTATIONS = {2: (False, False, True), 3: (False, True, True), 4: (False, True, False), 5: (True, False, False),
                6: (True, False, True), 7: (True, True, True), 8: (True, True, False)}


def _orientation(image: Image.Image) -> tuple[bool, bool, bool] | None:
    """How to turn `image` upright by its EXIF orientation, read from what opening the file already parsed (never
    by decoding it), or None when it is stored upright. A phone's photo shown 20x24 is stored 24x20."""
    try:
        if image.format == "PNG" and "exif" not in image.info:
            return None  # PIL would decode the whole image to look for an eXIf chunk after the pixels
        orientation = image.getexif().get(ORIENTATION_TAG)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError):
        return None  # unreadable metadata: the pixels as stored, as image viewers show them
    return ORIENTATIONS.get(orientation) if isinstance(orientation, int) else None


def _upright(image: torch.Tensor, turn: tuple[bool, bool, bool] | None) -> torch.Tensor:
    """(C, H, W) as stored → as shown, by `_orientation`'s transpose and flips."""
    if turn is None:
        return image
    transpose, flip_rows, flip_cols = turn
    image = image.transpose(-2, -1) if transpose else image
    dims = [d for d, flip in ((-2, flip_rows), (-1, flip_cols)) if flip]
    return (image.flip(dims) if dims else image).contiguous()


def image_size(path: str | os.PathLike, max_pixels: int = MAX_INPUT_PIXELS) -> tuple[int, int]:
    """(height, width) as shown (EXIF orientation applied) from the file's header alone: a size can be checked
    before anything is decoded."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"no such file: {path}")
    with _open(path, str(path), max_pixels) as image:
        turn = _orientation(image)
        stored = getattr(image, "tag_v2", {})
        already = (stored.get(IMAGE_WIDTH_TAG), stored.get(IMAGE_LENGTH_TAG)) not in ((image.width, image.height),
                                                                                     (None, None))
        if turn is not None and turn[0] and not already:  # (recent PIL reports a TIFF's size upright itself)
            return image.width, image.height
        return image.height, image.width


def _decode(source: str | os.PathLike | BinaryIO, label: str, max_pixels: int
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decode an opened-or-openable image; `label` names it in errors. The size is checked before decoding."""
    try:
        with _open(source, label, max_pixels) as image:
            turn = _orientation(image)
            image.load()
            if turn is not None and ORIENTATION_TAG not in image.getexif():
                turn = None  # PIL turned it upright itself while loading (its TIFF reader does, in recent versions)
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                plane = _integer_plane(image, label)
                return _upright(torch.from_numpy(np.repeat(plane[None], 3, 0).copy()), turn), None
            has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La")
            array = np.asarray(image.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / MAX_8BIT
    except (OSError, SyntaxError, ValueError) as exc:
        raise _unreadable(label, exc) from None
    tensor = _upright(torch.from_numpy(array.transpose(2, 0, 1).copy()), turn)
    if has_alpha:
        return tensor[:3], tensor[3:]
    return tensor, None


def read_image_with_alpha(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(rgb (3, H, W), alpha (1, H, W) or None), float32 in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"no such file: {path}")
    return _decode(path, str(path), MAX_INPUT_PIXELS)


def decode_image_with_alpha(data: bytes, name: str, max_pixels: int = MAX_INPUT_PIXELS
                            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`read_image_with_alpha` of an image file's bytes held in memory (an upload); `name` labels errors.

    Images above `max_pixels` are refused from their header, before anything is decoded.
    """
    return _decode(io.BytesIO(data), name, max_pixels)


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """RGB (3, H, W) float32 in [0, 1]; any alpha channel is dropped."""
    return read_image_with_alpha(path)[0]


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) float in [0, 1] (clamped) → (H, W, C) uint8, rounded to nearest."""
    array = image.detach().float().clamp(0, 1).mul(MAX_8BIT).round().to(torch.uint8).cpu().numpy()
    return array.transpose(1, 2, 0)


def check_output_size(suffix: str, size: tuple[int, int]) -> None:
    """ImageError if a (height, width) image cannot be stored in the format of `suffix`: checked before any work,
    not found by the encoder after it."""
    longest = MAX_SIDE.get(suffix.lower())
    if longest is not None and max(size) > longest:
        raise ImageError(f"a {size[1]}x{size[0]} image cannot be written as {suffix}: its sides are at most "
                         f"{longest:,} pixels (use .png or .tif)")


def _pil_image(rgb: torch.Tensor, alpha: torch.Tensor | None, suffix: str) -> Image.Image:
    """The 8-bit PIL image `write_image` saves for a file with `suffix` (alpha dropped where the format has none)."""
    if suffix.lower() not in IMAGE_SUFFIXES:
        raise ImageError(f"unsupported output format {suffix!r} (use one of {', '.join(IMAGE_SUFFIXES)})")
    check_output_size(suffix, tuple(rgb.shape[-2:]))
    colour = "L" if rgb.shape[0] == 1 else "RGB"  # one channel: a grayscale image
    channels = torch.cat((rgb, alpha)) if alpha is not None else rgb
    array = to_uint8(channels)
    mode = colour + ("A" if alpha is not None else "")
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array, mode)
    if alpha is not None and suffix.lower() in (".jpg", ".jpeg", ".bmp"):
        image = image.convert(colour)  # formats without alpha: keep the colour
    return image


def write_image(path: str | os.PathLike, rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> None:
    """Write (3, H, W) (or (1, H, W): grayscale) [+ (1, H, W) alpha] as 8-bit, format from the suffix, through
    `save_image`."""
    path = Path(path)
    save_image(path, _pil_image(rgb, alpha, path.suffix), Image.registered_extensions()[path.suffix.lower()])


def save_image(path: Path, image: Image.Image, image_format: str, **options) -> None:
    """PIL's save of `image` to `path` through `atomic_file`, so that a full disk can never leave a short file
    (PIL's own file writes ignore a short write); `options` go to PIL's save. ImageError on failure."""
    try:
        with atomic_file(path) as f:
            image.save(f, format=image_format, **options)
    except OSError as exc:
        raise ImageError(f"cannot write {path}: {exc.strerror or exc}") from None


def encode_image(rgb: torch.Tensor, alpha: torch.Tensor | None = None, suffix: str = ".png", **options) -> bytes:
    """The bytes `write_image` would write to a file with `suffix` (for sending, not saving); `options` go to
    PIL's save (e.g. compress_level)."""
    buffer = io.BytesIO()
    _pil_image(rgb, alpha, suffix).save(buffer, format=Image.registered_extensions()[suffix.lower()], **options)
    return buffer.getvalue()
