"""`image-folder` and `paired-image-folders`: listing, formats, caching, skipping, matching by name."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
from conftest import random_rgb, write_rgb
from datasets import DatasetError, UnreadableImageWarning


def as_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array)).permute(2, 0, 1).float() / 255


def folder(spec_args: dict, **kwargs):
    return datasets.make({"name": "image-folder", "args": spec_args}, kwargs or None)


def test_recursive_sorted_listing_of_every_format(tmp_path):
    arrays = {name: random_rgb(6, 5, seed=i) for i, name in enumerate(["b.png", "a/c.bmp", "a/b/d.tif", "e.tiff"])}
    for name, array in arrays.items():
        write_rgb(tmp_path / name, array)
    write_rgb(tmp_path / "z.jpg", random_rgb(6, 5))
    Image.fromarray(random_rgb(6, 5)).save(tmp_path / "w.webp", lossless=True)
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = folder({"root_path": str(tmp_path)})
    names = [p.relative_to(tmp_path).as_posix() for p in dataset.files]
    assert names == ["a/b/d.tif", "a/c.bmp", "b.png", "e.tiff", "w.webp", "z.jpg"]
    for i, name in enumerate(names[:4]):
        item = dataset[i]
        assert item.dtype == torch.float32 and item.shape == (3, 6, 5)
        assert torch.equal(item, as_tensor(arrays[name]))
    assert dataset[5].shape == (3, 6, 5)


def test_first_k_and_repeat(tmp_path):
    arrays = [write_rgb(tmp_path / f"{i}.png", random_rgb(4, 4, seed=i)) for i in range(3)]
    dataset = folder({"root_path": str(tmp_path), "first_k": 2, "repeat": 3})
    assert len(dataset) == 6 and dataset.files == arrays[:2]
    for index in range(6):
        assert torch.equal(dataset[index], as_tensor(np.asarray(Image.open(arrays[index % 2]))))


def test_modes_and_bit_depths_become_rgb(tmp_path):
    Image.fromarray(np.full((3, 4), 51, np.uint8), "L").save(tmp_path / "gray.png")
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 1], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((3, 4), 65535 // 5, np.uint16)).save(tmp_path / "sixteen.png")
    palette = Image.new("P", (4, 3))
    palette.putpalette([0, 0, 255] * 256)
    palette.save(tmp_path / "palette.png")
    dataset = folder({"root_path": str(tmp_path)})
    items = {p.stem: dataset[i] for i, p in enumerate(dataset.files)}
    assert all(item.shape == (3, 3, 4) and item.dtype == torch.float32 for item in items.values())
    assert torch.allclose(items["gray"], torch.full((3, 3, 4), 0.2))
    assert torch.all(items["rgba"][1] == 200 / 255) and torch.all(items["rgba"][0] == 0)
    assert torch.allclose(items["sixteen"], torch.full((3, 3, 4), (65535 // 5) / 65535))
    assert torch.all(items["palette"][2] == 1) and torch.all(items["palette"][:2] == 0)


def test_in_memory_cache_gives_the_same_tensors(tmp_path):
    write_rgb(tmp_path / "a.png", random_rgb(5, 7))
    Image.fromarray(np.arange(35, dtype=np.uint16).reshape(5, 7) * 1000).save(tmp_path / "b.png")
    plain = folder({"root_path": str(tmp_path)})
    cached = folder({"root_path": str(tmp_path), "cache": "in_memory"})
    for index in range(2):
        assert torch.equal(plain[index], cached[index]) and cached[index].dtype == torch.float32
    expected = plain[0]
    (tmp_path / "a.png").unlink()  # the cache no longer needs the files
    assert torch.equal(cached[0], expected)
    assert cached.images._cached[0].dtype == torch.uint8 and cached.images._cached[1].dtype == torch.float32


def test_a_file_that_is_not_an_image_is_skipped_at_construction(tmp_path):
    write_rgb(tmp_path / "a.png", random_rgb(4, 4))
    (tmp_path / "broken.png").write_bytes(b"this is not a png")
    with pytest.warns(UnreadableImageWarning, match="broken.png"):
        dataset = folder({"root_path": str(tmp_path)})
    assert [p.name for p in dataset.files] == ["a.png"]


def test_a_truncated_file_is_skipped_when_met(tmp_path):
    arrays = [random_rgb(40, 40, seed=i) for i in range(3)]
    for i, array in enumerate(arrays):
        write_rgb(tmp_path / f"{i}.png", array)
    data = (tmp_path / "1.png").read_bytes()
    (tmp_path / "1.png").write_bytes(data[: len(data) // 2])  # the header still reads
    for cache in ("none", "in_memory"):
        with pytest.warns(UnreadableImageWarning, match="1.png"):
            dataset = folder({"root_path": str(tmp_path), "cache": cache})
            assert len(dataset) == 3
            assert torch.equal(dataset[1], as_tensor(arrays[2]))  # falls back to the next readable image
        assert torch.equal(dataset[0], as_tensor(arrays[0]))


def test_only_unreadable_images_is_an_error_when_read(tmp_path):
    write_rgb(tmp_path / "a.png", random_rgb(40, 40))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[:60])
    dataset = folder({"root_path": str(tmp_path)})
    with pytest.warns(UnreadableImageWarning), pytest.raises(DatasetError, match="no readable image"):
        dataset[0]


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "image folder not found"),
    (lambda root: root.mkdir(), "no images"),
    (lambda root: (root.mkdir(), (root / "a.txt").write_text("x")), "no images"),
])
def test_missing_or_empty_folder_is_a_clear_error(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DatasetError, match=message):
        folder({"root_path": str(root)})


@pytest.mark.parametrize("args, message", [({"cache": "disk"}, "unknown cache mode"),
                                           ({"first_k": 0}, "first_k"), ({"repeat": 0}, "repeat")])
def test_bad_arguments_are_clear_errors(tmp_path, args, message):
    write_rgb(tmp_path / "a.png", random_rgb(4, 4))
    with pytest.raises(DatasetError, match=message):
        folder({"root_path": str(tmp_path), **args})


def paired(root_1, root_2, **kwargs):
    return datasets.make({"name": "paired-image-folders",
                          "args": {"root_path_1": str(root_1), "root_path_2": str(root_2), **kwargs}})


def test_pairs_match_benchmark_names(tmp_path):
    hr_names = ["baby", "bird", "box2", "butterfly", "head", "woman"]
    lr_names = ["babyx4", "bird_LR_x4", "box2", "butterfly_x4", "head-x2.5", "womanX4"]
    for i, (hr, lr) in enumerate(zip(hr_names, lr_names)):
        write_rgb(tmp_path / "HR" / f"{hr}.png", random_rgb(8, 8, seed=i))
        write_rgb(tmp_path / "LR" / f"{lr}.png", random_rgb(2, 2, seed=100 + i))
    dataset = paired(tmp_path / "HR", tmp_path / "LR")
    assert [(a.stem, b.stem) for a, b in dataset.files] == list(zip(hr_names, lr_names))
    hr, lr = dataset[2]
    assert torch.equal(hr, as_tensor(random_rgb(8, 8, seed=2))) and torch.equal(lr, as_tensor(random_rgb(2, 2, 102)))
    swapped = paired(tmp_path / "LR", tmp_path / "HR")
    assert sorted((b.stem, a.stem) for a, b in swapped.files) == list(zip(hr_names, lr_names))


def test_exact_names_win_over_stripped_suffixes(tmp_path):
    for name in ("box", "box2"):
        write_rgb(tmp_path / "HR" / f"{name}.png", random_rgb(4, 4))
        write_rgb(tmp_path / "LR" / f"{name}.png", random_rgb(2, 2))
    dataset = paired(tmp_path / "HR", tmp_path / "LR")
    assert [(a.stem, b.stem) for a, b in dataset.files] == [("box", "box"), ("box2", "box2")]


def test_subfolders_pair_with_the_same_subfolders(tmp_path):
    for sub in ("x", "y"):
        write_rgb(tmp_path / "HR" / sub / "a.png", random_rgb(4, 4))
        write_rgb(tmp_path / "LR" / sub / "ax2.png", random_rgb(2, 2))
    dataset = paired(tmp_path / "HR", tmp_path / "LR", first_k=1, repeat=2)
    assert len(dataset) == 2 and dataset.files[0][1].parent.name == "x"


def test_unmatched_files_are_named(tmp_path):
    for name in ("a", "b", "c"):
        write_rgb(tmp_path / "HR" / f"{name}.png", random_rgb(4, 4))
    write_rgb(tmp_path / "LR" / "ax2.png", random_rgb(2, 2))
    write_rgb(tmp_path / "LR" / "zzz.png", random_rgb(2, 2))
    with pytest.raises(DatasetError, match=r"2 in .*HR without a match: .*b\.png, .*c\.png; 1 in .*LR .*zzz\.png"):
        paired(tmp_path / "HR", tmp_path / "LR")


def test_two_files_matching_one_is_an_error(tmp_path):
    write_rgb(tmp_path / "HR" / "a.png", random_rgb(4, 4))
    write_rgb(tmp_path / "LR" / "ax2.png", random_rgb(2, 2))
    write_rgb(tmp_path / "LR" / "a_x2.png", random_rgb(2, 2))
    with pytest.raises(DatasetError, match="matches both"):
        paired(tmp_path / "HR", tmp_path / "LR")
