"""scripts/benchmark_train.py: the phases add up to the step, the JSON holds the figures, real data works."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from conftest import random_rgb, write_rgb

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "train" / "tiny.yaml")


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_train", ROOT / "scripts" / "benchmark_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("real_data", [False, True])
@pytest.mark.slow
def test_one_step_benchmark_writes_consistent_figures(tmp_path, monkeypatch, capsys, real_data):
    script = load_script()
    argv = ["benchmark_train.py", "--config", TINY, "--steps", "2", "--warmup", "0", "--device", "cpu",
            "--out", str(tmp_path / "result.json")]
    if real_data:
        for i in range(2):
            write_rgb(tmp_path / "hr" / f"{i}.png", random_rgb(20, 20, seed=i))
        argv += ["--path", str(tmp_path / "hr")]
    monkeypatch.setattr(sys, "argv", argv)
    script.main()
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["data"] == ("real" if real_data else "synthetic") and result["batch"] == 2
    assert set(result["phase_share"]) == set(script.PHASES)
    assert sum(result["phase_share"].values()) == pytest.approx(1.0)
    assert result["render_share"] == pytest.approx(result["phase_share"]["render"]
                                                   + result["phase_share"]["render_bwd"])
    import rasterizer

    expected = rasterizer.resolve_backend("auto", __import__("torch").device("cpu"))  # numba where installed
    assert result["iterations_per_s"] > 0 and result["backend"] == expected
    assert "rasterizing" in capsys.readouterr().out


def test_synthetic_batches_follow_the_recipe_shapes():
    script = load_script()
    cfg = {"train_dataset": {"wrapper": {"args": {"inp_size": 64, "scale_min": 4, "scale_max": 8}}}}
    batches = script.synthetic_batches(cfg, 3, __import__("torch").device("cpu"), seed=0)
    for _ in range(5):
        batch = next(batches)
        lr = batch["inp"].shape[-1]
        assert batch["gt"].shape == (3, 3, 64, 64) and batch["inp"].shape == (3, 3, lr, lr) and 8 <= lr <= 16


@pytest.mark.slow
def test_the_step_is_train_py_s(tmp_path, monkeypatch):
    """The benchmark builds its optimizer from the config as train.py does (AdamW here, not a fixed Adam) and
    runs the encode under the config's bf16 autocast on the CPU too (training.render.RenderAtTarget)."""
    import torch

    import gaussian
    from training.optim import make_optimizer as real_make_optimizer

    script = load_script()
    built, precisions = [], []
    monkeypatch.setattr(script, "make_optimizer", lambda cfg, params: built.append(
        real_make_optimizer(cfg, params)) or built[-1])
    real_encode = gaussian.ContinuousGaussian.encode

    def encode(self, inp, precision=None):
        precisions.append(precision)
        return real_encode(self, inp, precision)

    monkeypatch.setattr(gaussian.ContinuousGaussian, "encode", encode)
    monkeypatch.setattr(sys, "argv", ["benchmark_train.py", "--config", TINY, "--steps", "1", "--warmup", "0",
                                      "--device", "cpu", "--set", "optimizer={name: adamw, args: {lr: 1e-4}}",
                                      "--set", "bf16=true", "--out", str(tmp_path / "r.json")])
    script.main()
    assert len(built) == 1 and isinstance(built[0], torch.optim.AdamW) and built[0].defaults["lr"] == 1e-4
    assert precisions == ["bf16"] and json.loads((tmp_path / "r.json").read_text())["bf16"] is True
    assert [p for p in os.listdir(tmp_path)] == ["r.json"]


def test_a_bad_config_is_one_line_before_any_step(tmp_path, monkeypatch, capsys):
    script = load_script()
    monkeypatch.setattr(sys, "argv", ["benchmark_train.py", "--config", TINY, "--device", "cpu",
                                      "--set", "train_dataset.wrapper.args.inp_size=null"])
    with pytest.raises(SystemExit) as stop:
        script.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "inp_size" in err[0]


