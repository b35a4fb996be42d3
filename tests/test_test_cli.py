"""test.py as a user runs it: the report, --scales, --save-dir, and exit code 2 with one line for bad input."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from evaluation.protocol import build_dataset, evaluate, load_model, resolve_data_paths, validate_config

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "test" / "test-set5-4.yaml"
PAIRED = REPO / "configs" / "test" / "test-set5-4-paired.yaml"


def load_cli():
    """test.py loaded under another name (a module called `test` would clash with Python's own package)."""
    spec = importlib.util.spec_from_file_location("continuoussr_test_cli", REPO / "test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "test.py"), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


@pytest.mark.slow
def test_cli_reports_per_image_and_mean_scores(benchmark_root, tiny_checkpoint, tmp_path):
    done = run_cli("--config", str(CONFIG), "--model", str(tiny_checkpoint), "--root", str(benchmark_root),
                   "--workers", "0", "--device", "cpu", "--save-dir", str(tmp_path / "sr"))
    assert done.returncode == 0, done.stderr
    config = resolve_data_paths(yaml.safe_load(CONFIG.read_text()), benchmark_root)
    expected = evaluate(load_model(tiny_checkpoint, torch.device("cpu")), build_dataset(config),
                        validate_config(config), progress=False)
    for i, name in enumerate(["img0", "img1", "img2"]):
        line = re.search(rf"^{name}\s+(\S+) / (\S+)$", done.stdout, re.M)
        assert line, done.stdout
        assert float(line.group(1)) == pytest.approx(expected.psnr[4.0][i], abs=1e-4)
        assert float(line.group(2)) == pytest.approx(expected.ssim[4.0][i], abs=1e-4)
    result = re.search(r"^result: PSNR (\S+) dB, SSIM (\S+) at x4 over 3 images", done.stdout, re.M)
    assert result and float(result.group(1)) == pytest.approx(np.mean(expected.psnr[4.0]), abs=1e-4)
    assert sorted(p.name for p in (tmp_path / "sr" / "x4").iterdir()) == ["img0.png", "img1.png", "img2.png"]


def test_cli_missing_data_folder_exits_2_with_one_line(tmp_path, tiny_checkpoint):
    done = run_cli("--config", str(CONFIG), "--model", str(tiny_checkpoint), "--root", str(tmp_path / "nowhere"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"test.py: error: image folder not found: {tmp_path / 'nowhere' / 'benchmark' / 'Set5' / 'HR'}"]
    assert done.stdout == ""


def write_config(tmp_path: Path, source: Path, **changes) -> Path:
    config = yaml.safe_load(source.read_text())
    config.update(changes)
    path = tmp_path / source.name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("case, message", [
    ("empty folder", "no images"),
    ("unknown key", "unknown key 'eval_bsize' in the config"),
    ("scale mismatch", "is x2, but the config's eval_type is x4"),
    ("bad checkpoint", "is not a readable checkpoint"),
    ("missing checkpoint", "checkpoint not found"),
    ("scales too large", "x8 exceeds the data's x4"),
    ("bad scales", "--scales must be"),
])
def test_cli_errors_exit_2_with_one_line(case, message, benchmark_root, tiny_checkpoint, tmp_path, capsys):
    args = {"--config": str(CONFIG), "--model": str(tiny_checkpoint), "--root": str(benchmark_root),
            "--workers": "0"}
    if case == "empty folder":
        (tmp_path / "data" / "benchmark" / "Set5" / "HR").mkdir(parents=True)
        args["--root"] = str(tmp_path / "data")
    elif case == "unknown key":
        args["--config"] = str(write_config(tmp_path, CONFIG, eval_bsize=30000))
    elif case == "scale mismatch":
        config = yaml.safe_load(PAIRED.read_text())
        config["test_dataset"]["dataset"]["args"]["root_path_1"] = "benchmark/Set5/LR_bicubic/X2"
        (tmp_path / "mismatch.yaml").write_text(yaml.safe_dump(config))
        args["--config"] = str(tmp_path / "mismatch.yaml")
    elif case == "bad checkpoint":
        (tmp_path / "bad.pth").write_text("not a checkpoint")
        args["--model"] = str(tmp_path / "bad.pth")
    elif case == "missing checkpoint":
        args["--model"] = str(tmp_path / "none.pth")
    elif case == "scales too large":
        args["--scales"] = "2,8"
    elif case == "bad scales":
        args["--scales"] = "2,x"
    code = load_cli().main([item for pair in args.items() for item in pair])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("test.py: error: ") and message in lines[0], captured.err
    assert "Traceback" not in captured.err and captured.out == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_gpu_flag_without_cuda_exits_2_with_one_line(benchmark_root, tiny_checkpoint, capsys):
    code = load_cli().main(["--config", str(CONFIG), "--model", str(tiny_checkpoint), "--root", str(benchmark_root),
                            "--gpu", "0"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.strip().splitlines() == ["test.py: error: --gpu 0: CUDA is not available here "
                                                 f"(torch {torch.__version__}); use --device cpu"]
