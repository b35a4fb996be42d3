"""test.py as a user runs it: the report, --scales, --save-dir, and exit code 2 with one line for bad input."""
from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import models
import utils
from conftest import TINY_MODEL_SPEC, default_sigint, make_tiny_model, reported_lines, smooth_rgb, write_rgb
from evaluation.data import build_dataset, resolve_data_paths
from evaluation.loading import load_model
from evaluation.loop import evaluate
from evaluation.schema import validate_config
from inference.self_ensemble import SelfEnsemble

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "test" / "test-set5-4.yaml"
PAIRED = REPO / "configs" / "test" / "test-set5-4-paired.yaml"


def load_cli():
    """test.py loaded under another name (a module called `test` would clash with Python's own package)."""
    spec = importlib.util.spec_from_file_location("continuoussr_test_cli", REPO / "test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Progress bars off in subprocesses where tqdm allows (the scoring bar is on whatever the environment: the tests
# read past it with reported_lines).
QUIET = {**os.environ, "TQDM_DISABLE": "1"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "test.py"), *args], capture_output=True, text=True,
                          cwd=REPO, env=QUIET, timeout=300)


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


def test_cli_self_ensemble_scores_the_mean_over_the_transforms(benchmark_root, tiny_checkpoint, capsys):
    code = load_cli().main(["--config", str(CONFIG), "--model", str(tiny_checkpoint), "--root", str(benchmark_root),
                            "--workers", "0", "--device", "cpu", "--self-ensemble"])
    out = capsys.readouterr().out
    assert code == 0 and "self-ensemble of 8" in out.splitlines()[0]
    config = resolve_data_paths(yaml.safe_load(CONFIG.read_text()), benchmark_root)
    model = load_model(tiny_checkpoint, torch.device("cpu"))
    scores = {name: evaluate(m, build_dataset(config), validate_config(config), progress=False).psnr[4.0]
              for name, m in (("ensemble", SelfEnsemble(model)), ("plain", model))}
    result = re.search(r"^result: PSNR (\S+) dB", out, re.M)
    assert result and float(result.group(1)) == pytest.approx(np.mean(scores["ensemble"]), abs=1e-4)
    assert abs(np.mean(scores["ensemble"]) - np.mean(scores["plain"])) > 1e-3


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


HR_DIR = Path("benchmark") / "Set5" / "HR"


