"""`sr-implicit-downsampled` and `sr-implicit-paired`: crops, PIL bicubic LR, alignment, augmentation, skipping."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

import datasets
from conftest import random_rgb, write_rgb
from datasets import DatasetError, SampleKey, UnreadableImageWarning


class TensorList(Dataset):
    """Images given as tensors; no sizes known up front (the wrappers' lazy path)."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index]


def pil_bicubic(array: np.ndarray, height: int, width: int) -> torch.Tensor:
    resized = np.array(Image.fromarray(array).resize((width, height), Image.BICUBIC))
    return torch.from_numpy(resized).permute(2, 0, 1).float() / 255


def as_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array)).permute(2, 0, 1).float() / 255


def downsampled(dataset, **args):
    return datasets.make({"name": "sr-implicit-downsampled", "args": args}, {"dataset": dataset})


def hr_folder(tmp_path, arrays):
    for i, array in enumerate(arrays):
        write_rgb(tmp_path / f"{i:02d}.png", array)
    return datasets.make({"name": "image-folder", "args": {"root_path": str(tmp_path)}})


@pytest.mark.parametrize("scale", [4.0, 3.7, 2.0, 6.5])
def test_training_lr_is_pil_bicubic_of_the_crop(tmp_path, scale):
    array = random_rgb(32, 32)
    wrapper = downsampled(hr_folder(tmp_path, [array]), inp_size=32, scale_min=2, scale_max=8)
    sample = wrapper[SampleKey(0, scale, 5)]
    size = math.floor(32 / scale)
    assert torch.equal(sample["gt"], as_tensor(array))
    assert torch.equal(sample["inp"], pil_bicubic(array, size, size))
    assert sample["inp"].dtype == sample["gt"].dtype == sample["scale"].dtype == torch.float32
    assert torch.equal(sample["scale"], torch.tensor([32 / size, 32 / size]))


def test_the_crop_is_a_window_of_the_image_and_seeded(tmp_path):
    array = random_rgb(20, 27, seed=3)
    wrapper = downsampled(hr_folder(tmp_path, [array]), inp_size=12, scale_min=2, scale_max=3)
    image = as_tensor(array)
    corners = set()
    for seed in range(12):
        sample = wrapper[SampleKey(0, 2.5, seed)]
        found = [(t, l) for t in range(9) for l in range(16) if torch.equal(image[:, t:t + 12, l:l + 12], sample["gt"])]
        assert len(found) == 1
        corners.add(found[0])
        t, l = found[0]
        assert torch.equal(sample["inp"], pil_bicubic(array[t:t + 12, l:l + 12], 4, 4))
        again = wrapper[SampleKey(0, 2.5, seed)]
        assert all(torch.equal(sample[k], again[k]) for k in sample)
    assert len(corners) > 6


def dihedral(image: torch.Tensor) -> list[torch.Tensor]:
    variants = []
    for k in range(4):
        rotated = torch.rot90(image, k, (-2, -1))
        variants += [rotated, rotated.transpose(-2, -1)]
    return variants


def test_augmentation_applies_one_flip_transpose_to_both(tmp_path):
    array = random_rgb(24, 24, seed=4)
    wrapper = downsampled(hr_folder(tmp_path, [array]), inp_size=24, scale_min=3, augment=True)
    gt_variants, lr_variants = dihedral(as_tensor(array)), dihedral(pil_bicubic(array, 8, 8))
    seen = set()
    for seed in range(64):
        sample = wrapper[SampleKey(0, 3.0, seed)]
        which = [k for k, v in enumerate(gt_variants) if torch.equal(v, sample["gt"])]
        assert len(which) == 1 and torch.equal(sample["inp"], lr_variants[which[0]])
        seen.add(which[0])
    assert seen == set(range(8))


def test_float_images_are_rounded_to_uint8_before_resizing():
    value = 100.6 / 255  # rounds to 101; truncation would give 100
    wrapper = downsampled(TensorList([torch.full((3, 16, 16), value)]), inp_size=16, scale_min=4)
    sample = wrapper[0]
    assert torch.equal(sample["inp"], torch.full((3, 4, 4), 101 / 255))
    assert torch.equal(sample["gt"], torch.full((3, 16, 16), value))


@pytest.mark.parametrize("height, width, scale", [(50, 37, 3.5), (50, 37, 3.0), (12, 12, 2.4), (31, 17, 1.0),
                                                  (40, 41, 7.3)])
