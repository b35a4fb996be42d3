"""Folders of images as datasets: `image-folder` (one folder) and `paired-image-folders` (two, matched by name).

Files are found recursively and sorted by relative path. Each file's header is read at construction, so that
files that are not images are skipped (with a warning naming them) before training starts and wrappers know
every image's size up front. A file that still fails to decode later (e.g. truncated) is skipped when it is
met: the item falls back to the next readable one, with a warning, never an exception mid-epoch.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Callable, Sequence, TypeVar, Union

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from inference.image_io import IMAGE_SUFFIXES, MAX_8BIT, ImageError, image_size, is_image_file, read_image

from . import decoded_cache
from .errors import DatasetError
from .registry import register

CACHE_MODES = ("none", "in_memory", "mmap")
# How many offending file names an error message lists.
NAMES_SHOWN = 5
# Scale suffixes of LR file names in benchmark packages: `babyx4`, `baby_x4`, `baby_LR_x4`, `baby-x2.5`.
SCALE_SUFFIX = re.compile(r"(?:[_-]?LR)?[_-]?[xX]\d+(?:\.\d+)?$")

T = TypeVar("T")
# Image pixels, (C, H, W): uint8, or float in [0, 1]; a NumPy array may be a view with any strides.
Pixels = Union[torch.Tensor, np.ndarray]


class UnreadableImageWarning(UserWarning):
    """An image file was skipped because it cannot be read (or is too small for its wrapper)."""


# What every UnreadableImageWarning starts with; callers that make the warning an error drop it.
SKIPPED_PREFIX = "skipping "


def warn_skipped(message: str) -> None:
    warnings.warn(f"{SKIPPED_PREFIX}{message}", UnreadableImageWarning, stacklevel=3)


def list_image_files(root_path: str | Path) -> list[Path]:
    """Every image file under `root_path` (recursive), sorted by relative path; a clear error if there is none."""
    root = Path(root_path)
    if not root.is_dir():
        raise DatasetError(f"image folder not found: {root}")
    files = [p for p in root.rglob("*") if p.is_file() and is_image_file(p)]
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root}")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def probe_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from the file's header, or None (with a warning) when it is not a readable image."""
    try:
        return image_size(path)
    except ImageError as exc:
        warn_skipped(f"unreadable image {path} ({exc})")
        return None


def names(paths: Sequence[object]) -> str:
    shown = ", ".join(str(p) for p in paths[:NAMES_SHOWN])
    return shown + (f" (+{len(paths) - NAMES_SHOWN} more)" if len(paths) > NAMES_SHOWN else "")


def first_readable(read: Callable[[int], T], count: int, start: int) -> T:
    """`read(start)`, or else the next position (cyclically) that `read` can serve; each failure is a warning."""
    for step in range(count):
        try:
            return read((start + step) % count)
        except ImageError as exc:
            warn_skipped(str(exc))
    raise DatasetError("no readable image left in the data set (see the warnings above)")


class ImageFiles:
    """Image files read by position, optionally cached: `in_memory` decodes them all at construction, in this
    process; `mmap` maps the decoded cache file that every process shares (datasets/decoded_cache.py), built
    first if it is missing or stale.

    Cached 8-bit images are held as uint8 (a quarter of float32's memory), others as float32. `read` gives
    exactly the tensor `read_image` gives; `read_crop` a region in its stored type, so that a sample converts
    only the pixels it uses. A file that fails once is remembered and fails fast afterwards.
    """

    def __init__(self, files: Sequence[Path], sizes: Sequence[tuple[int, int]], cache: str = "none",
                 cache_file: Path | None = None, root: Path | None = None):
        check_cache(cache, None)
        self.files = list(files)
        self.sizes = list(sizes)
        self.cache = cache
        self._failed: dict[int, str] = {}
        self._cached: list[torch.Tensor | None] = []
        self.decoded: decoded_cache.DecodedCache | None = None
        if cache == "in_memory":
            for position in tqdm(range(len(self.files)), desc="caching images", unit="img", leave=False):
                try:
                    self._cached.append(decoded_cache.compact(self._read_file(position)))
                except ImageError as exc:
                    warn_skipped(str(exc))
                    self._cached.append(None)
        elif cache == "mmap":
            if cache_file is None or root is None:
                raise DatasetError("cache: mmap needs the cache file's path and the images' root folder")
            self.decoded = decoded_cache.open_or_build(cache_file, root, self.files, self.sizes)
            for problem in self.decoded.errors():
                warn_skipped(problem)

    def __len__(self) -> int:
        return len(self.files)

    def _read_file(self, position: int) -> torch.Tensor:
        if position in self._failed:
            raise ImageError(self._failed[position])
        try:
            return read_image(self.files[position])
        except ImageError as exc:
            self._failed[position] = str(exc)
            raise

    def read_crop(self, position: int, top: int, left: int, height: int, width: int) -> torch.Tensor:
        """The (3, height, width) region of image `position` at (top, left): uint8 where the image is 8-bit
        and cached (pixel k of `read`'s k/255), float32 in [0, 1] otherwise; raises `ImageError` if the image
        cannot be read. Only the region is copied out of a cache."""
        rows, columns = slice(top, top + height), slice(left, left + width)
        if self.decoded is not None:
            stored = self.decoded.pixels(position)
            if stored.dtype == np.uint8:  # (H, W, 3)
                return torch.from_numpy(stored[rows, columns].copy()).permute(2, 0, 1)
            return torch.from_numpy(stored[:, rows, columns].copy())
        if self.cache == "in_memory":
            stored = self._cached[position]
            if stored is None:
                raise ImageError(self._failed.get(position, f"cannot read {self.files[position]}"))
            return stored[:, rows, columns]
        return self._read_file(position)[:, rows, columns]

    def read(self, position: int) -> torch.Tensor:
        """The image at `position`, float32 (3, H, W) in [0, 1]; raises `ImageError` if it cannot be read."""
        if self.cache == "none":
            return self._read_file(position)
        return to_float(self.read_crop(position, 0, 0, *self.sizes[position]))


