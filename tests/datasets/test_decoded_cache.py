"""`cache: mmap`: the decoded cache file holds the decoded images bit for bit, is rebuilt when the files change,
is mapped read-only and shared with forked workers, is built atomically and once among concurrent processes."""
from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
from conftest import random_rgb, write_rgb
from datasets import DatasetError, UnreadableImageWarning, decoded_cache
from inference.image_io import read_image
from utils import TEMPORARY_MARK

REPO = Path(__file__).resolve().parents[2]
needs_fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
needs_proc = pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs /proc/PID/smaps (Linux)")


def mapped(root: Path, **args) -> datasets.ImageFolder:
    return datasets.make({"name": "image-folder", "args": {"root_path": str(root), "cache": "mmap", **args}})


def cache_files(folder: Path) -> list[str]:
    """Every file the cache leaves in `folder` (the cache, its lock, temporaries), by name."""
    return sorted(p.name for p in folder.iterdir() if decoded_cache.SUFFIX in p.name)


def photo_folder(root: Path, count: int = 3) -> list[Path]:
    return [write_rgb(root / f"{i}.png", random_rgb(20 + i, 30 - i, seed=i)) for i in range(count)]


def test_the_cache_holds_the_decoded_images_bit_for_bit(tmp_path):
    every_value = np.arange(256 * 3, dtype=np.uint8).reshape(16, 16, 3)  # all 256 levels, each channel
    write_rgb(tmp_path / "levels.png", every_value)
    write_rgb(tmp_path / "sub" / "photo.png", random_rgb(9, 13, seed=1))
    Image.fromarray(np.full((5, 6), 77, np.uint8), "L").save(tmp_path / "gray.png")
    Image.fromarray(np.arange(30, dtype=np.uint16).reshape(5, 6) * 2000).save(tmp_path / "sixteen.png")
    dataset = mapped(tmp_path)
    (cache,) = dataset.decoded_caches()
    for position, path in enumerate(dataset.files):
        decoded = read_image(path)
        assert torch.equal(dataset.read(position), decoded)
        stored = cache.pixels(position)
        with Image.open(path) as image:
            if path.stem == "sixteen":  # not 8-bit: kept as the decoded float32 itself
                assert stored.dtype == np.float32 and np.array_equal(stored, decoded.numpy())
            else:  # the 8-bit values themselves, (H, W, 3), as PIL decodes them
                assert stored.dtype == np.uint8 and np.array_equal(stored, np.asarray(image.convert("RGB")))
    assert cache.path.parent == tmp_path and cache.path.name.startswith(f".{tmp_path.name}-")


def test_the_cache_is_reused_and_its_regions_are_the_images(tmp_path):
    arrays = [random_rgb(20 + i, 30 - i, seed=i) for i in range(3)]
    for i, array in enumerate(arrays):
        write_rgb(tmp_path / f"{i}.png", array)
    first = mapped(tmp_path)
    path = first.decoded_caches()[0].path
    before = path.stat()
    again = mapped(tmp_path, repeat=2)
    assert again.decoded_caches()[0].path == path and path.stat().st_ino == before.st_ino
    region = again.read_crop(4, 3, 5, 7, 9)  # item 4 is image 1
    assert region.dtype == torch.uint8 and torch.equal(region, torch.from_numpy(arrays[1][3:10, 5:14]).permute(2, 0, 1))
    assert cache_files(tmp_path) == sorted([path.name, path.name + ".lock"])