def test_test_mode_crops_top_left_to_the_lr_grid(tmp_path, height, width, scale):
    array = random_rgb(height, width, seed=1)
    wrapper = downsampled(hr_folder(tmp_path, [array]), scale_min=scale)
    sample = wrapper[0]
    h_lr, w_lr = math.floor(round(height / scale, 9)), math.floor(round(width / scale, 9))
    big_h, big_w = round(h_lr * scale), round(w_lr * scale)
    assert torch.equal(sample["gt"], as_tensor(array[:big_h, :big_w]))
    assert torch.equal(sample["inp"], pil_bicubic(array[:big_h, :big_w], h_lr, w_lr))
    assert torch.equal(sample["scale"], torch.tensor([big_h / h_lr, big_w / w_lr], dtype=torch.float32))


def test_images_smaller_than_the_crop_are_skipped_with_a_warning(tmp_path):
    arrays = [random_rgb(40, 40, 0), random_rgb(30, 50, 1), random_rgb(48, 48, 2)]
    with pytest.warns(UnreadableImageWarning, match=r"01\.png: 30x50 is smaller than the 32x32 crop"):
        wrapper = downsampled(hr_folder(tmp_path, arrays), inp_size=32, scale_min=4)
    assert len(wrapper) == 2 and [wrapper.source(i).name for i in range(2)] == ["00.png", "02.png"]
    assert wrapper[SampleKey(1, 4.0, 0)]["gt"].shape == (3, 32, 32)


def test_small_tensors_are_skipped_when_met():
    images = [torch.rand(3, 8, 8), torch.rand(3, 20, 20)]
    wrapper = downsampled(TensorList(images), inp_size=16, scale_min=2)
    with pytest.warns(UnreadableImageWarning, match="smaller than the 16 crop"):
        sample = wrapper[SampleKey(0, 2.0, 1)]
    assert sample["gt"].shape == (3, 16, 16)


def test_no_usable_image_is_a_clear_error(tmp_path):
    with pytest.warns(UnreadableImageWarning), pytest.raises(DatasetError, match="no image of the data set fits"):
        downsampled(hr_folder(tmp_path, [random_rgb(10, 10)]), inp_size=32, scale_min=4)


@pytest.mark.parametrize("args, message", [({"scale_min": 4, "scale_max": 2}, "scale_min <= scale_max"),
                                           ({"scale_min": 0}, "scale_min"),
                                           ({"inp_size": 4, "scale_min": 1, "scale_max": 8}, "inp_size")])
def test_bad_wrapper_arguments(tmp_path, args, message):
    with pytest.raises(DatasetError, match=message):
        downsampled(hr_folder(tmp_path, [random_rgb(10, 10)]), **args)