def to_float(pixels: Pixels) -> torch.Tensor:
    """(C, H, W) pixels (any strides: crops, flips and transposes are views) as a new contiguous float32 tensor
    in [0, 1], in one pass: uint8 k becomes k/255 in float32, as `read_image` computes it."""
    array = pixels.numpy() if isinstance(pixels, torch.Tensor) else pixels
    out = torch.empty(array.shape, dtype=torch.float32)
    if array.dtype == np.uint8:
        np.divide(array, np.float32(MAX_8BIT), out=out.numpy(), dtype=np.float32)
    else:
        np.copyto(out.numpy(), array, casting="same_kind")
    return out


def check_cache(cache: object, cache_dir: object) -> None:
    """One-line errors for a `cache` mode that does not exist and a `cache_dir` that would not be used."""
    if not isinstance(cache, str) or cache not in CACHE_MODES:
        raise DatasetError(f"unknown cache mode {cache!r} (use one of {', '.join(CACHE_MODES)})")
    if cache_dir is not None:
        if not isinstance(cache_dir, str) or not cache_dir:
            raise DatasetError(f"cache_dir must be a folder or null, got {cache_dir!r}")
        if cache != "mmap":
            raise DatasetError(f"cache_dir is used only with cache: mmap (cache is {cache!r})")


def cached_files(root: Path, files: Sequence[Path], sizes: Sequence[tuple[int, int]], cache: str,
                 first_k: int | None, cache_dir: str | None) -> ImageFiles:
    """`ImageFiles` of a folder's files, with the decoded cache's path for `cache: mmap`."""
    cache_file = decoded_cache.cache_path(root, first_k, cache_dir) if cache == "mmap" else None
    return ImageFiles(files, sizes, cache, cache_file, root)


def readable_files(root_path: str | Path) -> tuple[list[Path], list[tuple[int, int]]]:
    """The image files under a folder whose headers read, and their (height, width)."""
    files, sizes = [], []
    for path in list_image_files(root_path):
        size = probe_size(path)
        if size is not None:
            files.append(path)
            sizes.append(size)
    if not files:
        raise DatasetError(f"no readable image in {root_path}")
    return files, sizes


def check_repeat(first_k: int | None, repeat: int) -> None:
    if first_k is not None and (not isinstance(first_k, int) or first_k < 1):
        raise DatasetError(f"first_k must be a positive integer or null, got {first_k!r}")
    if not isinstance(repeat, int) or repeat < 1:
        raise DatasetError(f"repeat must be a positive integer, got {repeat!r}")


@register("image-folder")
class ImageFolder(Dataset):
    """The images of a folder (recursive, sorted), each a float32 (3, H, W) tensor in [0, 1].

    `first_k` keeps the first k readable images; `repeat` repeats the list (LIIF's way of making an epoch
    longer than the folder). `cache`: `none` decodes the file at every read; `in_memory` decodes every image
    once, at construction, into this process's memory; `mmap` maps the decoded cache file every process shares
    (built on first use, rebuilt when the files change), kept beside the images or in `cache_dir`.
    """

    def __init__(self, root_path: str, first_k: int | None = None, repeat: int = 1, cache: str = "none",
                 cache_dir: str | None = None):
        check_repeat(first_k, repeat)
        check_cache(cache, cache_dir)
        files, sizes = readable_files(root_path)
        self.root_path = Path(root_path)
        self.images = cached_files(self.root_path, files[:first_k], sizes[:first_k], cache, first_k, cache_dir)
        self.repeat = repeat

    @property
    def files(self) -> list[Path]:
        """The image files, in item order (item i is file i % len(files))."""
        return self.images.files

    def __len__(self) -> int:
        return len(self.images) * self.repeat

    def image_size(self, index: int) -> tuple[int, int]:
        """(height, width) of item `index`, from the file's header."""
        return self.images.sizes[index % len(self.images)]

    def read(self, index: int) -> torch.Tensor:
        """Item `index`; raises `ImageError` if its file cannot be read (wrappers choose how to skip)."""
        return self.images.read(index % len(self.images))

    def decoded_caches(self) -> list[decoded_cache.DecodedCache]:
        """The decoded cache files this dataset maps (`cache: mmap`), else none."""
        return [self.images.decoded] if self.images.decoded is not None else []

    def read_crop(self, index: int, top: int, left: int, height: int, width: int) -> torch.Tensor:
        """A region of item `index` in its stored type (`ImageFiles.read_crop`): what a crop needs, nothing more."""
        return self.images.read_crop(index % len(self.images), top, left, height, width)

    def __getitem__(self, index: int) -> torch.Tensor:
        return first_readable(self.read, len(self), index)


