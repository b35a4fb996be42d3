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
    runs the encode under the config's bf16 autocast on the CPU too (train.RenderAtTarget)."""
    import torch

    import gaussian
    import train

    script = load_script()
    built, precisions = [], []
    real_make_optimizer = train.make_optimizer
    monkeypatch.setattr(train, "make_optimizer", lambda cfg, params: built.append(
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