@pytest.mark.parametrize("case, message", [
    ("empty folder", "no images"),
    ("unknown key", "unknown key 'eval_bsize' in the config"),
    ("scale mismatch", "is x2, but the config's eval_type is x4"),
    ("bad checkpoint", "is not a readable checkpoint"),
    ("text checkpoint", "is not a readable checkpoint"),
    ("empty checkpoint", "is not a readable checkpoint"),
    ("missing checkpoint", "checkpoint not found"),
    ("scales too large", "x8 exceeds the data's x4"),
    ("bad scales", "--scales must be"),
    ("empty scales", "argument --scales: expected a value, got an empty one"),
    ("negative workers", "--workers must be 0 or more, got -1"),
    ("empty output", "img0: at x0.01 its LR 12x12 renders to an empty 0x0 image; use a larger scale"),
    ("output smaller than SSIM's window", "img0: at x1 the 12x12 image less the 1-pixel shave is smaller than "
                                          "SSIM's 11x11 window; it cannot be scored"),
    ("HR too small for SSIM", "tiny: at x4 the 16x16 image less the 4-pixel shave is smaller than SSIM's 11x11 "
                              "window; it cannot be scored"),
    ("paired HR too small for SSIM", "tiny: at x4 the 16x16 image less the 4-pixel shave is smaller than SSIM's "
                                     "11x11 window; it cannot be scored"),
    ("HR smaller than one LR pixel", "cannot score {hr}/speck.png: 3x3 is smaller than one LR pixel at x4 (a test "
                                     "score must cover every image)"),
    ("not an image", "cannot score unreadable image {hr}/text.png"),
    ("truncated image", "cannot read {hr}/cut.png: image file is truncated (a test score must cover every image)"),
])
def test_cli_errors_exit_2_with_one_line(case, message, benchmark_root, tiny_checkpoint, tmp_path, capsys):
    args = {"--config": str(CONFIG), "--model": str(tiny_checkpoint), "--root": str(benchmark_root),
            "--workers": "0", "--save-dir": str(tmp_path / "sr")}
    hr = benchmark_root / HR_DIR
    message = message.format(hr=hr)
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
    elif case == "text checkpoint":  # torch's unpickler fails on it with KeyError: 101
        (tmp_path / "hello.pth").write_text("hello world")
        args["--model"] = str(tmp_path / "hello.pth")
    elif case == "empty checkpoint":
        (tmp_path / "empty.pth").write_bytes(b"")
        args["--model"] = str(tmp_path / "empty.pth")
    elif case == "missing checkpoint":
        args["--model"] = str(tmp_path / "none.pth")
    elif case == "scales too large":
        args["--scales"] = "2,8"
    elif case == "bad scales":
        args["--scales"] = "2,x"
    elif case == "empty scales":
        args["--scales"] = ""
    elif case == "negative workers":
        args["--workers"] = "-1"
    elif case == "empty output":
        args["--scales"] = "0.01,4"
    elif case == "output smaller than SSIM's window":
        args["--scales"] = "1,4"
    elif case == "HR too small for SSIM":
        write_rgb(hr / "tiny.png", smooth_rgb(16, 16))
    elif case == "paired HR too small for SSIM":
        write_rgb(hr / "tiny.png", smooth_rgb(16, 17))
        write_rgb(hr.parent / "LR_bicubic" / "X4" / "tinyx4.png", smooth_rgb(4, 4))
        args["--config"] = str(PAIRED)
    elif case == "HR smaller than one LR pixel":
        write_rgb(hr / "speck.png", smooth_rgb(3, 3))
    elif case == "not an image":
        (hr / "text.png").write_text("hello world")
    elif case == "truncated image":
        whole = write_rgb(hr / "cut.png", smooth_rgb(40, 40)).read_bytes()
        (hr / "cut.png").write_bytes(whole[:len(whole) // 2])
    code = load_cli().main([item for pair in args.items() for item in pair])
    captured = capsys.readouterr()
    assert code == 2
    lines = reported_lines(captured.err)
    assert len(lines) == 1 and lines[0].startswith("test.py: error: ") and message in lines[0], captured.err
    assert "skipping" not in captured.err  # a hard error, not a warning
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (tmp_path / "sr").exists()


def test_cli_refuses_an_image_too_small_to_score_before_loading_the_model(benchmark_root, tmp_path):
    write_rgb(benchmark_root / HR_DIR / "tiny.png", smooth_rgb(16, 16))
    (tmp_path / "hello.pth").write_text("hello world")  # never read: the data is refused first
    done = run_cli("--config", str(CONFIG), "--model", str(tmp_path / "hello.pth"), "--root", str(benchmark_root),
                   "--save-dir", str(tmp_path / "sr"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["test.py: error: tiny: at x4 the 16x16 image less the 4-pixel shave is "
                                        "smaller than SSIM's 11x11 window; it cannot be scored"]
    assert not (tmp_path / "sr").exists()


@pytest.fixture(scope="module")
def overflowing_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint whose colour layer overflowed to infinity (a diverged run)."""
    model = make_tiny_model()
    with torch.no_grad():
        model.mlp.layers[-1].weight.mul_(1e38)
    path = tmp_path_factory.mktemp("overflow") / "overflow.pth"
    models.save_checkpoint({"model": models.model_payload(TINY_MODEL_SPEC, model)}, path)
    return path


class NaNOnRealImages(torch.nn.Module):
    """A model that runs (its load-time dry run on a blank image passes) but renders NaN on the test images."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def encode(self, inp: torch.Tensor):
        return self.model.encode(inp)

    def render(self, field, **kwargs) -> torch.Tensor:
        return self.model.render(field, **kwargs) * float("nan")


def test_a_non_finite_output_is_an_error_never_a_nan_score(benchmark_root, tiny_sr_model, tmp_path, monkeypatch,
                                                           capsys):
    cli = load_cli()
    monkeypatch.setattr(cli, "load_model",
                        lambda path, device, self_ensemble, precision: NaNOnRealImages(tiny_sr_model))
    code = cli.main(["--config", str(CONFIG), "--model", "any.pth", "--root", str(benchmark_root), "--workers", "0",
                     "--device", "cpu", "--save-dir", str(tmp_path / "sr")])
    captured = capsys.readouterr()
    assert code == utils.EXIT_FAILURE and captured.out == ""
    assert re.fullmatch(r"test.py: error: img0: the model's output at x4 holds [\d,]+ non-finite values \(NaN or "
                        r"infinity\); no score is given for a non-finite output", "\n".join(reported_lines(captured.err)))
    assert not (tmp_path / "sr").exists()  # no black image written


@pytest.mark.slow
def test_cli_a_checkpoint_with_non_finite_weights_is_one_line_exit_2(benchmark_root, overflowing_checkpoint):
    done = run_cli("--config", str(CONFIG), "--model", str(overflowing_checkpoint), "--root", str(benchmark_root),
                   "--device", "cpu")
    assert done.returncode == utils.EXIT_USAGE and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert len(reported_lines(done.stderr)) == 1 and "non-finite" in done.stderr


def test_a_signal_while_an_image_is_written_leaves_no_partial_file(benchmark_root, tiny_checkpoint, tmp_path,
                                                                  monkeypatch, capsys):
    from PIL import Image

    real_save, calls = Image.Image.save, []

    def save_then_terminate(self, fp, *args, **kwargs):  # SIGTERM arrives half-way through the second image
        calls.append(1)
        if len(calls) == 2:
            fp.write(b"\x89PNG half an image")
            raise utils.Terminated("terminated by signal 15")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_then_terminate)
    save_dir = tmp_path / "sr"
    code = load_cli().main(["--config", str(CONFIG), "--model", str(tiny_checkpoint), "--root", str(benchmark_root),
                            "--workers", "0", "--device", "cpu", "--save-dir", str(save_dir)])
    captured = capsys.readouterr()
    assert code == utils.EXIT_INTERRUPTED and captured.out == ""
    assert reported_lines(captured.err) == ["test.py: interrupted; no scores were reported"]
    assert sorted(p.name for p in save_dir.rglob("*") if p.is_file()) == ["img0.png"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("workers, whole_group", [(0, False), (2, False), (2, True)],
                         ids=["main process", "main process with workers", "group with workers"])
@pytest.mark.slow
def test_cli_signal_mid_run_exits_130_with_one_line_and_no_partial_file(signum, workers, whole_group,
                                                                        tiny_checkpoint, tmp_path):
    """The signal to test.py alone (`kill PID`), or to its whole process group (Ctrl-C, `kill -- -PGID`), loader
    workers too. With workers and the signal to test.py alone, one run in ten to twenty used to print a worker's
    traceback as well (multiprocessing's resource_sharer: the main process hung up mid fd-passing); see
    utils.worker_stops_cleanly and tests/test_utils.py for the deterministic case."""
    hr = tmp_path / "load" / HR_DIR
    for i in range(200):  # long enough to be stopped mid-way
        write_rgb(hr / f"img{i:03d}.png", smooth_rgb(64, 64, seed=i))
    save_dir = tmp_path / "sr"
    process = subprocess.Popen([sys.executable, str(REPO / "test.py"), "--config", str(CONFIG), "--model",
                                str(tiny_checkpoint), "--root", str(tmp_path / "load"), "--device", "cpu",
                                "--workers", str(workers), "--save-dir", str(save_dir)], cwd=REPO, env=QUIET,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(save_dir.glob("x4/img*.png")) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        if whole_group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == utils.EXIT_INTERRUPTED and out == ""
    assert "Traceback" not in err and reported_lines(err) == ["test.py: interrupted; no scores were reported"]
    written = sorted(p.name for p in save_dir.rglob("*") if p.is_file())
    assert 1 <= len(written) < 200 and all(re.fullmatch(r"img\d{3}\.png", n) for n in written), written


def test_without_model_the_bundled_model_is_scored(benchmark_root, tiny_sr_model, monkeypatch, capsys):
    cli = load_cli()
    loaded = []
    monkeypatch.setattr(cli, "load_model",
                        lambda path, device, self_ensemble, precision: loaded.append(path) or tiny_sr_model)
    code = cli.main(["--config", str(CONFIG), "--root", str(benchmark_root), "--workers", "0", "--device", "cpu"])
    assert code == 0 and loaded == [str(REPO / "weights" / "continuoussr-edsr-baseline.pth")]
    assert "result: PSNR" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [([], "the following arguments are required: --config"),
                                           (["--config", "x.yaml", "--bogus"], "unrecognized arguments: --bogus"),
                                           (["--config", "x.yaml", "--workers", "two"], "--workers: invalid int")])
def test_argument_errors_are_one_line_exit_2(argv, message, capsys):
    code = load_cli().main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("test.py: error: ") and message in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_gpu_flag_without_cuda_exits_2_with_one_line(benchmark_root, tiny_checkpoint, capsys):
    code = load_cli().main(["--config", str(CONFIG), "--model", str(tiny_checkpoint), "--root", str(benchmark_root),
                            "--gpu", "0"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.strip().splitlines() == ["test.py: error: --gpu 0: CUDA is not available here "
                                                 f"(torch {torch.__version__}); use --device cpu"]