def match_key(path: Path, root: Path, strip_scale: bool) -> tuple[str, str]:
    """(relative folder, stem) of a file, optionally with a scale suffix such as `x4` or `_LR_x4` removed."""
    stem = SCALE_SUFFIX.sub("", path.stem) if strip_scale else path.stem
    return path.parent.relative_to(root).as_posix(), stem or path.stem


def match_files(root_1: Path, files_1: list[Path], root_2: Path, files_2: list[Path]) -> list[tuple[int, int]]:
    """Pairs (i, j) of files_1[i] and files_2[j] with the same name in the same relative folder.

    A file of folder 2 matches by its own stem or, failing that, by its stem without a scale suffix (so that
    `babyx4.png`, `baby_x4.png` and `baby_LR_x4.png` match `baby.png`, while `box2.png` still matches `box2.png`).
    Every file of both folders must be matched exactly once.
    """
    index: dict[tuple[str, str], int] = {}
    for i, path in enumerate(files_1):
        key = match_key(path, root_1, strip_scale=False)
        if key in index:
            raise DatasetError(f"two images with the same name in {root_1}: {files_1[index[key]]} and {path}")
        index[key] = i
    stripped: dict[tuple[str, str], int | None] = {}
    for i, path in enumerate(files_1):  # for folder 1 holding the suffixed names (folders given in swapped order)
        key = match_key(path, root_1, strip_scale=True)
        stripped[key] = None if key in stripped else i
    pairs, owner, unmatched_2 = [], {}, []
    for j, path in enumerate(files_2):
        exact, bare = match_key(path, root_2, False), match_key(path, root_2, True)
        i = index.get(exact, index.get(bare, stripped.get(exact)))
        if i is None:
            unmatched_2.append(path)
        elif i in owner:
            raise DatasetError(f"{files_1[i]} matches both {files_2[owner[i]]} and {path}")
        else:
            owner[i] = j
            pairs.append((i, j))
    unmatched_1 = [files_1[i] for i in range(len(files_1)) if i not in owner]
    if unmatched_1 or unmatched_2:
        problems = [f"{len(files)} in {root} without a match: {names(files)}"
                    for root, files in ((root_1, unmatched_1), (root_2, unmatched_2)) if files]
        raise DatasetError("paired folders do not match: " + "; ".join(problems))
    return sorted(pairs)


@register("paired-image-folders")
class PairedImageFolders(Dataset):
    """Items (img_1, img_2) from two folders matched by file name (e.g. HR and the benchmark's own LR).

    Pairs follow folder 1's sorted order; `first_k`, `repeat` and `cache` apply to pairs as in `image-folder`.
    A pair one of whose files cannot be read is skipped as a whole.
    """

    def __init__(self, root_path_1: str, root_path_2: str, first_k: int | None = None, repeat: int = 1,
                 cache: str = "none", cache_dir: str | None = None):
        check_repeat(first_k, repeat)
        check_cache(cache, cache_dir)
        root_1, root_2 = Path(root_path_1), Path(root_path_2)
        files_1, sizes_1 = readable_files(root_1)
        files_2, sizes_2 = readable_files(root_2)
        pairs = match_files(root_1, files_1, root_2, files_2)[:first_k]
        self.images_1 = cached_files(root_1, [files_1[i] for i, _ in pairs], [sizes_1[i] for i, _ in pairs], cache,
                                     first_k, cache_dir)
        self.images_2 = cached_files(root_2, [files_2[j] for _, j in pairs], [sizes_2[j] for _, j in pairs], cache,
                                     first_k, cache_dir)
        self.repeat = repeat

    @property
    def files(self) -> list[tuple[Path, Path]]:
        return list(zip(self.images_1.files, self.images_2.files))

    def __len__(self) -> int:
        return len(self.images_1) * self.repeat

    def decoded_caches(self) -> list[decoded_cache.DecodedCache]:
        """The decoded cache files this dataset maps (`cache: mmap`: one per folder), else none."""
        return [images.decoded for images in (self.images_1, self.images_2) if images.decoded is not None]

    def image_size(self, index: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """((height, width) of img_1, (height, width) of img_2) of item `index`, from the headers."""
        position = index % len(self.images_1)
        return self.images_1.sizes[position], self.images_2.sizes[position]

    def read(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        position = index % len(self.images_1)
        return self.images_1.read(position), self.images_2.read(position)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return first_readable(self.read, len(self), index)
