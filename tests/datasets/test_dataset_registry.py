"""The dataset registry: every name registered, args merged, unknown names listed."""
from __future__ import annotations

import pytest

import datasets
from conftest import random_rgb, write_rgb


def test_every_dataset_name_is_registered():
    for name in ("image-folder", "paired-image-folders", "sr-implicit-downsampled", "sr-implicit-paired"):
        assert name in datasets.datasets


def test_args_override_the_spec_without_changing_it(tmp_path):
    for i in range(3):
        write_rgb(tmp_path / f"{i}.png", random_rgb(4, 4))
    spec = {"name": "image-folder", "args": {"root_path": str(tmp_path), "repeat": 2}}
    assert len(datasets.make(spec)) == 6
    assert len(datasets.make(spec, {"repeat": 5})) == 15 and spec["args"]["repeat"] == 2


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(datasets.UnknownDatasetError, match=r"unknown dataset 'nope' \(known: image-folder, "):
        datasets.make({"name": "nope"})


def test_a_name_registers_once():
    with pytest.raises(ValueError, match="registered twice"):
        datasets.register("image-folder")(object)
