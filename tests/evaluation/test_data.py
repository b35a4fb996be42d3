"""evaluation/data.py: data roots, missing and unreadable data, paired folder order and scale, scale checks."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from evaluation.data import build_dataset, item_names, resolve_data_paths
from evaluation.loop import evaluate
from evaluation.schema import validate_config
from scoring_checks import model, prepared, shipped  # noqa: F401  (model: a fixture)
from utils import UsageError

def test_data_root_resolution(tmp_path):
    config = shipped("test-set5-2-paired.yaml")
    assert resolve_data_paths(config)["test_dataset"]["dataset"]["args"]["root_path_2"] == str(
        Path("load/benchmark/Set5/HR"))
    with_root = resolve_data_paths({**config, "data_root": str(tmp_path / "a")})
    assert with_root["test_dataset"]["dataset"]["args"]["root_path_1"] == str(
        tmp_path / "a/benchmark/Set5/LR_bicubic/X2")
    overridden = resolve_data_paths({**config, "data_root": str(tmp_path / "a")}, tmp_path / "b")
    assert overridden["test_dataset"]["dataset"]["args"]["root_path_2"] == str(tmp_path / "b/benchmark/Set5/HR")
    absolute = copy.deepcopy(config)
    absolute["test_dataset"]["dataset"]["args"]["root_path_2"] = str(tmp_path / "abs")
    assert resolve_data_paths(absolute, tmp_path / "b")["test_dataset"]["dataset"]["args"]["root_path_2"] == str(
        tmp_path / "abs")
    assert config == shipped("test-set5-2-paired.yaml")  # the input is not modified


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        prepared("test-set5-4.yaml", tmp_path)
    (tmp_path / "benchmark" / "Set5" / "HR").mkdir(parents=True)
    (tmp_path / "benchmark" / "Set5" / "HR" / "readme.txt").write_text("no images")
    with pytest.raises(UsageError, match="no images"):
        prepared("test-set5-4.yaml", tmp_path)


def test_an_unreadable_image_is_an_error_not_a_skip(benchmark_root):
    (benchmark_root / "benchmark" / "Set5" / "HR" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(UsageError, match="broken.png"):
        prepared("test-set5-4.yaml", benchmark_root)


def test_paired_folders_work_in_either_order(benchmark_root):
    _, _, liif_order = prepared("test-set5-4-paired.yaml", benchmark_root)
    config = shipped("test-set5-4-paired.yaml")
    args = config["test_dataset"]["dataset"]["args"]
    args["root_path_1"], args["root_path_2"] = args["root_path_2"], args["root_path_1"]
    hr_first = build_dataset(resolve_data_paths(config, benchmark_root))
    assert len(liif_order) == len(hr_first) == 3
    for i in range(3):
        a, b = liif_order[i], hr_first[i]
        assert a["inp"].shape[-1] * 4 == a["gt"].shape[-1]
        assert torch.equal(a["inp"], b["inp"]) and torch.equal(a["gt"], b["gt"])
    assert item_names(liif_order) == ["img0", "img1", "img2"]


def test_a_paired_folder_at_another_scale_is_a_mismatch(model, benchmark_root):
    config = shipped("test-set5-4-paired.yaml")
    config["test_dataset"]["dataset"]["args"]["root_path_1"] = "benchmark/Set5/LR_bicubic/X2"
    config = resolve_data_paths(config, benchmark_root)
    protocol = validate_config(config)
    with pytest.raises(UsageError, match=r"img0: LR 24x24 → HR 48x48 is x2, but the config's eval_type is x4"):
        evaluate(model, build_dataset(config), protocol, progress=False)


def test_scales_above_the_data_scale_have_no_reference(model, benchmark_root):
    _, protocol, dataset = prepared("test-set5-2.yaml", benchmark_root)
    with pytest.raises(UsageError, match="x3 exceeds the data's x2"):
        evaluate(model, dataset, protocol, scales=[2, 3], progress=False)