def data_only_argv(tmp_path, *extra):
    for i in range(2):
        write_rgb(tmp_path / "hr" / f"{i}.png", random_rgb(20, 20, seed=i))
    return ["benchmark_train.py", "--config", TINY, "--path", str(tmp_path / "hr"), "--data-only",
            "--set", "train_dataset.dataset.args.cache=mmap", "--out", str(tmp_path / "data.json"), *extra]


def test_data_only_times_the_loader_per_worker_count(tmp_path, monkeypatch, capsys):
    script = load_script()
    monkeypatch.setattr(sys, "argv", data_only_argv(tmp_path, "--workers", "0,1", "--steps", "2", "--warmup", "1",
                                                    "--step-ms", "1", "--set", "train_dataset.dataset.args.repeat=4"))
    script.main()
    result = json.loads((tmp_path / "data.json").read_text())
    assert result["mode"] == "data-only" and result["batch"] == 2 and result["inp_size"] == 16
    assert result["images"] == {"count": 2, "sizes": {"20x20": 2}}
    assert len(result["load_average_before"]) == 3 and result["dataset"]["args"]["cache"] == "mmap"
    none, one = result["runs"]
    assert (none["workers"], one["workers"]) == (0, 1) and none["memory_mb"]["workers"] == []
    for run in (none, one):
        assert run["samples_per_s"] > 0 and 0 <= run["with_step"]["wait_share"] <= 1
    assert one["samples_per_s_per_worker"] == one["samples_per_s"]
    assert result["node_estimate"]["samples_per_s"] == pytest.approx(
        result["node_estimate"]["cores"] * one["samples_per_s_per_worker"])
    if Path("/proc/self/smaps_rollup").exists():
        (worker,) = one["memory_mb"]["workers"]
        assert worker["cache_rss"] > 0  # the worker read its samples from the mapped cache
        assert 0 < worker["own"] <= worker["private"] <= worker["rss"] and worker["pss"] <= worker["rss"]
    stages = result["sample_stages_ms"]["mmap"]
    assert set(stages) == {"read", "downscale", "augment", "to_float", "sample", "collate", "other"}
    assert all(stages[k] > 0 for k in stages if k != "other") and stages["sample"] >= stages["read"]
    assert "1 worker(s)" in capsys.readouterr().out


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs /proc/PID/smaps_rollup (Linux)")
def test_process_memory_counts_the_decoded_cache_apart(tmp_path):
    import numpy as np

    from datasets.decoded_cache import PAGE, SUFFIX

    script = load_script()
    pages = 256
    path = tmp_path / f"x{SUFFIX}"
    path.write_bytes(bytes(range(256)) * (pages * PAGE // 256))
    before = script.process_memory(os.getpid())
    data = np.memmap(path, dtype=np.uint8, mode="r")
    assert int(data[::PAGE].astype(np.int64).sum()) == 0  # touches every page (each starts with byte 0)
    after = script.process_memory(os.getpid())
    mapped_mb = pages * PAGE / 2 ** 20
    assert after["cache_rss"] - before["cache_rss"] == pytest.approx(mapped_mb)
    assert after["cache_private"] - before["cache_private"] == pytest.approx(mapped_mb)  # no other process maps it
    assert after["own"] == pytest.approx(after["private"] - after["cache_private"])
    del data


@pytest.mark.parametrize("extra, message", [
    (["--workers", "1,a"], "--workers must be"), (["--workers", "-1"], "--workers must be"),
    (["--step-ms", "0"], "--step-ms must be a positive"), (["--batch", "0"], "--batch must be"),
    (["--steps", "50"], "an epoch holds 1 batches of 2"),
    (["--set", "train_dataset.dataset.args.cache=disk"], "unknown cache mode"),
])
def test_data_only_bad_options_are_one_line(tmp_path, monkeypatch, capsys, extra, message):
    script = load_script()
    monkeypatch.setattr(sys, "argv", data_only_argv(tmp_path, "--workers", "0", *extra))
    with pytest.raises(SystemExit) as stop:
        script.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and message in err[0]
    assert not (tmp_path / "data.json").exists()
