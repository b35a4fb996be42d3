"""scripts/device_train.py and scripts/pack_device_data.py: the bundled model's training on a GPU machine."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import models
from conftest import random_rgb, write_rgb

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
# The export's bound (device_train.py's docstring): at most 8 files of 16 MiB each, quick to copy back.
MAX_FILES, MAX_FILE_BYTES = 8, 16 * 2 ** 20


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


device_train = load("device_train")
pack_device_data = load("pack_device_data")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """train/ and val/ of small smooth images, as scripts/prepare_photos.py lays them out."""
    root = tmp_path_factory.mktemp("photos")
    for split, count in (("train", 4), ("val", 2)):
        (root / split).mkdir()
        for i in range(count):
            small = random_rgb(6, 7, seed=10 * len(split) + i)
            write_rgb(root / split / f"img{i}.png",
                      np.asarray(Image.fromarray(small).resize((35, 30), Image.BICUBIC)))
    return root


def test_the_mean_cost_scale_has_the_mean_lr_area_of_the_range():
    # E[1/s^2] for s ~ U(a, b) by the midpoint rule, against the closed form behind sqrt(a*b)
    a, b, n = 1.5, 8.0, 200_000
    s = a + (b - a) * (np.arange(n) + 0.5) / n
    assert 1 / device_train.mean_cost_scale(a, b) ** 2 == pytest.approx(float(np.mean(1 / s ** 2)), rel=1e-6)
    assert device_train.mean_cost_scale(4, 4) == 4


def test_the_plan_fills_the_time_with_whole_epochs():
    cfg = device_train.recipe_config(*device_train.recipe(False, Path("data/device")))
    plan = device_train.plan(179, cfg, step_s=0.2, train_s=400)
    # the device recipe: 179 photographs x 11 repeats in batches of 16
    assert plan["steps_per_epoch"] == math.ceil(179 * 11 / 16) == 124
    assert plan["epochs"] == math.floor(device_train.PLAN_FILL * 400 / (0.2 * 124))
    assert plan["epochs"] * 124 * 0.2 <= 400 < (plan["epochs"] + 2) * 124 * 0.2 / device_train.PLAN_FILL
    assert plan["warmup_steps"] == min(device_train.MAX_WARMUP_STEPS,
                                       math.ceil(device_train.WARMUP_FRACTION * plan["planned_steps"]))
    slow = device_train.plan(179, cfg, step_s=60, train_s=400)
    assert slow["epochs"] == 1 and slow["warmup_steps"] == math.ceil(device_train.WARMUP_FRACTION * 124)


def test_the_device_recipe_is_the_bundled_one_at_the_papers_crop_and_batch():
    config, overrides = device_train.recipe(False, Path("/data/pack"))
    cfg = device_train.recipe_config(config, overrides)
    assert config.name == "bundled-edsr-baseline.yaml"
    assert cfg["train_dataset"]["wrapper"]["args"] == {"inp_size": 256, "scale_min": 1.5, "scale_max": 8,
                                                        "augment": True}
    assert cfg["train_dataset"]["batch_size"] == 16 and cfg["optimizer"]["args"]["lr"] == 1e-4
    assert cfg["bf16"] is True  # the GPU's bf16 autocast, whatever the recipe's CPU steps use
    assert cfg["train_dataset"]["dataset"]["args"]["root_path"] == "/data/pack/train"
    assert cfg["val_dataset"]["dataset"]["args"] == {"root_path": "/data/pack/val", "cache": "in_memory"}
    assert Path(cfg["init_from"]) == ROOT / "weights" / "continuoussr-edsr-baseline.pth"


def test_the_val_curve_is_read_from_train_logs():
    log = ("model continuous-gaussian (5.54 M parameters) on cuda\n"
           "epoch 0 (the weights of weights/x.pth), val PSNR x4 29.13 dB (best) [79.1 s]\n"
           "epoch 1/12: loss 0.0288, lr 3e-05, val PSNR x4 29.10 dB [1718.4 s]\n"
           "epoch 2/12: loss 0.0281, lr 2.95e-05, val PSNR x2 33.50, x4 29.15 dB (best) [1404.0 s]\n"
           "epoch 3/12: loss 0.0280, lr 2.9e-05 [10.0 s]\n")
    assert device_train.val_curve(log) == [{"epoch": 0, "val_psnr": {"x4": 29.13}},
                                           {"epoch": 1, "val_psnr": {"x4": 29.10}},
                                           {"epoch": 2, "val_psnr": {"x2": 33.50, "x4": 29.15}}]


@pytest.mark.parametrize("argv, message", [
    (["--minutes", "-1"], "--minutes must be a positive number"),
    (["--minutes", "nan"], "--minutes must be a positive number"),
    (["--data", "{missing}"], "holds no images"),
    (["--backend", "splat9"], "unknown rasterizer backend 'splat9'"),
    ([], "no CUDA device"),
])
def test_bad_options_exit_2_with_one_line_before_any_work(argv, message, photos, tmp_path, capsys):
    if message == "no CUDA device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv = [a.format(missing=tmp_path / "nothing") for a in argv]
    smoke = [] if message == "no CUDA device" else ["--cpu-smoke"]
    code = device_train.main([*smoke, "--data", str(photos), "--run", str(tmp_path / "run"),
                              "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def test_export_keeps_the_weights_in_fp16_and_drops_the_optimizer(tmp_path):
    cfg = {"name": "continuous-gaussian", "args": {"encoder_spec": {
        "name": "edsr-baseline", "args": {"no_upsampling": False, "scale": 4, "n_resblocks": 1}}}}
    model = models.make(cfg)
    optimizer = torch.optim.Adam(model.parameters())
    full = {"model": models.model_payload(cfg, model), "optimizer": optimizer.state_dict(), "epoch": 3,
            "step": 30, "config": {"seed": 0}, "rng": {"torch": torch.get_rng_state()}, "best_psnr": 20.5}
    models.save_checkpoint(full, tmp_path / "best.pth")
    device_train.export_checkpoint(tmp_path / "best.pth", tmp_path / "slim.pth")
    slim = models.load_checkpoint(tmp_path / "slim.pth")
    assert set(slim) == {"model", "epoch", "step", "config", "best_psnr"} and slim["epoch"] == 3
    for key, value in model.state_dict().items():
        assert slim["model"]["sd"][key].dtype == torch.float16
        torch.testing.assert_close(slim["model"]["sd"][key].float(), value.half().float())
    restored = models.model_from_checkpoint(slim)  # what scripts/bundle_model.py does with it
    assert next(restored.parameters()).dtype == torch.float32


@pytest.mark.slow
def test_cpu_smoke_trains_exports_and_resumes_without_tensorboardx(photos, tmp_path):
    """As on a stock CUDA image, where tensorboardX is missing; the second command resumes the run folder."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "tensorboardX.py").write_text("raise ImportError('tensorboardX is not installed (test)')\n")
    env = dict(os.environ, PYTHONPATH=str(blocked), TQDM_DISABLE="1")
    run, records = tmp_path / "run", []
    for call, minutes in enumerate(("2.5", "1.5")):  # the first times the step before training; resuming does not
        out = tmp_path / f"out{call}"
        proc = subprocess.run([sys.executable, str(SCRIPTS / "device_train.py"), "--cpu-smoke", "--data",
                               str(photos), "--run", str(run), "--out", str(out), "--minutes", minutes],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        files = sorted(p for p in out.iterdir())
        assert {p.name for p in files} == {"best.pth", "last.pth", "log.txt", "config.yaml", "device_train.json"}
        assert len(files) <= MAX_FILES and all(p.stat().st_size <= MAX_FILE_BYTES for p in files)
        records.append(json.loads((out / "device_train.json").read_text()))
    first, second = records
    assert not first["resumed"] and second["resumed"] and "plan" not in second
    assert first["plan"]["epochs"] >= 1 and first["train_exit"] == 0 and first["val_curve"]
    assert "TensorBoard logging is off" in (tmp_path / "out0" / "log.txt").read_text()
    # the second command resumes the run, or says that the first trained every planned epoch already
    assert (re.search(r"resumed (after|at) epoch \d+", (tmp_path / "out1" / "log.txt").read_text())
            or "train.py: nothing left to do" in proc.stdout)
    last = models.load_checkpoint(tmp_path / "out1" / "last.pth")
    assert "optimizer" not in last and last["step"] >= first["plan"]["steps_per_epoch"]
    assert last["config"]["warmup_steps"] == first["plan"]["warmup_steps"]


def test_pack_keeps_val_exact_train_close_and_refuses_a_pack_over_its_bound(photos, tmp_path, capsys):
    out = tmp_path / "pack"
    assert pack_device_data.main(["--photos", str(photos), "--out", str(out)]) == 0
    summary = json.loads((out / pack_device_data.PACK_NAME).read_text())
    assert sorted(p.name for p in (out / "train").iterdir()) == [f"img{i}.jpg" for i in range(4)]
    for record in summary["files"]["val"]:  # lossless: the very pixels
        packed = np.asarray(Image.open(out / record["file"]).convert("RGB"))
        assert np.array_equal(packed, np.asarray(Image.open(photos / "val" / record["source"]).convert("RGB")))
        assert record["psnr_db"] is None
    for record in summary["files"]["train"]:
        packed = np.asarray(Image.open(out / record["file"]).convert("RGB"), dtype=np.float64)
        original = np.asarray(Image.open(photos / "train" / record["source"]).convert("RGB"), dtype=np.float64)
        psnr = 10 * math.log10(255 ** 2 / np.mean((packed - original) ** 2))
        assert record["psnr_db"] == pytest.approx(psnr, abs=0.01) and psnr > 40
    assert summary["train_min_psnr_db"] == min(r["psnr_db"] for r in summary["files"]["train"])
    capsys.readouterr()
    assert pack_device_data.main(["--photos", str(photos), "--out", str(out)]) == 2  # exists: not overwritten
    small = tmp_path / "small"
    assert pack_device_data.main(["--photos", str(photos), "--out", str(small), "--max-mib", "0.001"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "exists" in err[0] and "over --max-mib" in err[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pack"]  # nothing half-written
