"""Hostile files for the bad-input tests: images whose header lies or that are too large to decode, files that
are not checkpoints, and checkpoints that build no valid model. Each is made without allocating what it claims."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import torch

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_RGB, PNG_GRAY = 2, 0


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _ihdr(width: int, height: int, bit_depth: int, colour_type: int) -> bytes:
    return _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0))


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height RGB pixels and that holds no pixel data at all."""
    path.write_bytes(PNG_SIGNATURE + _ihdr(width, height, 8, PNG_RGB) + _chunk(b"IEND", b""))
    return path


def png_truncated(path: Path, width: int, height: int) -> Path:
    """A PNG claiming width x height whose pixel data stops after a few bytes (no IEND)."""
    data = zlib.compress(b"\x00" * 64)
    path.write_bytes(PNG_SIGNATURE + _ihdr(width, height, 8, PNG_RGB) + _chunk(b"IDAT", data[:16]))
    return path


def png_valid_bilevel(path: Path, width: int, height: int) -> Path:
    """A complete, valid 1-bit grayscale PNG of width x height black pixels, compressed row by row: a few
    hundred kB on disk for a 20000 x 20000 image whose float RGB decode would take 4.8 GB."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(1)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    path.write_bytes(PNG_SIGNATURE + _ihdr(width, height, 1, PNG_GRAY) + _chunk(b"IDAT", b"".join(parts))
                     + _chunk(b"IEND", b""))
    return path


def text_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def checkpoint(path: Path, payload) -> Path:
    """`payload` saved with torch.save, as a (possibly malformed) checkpoint."""
    torch.save(payload, path)
    return path
