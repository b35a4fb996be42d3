"""The decoded cache (`cache: mmap`): a folder's images decoded once into one file of raw pixels that every
process maps read-only, so that the page cache holds one copy for all loader workers and all DDP ranks.

The file: a preamble (MAGIC, then the JSON header's offset and length), each image's pixels from a page boundary
(8-bit images as uint8 (H, W, 3), others as float32 (3, H, W): exactly the values `read_image` gives), then the
JSON header: the format version and, per image, its name relative to the root, its size and mtime (the
fingerprint that says whether the cache is still current), and its offset, dtype and shape, or the error its
decoding met. It lives beside the images by default (a hidden file, `.<folder>-<key>.decoded`), or in
`cache_dir`; its name depends on the folder's resolved path and `first_k`.

It is written to a temporary file and renamed (`utils.atomic_path`), so a build cut short (Ctrl-C, kill, a full
disk) leaves no file that looks valid. An exclusive lock on a file beside it makes concurrent processes (the
ranks of a torchrun) build it once: the first builds, the others wait, then map the finished file.
"""
from __future__ import annotations

import errno
import hashlib
import json
import shutil
import struct
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from inference.image_io import MAX_8BIT, ImageError, read_image
from utils import atomic_path, remove_stale_temporaries

from .errors import DatasetError

MAGIC = b"CSRPIX01"
# The preamble: MAGIC, the header's offset and its length (little-endian).
PREAMBLE = struct.Struct("<8sQQ")
# Each image's pixels start on a page boundary (mappable views, float32 aligned); the preamble fills the first.
PAGE = 4096
FORMAT_VERSION = 2  # 2: pixels as read_image gives them with the EXIF orientation applied
SUFFIX = ".decoded"
# Characters of the hex digest that tell caches of different folders (or first_k) apart in one cache_dir.
KEY_LENGTH = 12
RGB = 3
# Errors of writing the cache that another folder (cache_dir) would avoid.
WRITE_ERRORS = (errno.EACCES, errno.EROFS, errno.ENOSPC, errno.EEXIST, errno.ENOTDIR)


def cache_path(root: Path, first_k: int | None, cache_dir: str | None) -> Path:
    """Where the decoded cache of the first `first_k` images of `root` lives: beside them, or in `cache_dir`."""
    resolved = root.resolve()
    key = hashlib.sha256(f"{resolved}\0{first_k}".encode()).hexdigest()[:KEY_LENGTH]
    folder = Path(cache_dir) if cache_dir is not None else resolved
    return folder / f".{resolved.name or 'root'}-{key}{SUFFIX}"


def fingerprint(root: Path, files: Sequence[Path]) -> list[list]:
    """[relative name, size, mtime in ns] of each file: a cache built from other files is stale."""
    rows = []
    for path in files:
        stat = path.stat()
        rows.append([path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    return rows


def compact(image: torch.Tensor) -> torch.Tensor:
    """An image as uint8 (3, H, W) where that is exact (k/255 ↦ k), else the float32 image itself."""
    as_uint8 = (image * MAX_8BIT).round().to(torch.uint8)
    return as_uint8 if torch.equal(as_uint8.float() / MAX_8BIT, image) else image


def stored_array(image: torch.Tensor) -> np.ndarray:
    """The array the cache stores for a decoded image: uint8 (H, W, 3) where exact, else float32 (3, H, W)."""
    small = compact(image)
    if small.dtype == torch.uint8:
        return np.ascontiguousarray(small.permute(1, 2, 0).numpy())
    return np.ascontiguousarray(small.numpy())


def parse_header(data: np.ndarray) -> dict[str, Any] | None:
    """The header of a mapped cache file, or None when the file is not a complete cache of this format."""
    if data.size < PREAMBLE.size:
        return None
    magic, offset, length = PREAMBLE.unpack(data[:PREAMBLE.size].tobytes())
    if magic != MAGIC or offset < PAGE or offset + length != data.size:
        return None
    try:
        header = json.loads(data[offset:offset + length].tobytes())
    except ValueError:
        return None
    try:
        if header["version"] != FORMAT_VERSION:
            return None
        for entry in header["images"]:
            _ = entry["name"], entry["size"], entry["mtime_ns"]
            if "error" not in entry and not PAGE <= entry["offset"] <= offset - entry_bytes(entry):
                return None
    except (KeyError, TypeError, ValueError):
        return None
    return header


def entry_bytes(entry: dict[str, Any]) -> int:
    return int(np.prod(entry["shape"])) * np.dtype(entry["dtype"]).itemsize


class DecodedCache:
    """A decoded cache file mapped read-only; `pixels(i)` views image i's stored array without copying it.

    Pickling (a loader worker started by spawn) keeps the path and header, and the new process maps the file
    again; a forked worker shares the parent's mapping.
    """

    def __init__(self, path: Path, header: dict[str, Any], data: np.ndarray | None = None):
        self.path, self.header = path, header
        self._data = None if data is None else data.view(np.ndarray)  # a plain view: cheaper to slice
        self._views: dict[int, np.ndarray] = {}

    @classmethod
    def open(cls, path: Path, expected: list[list]) -> DecodedCache | None:
        """The cache at `path` if it is complete and built from files with fingerprint `expected`, else None."""
        try:
            data = np.memmap(path, dtype=np.uint8, mode="r")
        except (OSError, ValueError):  # missing, unreadable or empty
            return None
        header = parse_header(data)
        if header is None or [[e["name"], e["size"], e["mtime_ns"]] for e in header["images"]] != expected:
            return None
        return cls(path, header, data)

    def __len__(self) -> int:
        return len(self.header["images"])

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "header": self.header}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["header"])

    def _mapped(self) -> np.ndarray:
        if self._data is None:
            try:
                data = np.memmap(self.path, dtype=np.uint8, mode="r")
            except (OSError, ValueError) as exc:
                raise DatasetError(f"cannot map the decoded cache {self.path}: {exc}") from None
            if parse_header(data) != self.header:
                raise DatasetError(f"the decoded cache {self.path} was rebuilt while in use; start again")
            self._data = data.view(np.ndarray)
        return self._data

    def errors(self) -> list[str]:
        """What decoding the images that could not be read met, one line each."""
        return [entry["error"] for entry in self.header["images"] if "error" in entry]

    def pixels(self, position: int) -> np.ndarray:
        """Image `position` as stored (read-only): uint8 (H, W, 3) or float32 (3, H, W); ImageError if its
        decoding failed when the cache was built."""
        view = self._views.get(position)
        if view is None:
            entry = self.header["images"][position]
            if "error" in entry:
                raise ImageError(entry["error"])
            start = entry["offset"]
            raw = self._mapped()[start:start + entry_bytes(entry)]
            view = self._views[position] = raw.view(entry["dtype"]).reshape(entry["shape"])
        return view