def touch_later(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


@pytest.mark.parametrize("change", ["rewrite", "mtime", "add", "remove", "rename"])
def test_a_change_of_the_files_rebuilds_it(tmp_path, change):
    files = photo_folder(tmp_path)
    path = mapped(tmp_path).decoded_caches()[0].path
    inode = path.stat().st_ino
    if change == "rewrite":  # same name, same size, other pixels
        write_rgb(files[1], random_rgb(21, 29, seed=99))
        touch_later(files[1])
    elif change == "mtime":
        touch_later(files[1])
    elif change == "add":
        write_rgb(tmp_path / "3.png", random_rgb(8, 8, seed=3))
    elif change == "remove":
        files[1].unlink()
    else:
        files[1].rename(tmp_path / "z.png")
    dataset = mapped(tmp_path)
    assert path.stat().st_ino != inode
    for position, file in enumerate(dataset.files):
        assert torch.equal(dataset.read(position), read_image(file))


def test_first_k_and_cache_dir_name_their_own_cache(tmp_path):
    photo_folder(tmp_path / "images")
    everything = mapped(tmp_path / "images").decoded_caches()[0].path
    two = mapped(tmp_path / "images", first_k=2).decoded_caches()[0].path
    elsewhere = mapped(tmp_path / "images", cache_dir=str(tmp_path / "cache")).decoded_caches()[0].path
    assert two != everything and two.parent == everything.parent
    assert elsewhere.parent == tmp_path / "cache" and elsewhere.name == everything.name


@needs_fork
@needs_proc
def test_a_forked_worker_shares_the_read_only_mapping(tmp_path):
    photo_folder(tmp_path, count=2)
    dataset = mapped(tmp_path)
    cache = dataset.decoded_caches()[0]
    parent_sum = sum(int(cache.pixels(i).sum()) for i in range(2))  # the parent touches every page
    with pytest.raises(ValueError, match="read-only"):
        cache.pixels(0)[0, 0, 0] = 1
    queue = multiprocessing.get_context("fork").Queue()

    def child():
        total = sum(int(dataset.read_crop(i, 0, 0, *dataset.image_size(i)).sum()) for i in range(2))
        mappings, current = [], None
        with open("/proc/self/smaps") as f:
            for line in f:
                head = line.split()
                if not head[0].endswith(":"):
                    current = {"perms": head[1]} if head[-1] == str(cache.path) else None
                    if current is not None:
                        mappings.append(current)
                elif current is not None and len(head) >= 2 and head[1].isdigit():
                    current[head[0][:-1]] = int(head[1])
        queue.put((total, mappings))

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    total, mappings = queue.get(timeout=60)
    process.join(timeout=60)
    assert process.exitcode == 0 and total == parent_sum
    assert len(mappings) == 1  # the parent's mapping, inherited: not a second map of the file
    (mapping,) = mappings
    assert mapping["perms"] == "r--s"  # read-only, shared with the page cache
    assert mapping["Private_Dirty"] == 0 and mapping["Shared_Clean"] > 0


def test_a_pickled_dataset_carries_no_pixels_and_maps_the_file_again(tmp_path):
    write_rgb(tmp_path / "big.png", random_rgb(200, 300))
    dataset = mapped(tmp_path)
    data = pickle.dumps(dataset)
    assert len(data) < 200 * 300 * 3 // 4
    assert torch.equal(pickle.loads(data).read(0), dataset.read(0))
    write_rgb(tmp_path / "big.png", random_rgb(200, 300, seed=5))
    touch_later(tmp_path / "big.png")
    mapped(tmp_path)  # rebuilds the file under the same name
    with pytest.raises(DatasetError, match="rebuilt while in use"):
        pickle.loads(data).read(0)


def test_an_interrupted_build_leaves_nothing_that_looks_valid(tmp_path, monkeypatch):
    photo_folder(tmp_path)
    real_read = decoded_cache.read_image
    calls = []

    def read_then_interrupt(path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_read(path)

    monkeypatch.setattr(decoded_cache, "read_image", read_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        mapped(tmp_path)
    assert [name for name in cache_files(tmp_path) if not name.endswith(".lock")] == []
    monkeypatch.setattr(decoded_cache, "read_image", real_read)
    dataset = mapped(tmp_path)
    assert all(torch.equal(dataset.read(i), read_image(f)) for i, f in enumerate(dataset.files))


@pytest.mark.parametrize("damage", ["empty", "zeros", "half", "magic only"])
def test_a_damaged_file_is_not_taken_for_a_cache(tmp_path, damage):
    photo_folder(tmp_path)
    path = mapped(tmp_path).decoded_caches()[0].path
    whole = path.read_bytes()
    path.write_bytes({"empty": b"", "zeros": bytes(len(whole)), "half": whole[:len(whole) // 2],
                      "magic only": decoded_cache.MAGIC}[damage])
    dataset = mapped(tmp_path)
    assert path.read_bytes() == whole and torch.equal(dataset.read(0), read_image(dataset.files[0]))


KILLED_BUILD = """
import sys, time
sys.path.insert(0, {repo!r})
import datasets
from datasets import decoded_cache
real_read = decoded_cache.read_image
def slow_read(path):
    print("decoding", flush=True)
    time.sleep(60)
decoded_cache.read_image = slow_read
datasets.make({{"name": "image-folder", "args": {{"root_path": {root!r}, "cache": "mmap"}}}})
"""


@pytest.mark.slow
def test_a_build_killed_outright_leaves_a_temporary_that_the_next_build_removes(tmp_path):
    photo_folder(tmp_path)
    process = subprocess.Popen([sys.executable, "-c", KILLED_BUILD.format(repo=str(REPO), root=str(tmp_path))],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "decoding\n"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    left = cache_files(tmp_path)
    assert any(TEMPORARY_MARK in name for name in left) and not any(name.endswith(decoded_cache.SUFFIX)
                                                                     and TEMPORARY_MARK not in name for name in left)
    dataset = mapped(tmp_path)
    assert not any(TEMPORARY_MARK in name for name in cache_files(tmp_path))
    assert torch.equal(dataset.read(2), read_image(dataset.files[2]))


@needs_fork
def test_concurrent_processes_build_it_once(tmp_path, monkeypatch):
    photo_folder(tmp_path)
    log = tmp_path.parent / f"{tmp_path.name}-builds.log"
    real_build = decoded_cache.build

    def logged_build(*args):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # long enough for the other process to meet the lock
        real_build(*args)

    monkeypatch.setattr(decoded_cache, "build", logged_build)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()

    def rank():
        dataset = mapped(tmp_path)
        queue.put([float(dataset.read(i).sum()) for i in range(3)])

    processes = [context.Process(target=rank) for _ in range(3)]
    for process in processes:
        process.start()
    sums = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert len(log.read_text().split()) == 1 and sums[0] == sums[1] == sums[2]


def test_an_image_that_fails_to_decode_is_skipped_as_without_the_cache(tmp_path):
    arrays = [random_rgb(40, 40, seed=i) for i in range(3)]
    for i, array in enumerate(arrays):
        write_rgb(tmp_path / f"{i}.png", array)
    data = (tmp_path / "1.png").read_bytes()
    (tmp_path / "1.png").write_bytes(data[: len(data) // 2])  # the header still reads
    for _ in range(2):  # building the cache, then mapping it
        with pytest.warns(UnreadableImageWarning, match="1.png"):
            dataset = mapped(tmp_path)
        with pytest.warns(UnreadableImageWarning, match="1.png"):
            assert torch.equal(dataset[1], torch.from_numpy(arrays[2]).permute(2, 0, 1).float() / 255)


@pytest.mark.parametrize("args, message", [
    ({"cache": "disk"}, "unknown cache mode 'disk'"),
    ({"cache": True}, "unknown cache mode True"),
    ({"cache": "none", "cache_dir": "/tmp"}, "cache_dir is used only with cache: mmap"),
    ({"cache": "mmap", "cache_dir": 5}, "cache_dir must be a folder"),
    ({"cache": "mmap", "cache_dir": ""}, "cache_dir must be a folder"),
])
@pytest.mark.parametrize("name", ["image-folder", "paired-image-folders"])
def test_bad_cache_options_are_one_line_errors(tmp_path, args, message, name):
    write_rgb(tmp_path / "a.png", random_rgb(4, 4))
    roots = {"root_path": str(tmp_path)} if name == "image-folder" else {"root_path_1": str(tmp_path),
                                                                          "root_path_2": str(tmp_path)}
    with pytest.raises(DatasetError, match=message) as error:
        datasets.make({"name": name, "args": {**roots, **args}})
    assert "\n" not in str(error.value)


def test_a_cache_dir_that_cannot_be_written_is_one_line(tmp_path):
    write_rgb(tmp_path / "images" / "a.png", random_rgb(4, 4))
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DatasetError, match="cannot write the decoded cache.*writable folder") as error:
        mapped(tmp_path / "images", cache_dir=str(tmp_path / "a-file"))
    assert "\n" not in str(error.value)


def test_paired_folders_map_one_cache_each(tmp_path):
    write_rgb(tmp_path / "HR" / "a.png", random_rgb(8, 8, seed=1))
    write_rgb(tmp_path / "LR" / "ax2.png", random_rgb(4, 4, seed=2))
    dataset = datasets.make({"name": "paired-image-folders", "args": {
        "root_path_1": str(tmp_path / "HR"), "root_path_2": str(tmp_path / "LR"), "cache": "mmap"}})
    assert [c.path.parent for c in dataset.decoded_caches()] == [tmp_path / "HR", tmp_path / "LR"]
    hr, lr = dataset[0]
    assert torch.equal(hr, read_image(tmp_path / "HR" / "a.png")) and torch.equal(lr, read_image(tmp_path / "LR" /
                                                                                               "ax2.png"))