def test_unreadable_image_falls_back_to_the_next(tmp_path):
    arrays = [random_rgb(40, 40, 0), random_rgb(40, 40, 1)]
    dataset = hr_folder(tmp_path, arrays)
    data = (tmp_path / "00.png").read_bytes()
    (tmp_path / "00.png").write_bytes(data[: len(data) // 2])
    wrapper = downsampled(dataset, scale_min=4)
    with pytest.warns(UnreadableImageWarning, match="00.png"):
        sample = wrapper[0]
    assert torch.equal(sample["gt"], as_tensor(arrays[1]))


def paired_folders(tmp_path, lr_arrays, ratio, extra=0):
    """HR = each LR pixel repeated ratio x ratio times (plus `extra` rows/columns the LR drops)."""
    for i, lr in enumerate(lr_arrays):
        hr = np.kron(lr, np.ones((ratio, ratio, 1), np.uint8))
        hr = np.pad(hr, ((0, extra), (0, extra), (0, 0)), mode="edge")
        write_rgb(tmp_path / "HR" / f"{i}.png", hr)
        write_rgb(tmp_path / "LR" / f"{i}x{ratio}.png", lr)
    return datasets.make({"name": "paired-image-folders",
                          "args": {"root_path_1": str(tmp_path / "HR"), "root_path_2": str(tmp_path / "LR")}})


def paired_wrapper(dataset, **args):
    return datasets.make({"name": "sr-implicit-paired", "args": args}, {"dataset": dataset})


def test_paired_test_mode_crops_hr_to_lr_times_ratio(tmp_path):
    lr = random_rgb(5, 7, seed=2)
    wrapper = paired_wrapper(paired_folders(tmp_path, [lr], ratio=3, extra=2))
    sample = wrapper[0]
    assert torch.equal(sample["inp"], as_tensor(lr))
    assert sample["gt"].shape == (3, 15, 21) and torch.equal(sample["gt"][:, ::3, ::3], sample["inp"])
    assert torch.equal(sample["scale"], torch.tensor([3.0, 3.0]))


@pytest.mark.parametrize("augment", [False, True])
def test_paired_crops_are_aligned(tmp_path, augment):
    lr = random_rgb(10, 13, seed=3)
    wrapper = paired_wrapper(paired_folders(tmp_path, [lr], ratio=4), inp_size=16, augment=augment)
    image = as_tensor(lr)
    for seed in range(10):
        sample = wrapper[SampleKey(0, None, seed)]
        assert sample["inp"].shape == (3, 4, 4) and sample["gt"].shape == (3, 16, 16)
        assert torch.equal(sample["gt"][:, ::4, ::4], sample["inp"])
        windows = [image[:, t:t + 4, l:l + 4] for t in range(7) for l in range(10)]
        variants = [v for window in windows for v in (dihedral(window) if augment else [window])]
        assert any(torch.equal(v, sample["inp"]) for v in variants)


def test_paired_without_integer_ratio_is_an_error(tmp_path):
    write_rgb(tmp_path / "HR" / "a.png", random_rgb(25, 20))
    write_rgb(tmp_path / "LR" / "a.png", random_rgb(10, 10))
    dataset = datasets.make({"name": "paired-image-folders",
                             "args": {"root_path_1": str(tmp_path / "HR"), "root_path_2": str(tmp_path / "LR")}})
    with pytest.raises(DatasetError, match="no integer scale ratio"):
        paired_wrapper(dataset)


def test_paired_lr_smaller_than_the_crop_is_skipped(tmp_path):
    dataset = paired_folders(tmp_path, [random_rgb(3, 3, 0), random_rgb(6, 6, 1)], ratio=2)
    with pytest.warns(UnreadableImageWarning, match=r"0\.png.*smaller than the 4x4 LR crop"):
        wrapper = paired_wrapper(dataset, inp_size=8)
    assert len(wrapper) == 1 and [p.name for p in wrapper.source(0)] == ["1.png", "1x2.png"]


def test_paired_wrapper_takes_the_larger_image_as_hr_in_either_order():
    from datasets.wrappers import SRImplicitPaired

    hr = torch.rand(3, 12, 9)
    lr = torch.rand(3, 4, 3)
    for pairs in ([(hr, lr)], [(lr, hr)]):
        sample = SRImplicitPaired(pairs)[0]
        assert torch.equal(sample["gt"], hr) and torch.equal(sample["inp"], lr)
        assert sample["scale"].tolist() == [3.0, 3.0]


@pytest.mark.parametrize("wrapper_args", [{"inp_size": 16, "scale_min": 2, "scale_max": 5, "augment": True},
                                          {"inp_size": None, "scale_min": 3}])
def test_every_cache_mode_gives_the_same_samples(tmp_path, wrapper_args):
    """Regions read in their stored 8-bit form (in_memory, mmap) make the same samples, bit for bit, as the
    whole decoded float image (none): 8-bit RGB, gray, and 16-bit images (kept as float)."""
    for i in range(3):
        write_rgb(tmp_path / f"rgb{i}.png", random_rgb(23 + i, 31 - i, seed=i))
    Image.fromarray(random_rgb(20, 22, seed=7)[..., 0], "L").save(tmp_path / "gray.png")
    Image.fromarray((np.arange(24 * 20, dtype=np.uint16).reshape(24, 20) * 131)).save(tmp_path / "sixteen.png")
    samples = {}
    for cache in ("none", "in_memory", "mmap"):
        base = datasets.make({"name": "image-folder", "args": {"root_path": str(tmp_path), "cache": cache}})
        wrapper = downsampled(base, **wrapper_args)
        samples[cache] = [wrapper[SampleKey(i, None, 10 + i)] for i in range(len(wrapper))]
    assert len(samples["none"]) == 5
    for cache in ("in_memory", "mmap"):
        for plain, cached in zip(samples["none"], samples[cache]):
            assert all(torch.equal(plain[k], cached[k]) and plain[k].is_contiguous() == cached[k].is_contiguous()
                       for k in plain)