def padded(size: int) -> int:
    return -(-size // PAGE) * PAGE


def build(path: Path, root: Path, files: Sequence[Path], sizes: Sequence[tuple[int, int]]) -> None:
    """Decode `files` into a new cache file at `path` (atomically: a temporary file renamed when complete)."""
    needed = PAGE + sum(padded(h * w * RGB) for h, w in sizes)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path.parent).free
        if free < needed:
            raise DatasetError(f"the decoded cache needs {needed / 1e9:.2f} GB in {path.parent}, which has "
                               f"{free / 1e9:.2f} GB free (set the dataset's cache_dir)")
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            out.write(bytes(PAGE))  # the preamble stays zero (not a cache) until the end
            images = []
            for file in tqdm(files, desc=f"decoding into {path.name}", unit="img", leave=False, disable=None):
                stat = file.stat()  # before decoding: a file changed meanwhile is stale at the next open
                entry: dict[str, Any] = {"name": file.relative_to(root).as_posix(), "size": stat.st_size,
                                         "mtime_ns": stat.st_mtime_ns}
                try:
                    array = stored_array(read_image(file))
                except ImageError as exc:
                    entry["error"] = str(exc)
                else:
                    entry.update(offset=out.tell(), dtype=array.dtype.name, shape=list(array.shape))
                    out.write(memoryview(array).cast("B"))
                    out.write(bytes(padded(array.nbytes) - array.nbytes))
                images.append(entry)
            header = json.dumps({"version": FORMAT_VERSION, "root": str(root.resolve()),
                                 "images": images}).encode()
            offset = out.tell()
            out.write(header)
            out.seek(0)
            out.write(PREAMBLE.pack(MAGIC, offset, len(header)))
    except OSError as exc:
        advice = " (set the dataset's cache_dir to a writable folder)" if exc.errno in WRITE_ERRORS else ""
        raise DatasetError(f"cannot write the decoded cache {path}: {exc.strerror or exc}{advice}") from None


@contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `<cache>.lock` (released when the process ends, however it ends)."""
    try:
        import fcntl
    except ImportError:
        raise DatasetError("cache: mmap needs a POSIX system (Linux, macOS)") from None
    lock = path.with_name(path.name + ".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")
    except OSError as exc:
        raise DatasetError(f"cannot write the decoded cache's lock {lock}: {exc.strerror or exc} "
                           "(set the dataset's cache_dir to a writable folder)") from None
    with handle:
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"waiting for another process to build the decoded cache {path}", file=sys.stderr, flush=True)
                fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as exc:  # e.g. a network file system without locks
            raise DatasetError(f"cannot lock {lock}: {exc.strerror or exc} (set the dataset's cache_dir to a "
                               "folder on a local disk)") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_or_build(path: Path, root: Path, files: Sequence[Path], sizes: Sequence[tuple[int, int]]
                  ) -> DecodedCache:
    """The current decoded cache of `files` at `path`, built first if it is missing or stale."""
    try:
        expected = fingerprint(root, files)
    except OSError as exc:
        raise DatasetError(f"cannot read the images under {root}: {exc.strerror or exc} ({exc.filename})") from None
    cache = DecodedCache.open(path, expected)
    if cache is not None:
        return cache
    with build_lock(path):
        cache = DecodedCache.open(path, expected)  # another process may have built it while this one waited
        if cache is None:
            remove_stale_temporaries(path)  # of a build killed outright; no one else builds while we hold the lock
            build(path, root, files, sizes)
            cache = DecodedCache.open(path, expected)
    if cache is None:
        raise DatasetError(f"the images under {root} changed while their decoded cache was built; start again")
    return cache
