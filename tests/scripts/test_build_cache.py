"""scripts/build_cache.py: builds the decoded cache train.py maps for a config, says when it is already current."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

import datasets
from conftest import random_rgb, write_rgb
from inference.image_io import read_image

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "train" / "tiny.yaml")


def run_script(monkeypatch, *argv) -> None:
    spec = importlib.util.spec_from_file_location("build_cache", ROOT / "scripts" / "build_cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["build_cache.py", *argv])
    module.main()


@pytest.mark.parametrize("cache_dir", [None, "elsewhere"])
def test_it_builds_the_file_training_maps_then_finds_it_current(tmp_path, monkeypatch, capsys, cache_dir):
    for i in range(3):
        write_rgb(tmp_path / "hr" / f"{i}.png", random_rgb(16, 18, seed=i))
    sets = ["--set", f"train_dataset.dataset.args.cache_dir={tmp_path / cache_dir}"] if cache_dir else []
    argv = ["--config", TINY, "--path", str(tmp_path / "hr"), "--set", "train_dataset.dataset.args.first_k=2", *sets]
    run_script(monkeypatch, *argv)
    first = capsys.readouterr().out
    run_script(monkeypatch, *argv)
    second = capsys.readouterr().out
    args = {"root_path": str(tmp_path / "hr"), "first_k": 2, "cache": "mmap",
            **({"cache_dir": str(tmp_path / cache_dir)} if cache_dir else {})}
    dataset = datasets.make({"name": "image-folder", "args": args})
    (cache,) = dataset.decoded_caches()
    assert first.startswith(f"built: {cache.path} (") and second.startswith(f"up to date: {cache.path} (")
    assert cache.path.parent == (tmp_path / cache_dir if cache_dir else tmp_path / "hr") and len(cache) == 2
    assert torch.equal(dataset.read(1), read_image(tmp_path / "hr" / "1.png"))


@pytest.mark.parametrize("argv, message", [
    (["--path", "/nonexistent/folder"], "image folder not found"),
    (["--set", "train_dataset.dataset.name=sr-implicit-paired"], "the decoded cache is for image-folder"),
    (["--set", "train_dataset.dataset.args.cache_dir=5"], "cache_dir must be a folder"),
    (["--config", "missing.yaml"], "config not found"),
])
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, argv, message):
    write_rgb(tmp_path / "hr" / "a.png", random_rgb(16, 16))
    defaults = ["--config", TINY, "--path", str(tmp_path / "hr")]
    with pytest.raises(SystemExit) as stop:
        run_script(monkeypatch, *defaults, *argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith("build_cache.py: error: ") and message in err[0]
    assert not [p for p in (tmp_path / "hr").iterdir() if p.name != "a.png"]
