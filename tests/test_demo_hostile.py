"""demo.py given hostile or clumsy input, as a user would give it: every case ends with exit 2 (1 for a failure
of the work itself, 130 for a signal), exactly one line on stderr, no traceback, and no file left behind.

Most cases run through main(argv) (fast); each class of failure also runs once as a real process.
"""
from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import demo
import hostile
import models
from conftest import TINY_MODEL_SPEC, default_sigint, make_tiny_model, smooth_image
from inference.image_io import MAX_INPUT_PIXELS, write_image

ROOT = Path(__file__).resolve().parents[1]
LR_H, LR_W = 12, 16


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def left_behind(folder: Path, keep: set[Path]) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p not in keep)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_checkpoint) -> dict[str, Path]:
    """Good and hostile inputs, made once; each test writes to its own tmp_path/out, which must stay empty."""
    folder = tmp_path_factory.mktemp("in")
    write_image(folder / "good.png", smooth_image(LR_H, LR_W))
    good = models.load_checkpoint(tiny_checkpoint)["model"]
    nan = copy.deepcopy(good)
    first = next(iter(nan["sd"]))
    nan["sd"][first] = torch.full_like(nan["sd"][first], float("nan"))
    narrow = copy.deepcopy(TINY_MODEL_SPEC)
    narrow["args"]["encoder_spec"]["args"]["n_feats"] = 32
    x2 = copy.deepcopy(TINY_MODEL_SPEC)
    x2["args"]["encoder_spec"]["args"]["scale"] = 2
    negative = copy.deepcopy(TINY_MODEL_SPEC)
    negative["args"]["encoder_spec"]["args"]["n_resblocks"] = -3
    return {
        "good": folder / "good.png", "ckpt": tiny_checkpoint,
        "bomb": hostile.png_header_only(folder / "bomb.png", 100_000, 100_000),
        "truncated_huge": hostile.png_truncated(folder / "trunc.png", 40_000, 40_000),
        "valid_huge": hostile.png_valid_bilevel(folder / "huge.png", 20_000, 20_000),
        "text_ckpt": hostile.text_file(folder / "a.pth", "hello world"),
        "text_ckpt2": hostile.text_file(folder / "b.pth", "this is not a checkpoint"),
        "empty_ckpt": hostile.text_file(folder / "c.pth", ""),
        "tensor_ckpt": hostile.checkpoint(folder / "d.pth", torch.zeros(3)),
        "sd_tensor": hostile.checkpoint(folder / "e.pth", {"model": {**good, "sd": torch.zeros(3)}}),
        "no_name": hostile.checkpoint(folder / "f.pth", {"model": {"args": {}, "sd": {}}}),
        "narrow": hostile.checkpoint(folder / "g.pth", {"model": {**good, "args": narrow["args"]}}),
        "x2_encoder": hostile.checkpoint(folder / "h.pth", {"model": {**good, "args": x2["args"]}}),
        "negative": hostile.checkpoint(folder / "i.pth", {"model": {**good, "args": negative["args"]}}),
        "nan_weights": hostile.checkpoint(folder / "j.pth", {"model": nan}),
        "unknown_model": hostile.checkpoint(folder / "k.pth", {"model": {**good, "name": "no-such-model"}}),
    }


IMAGE_CASES = [("bomb", "--scale", "2"), ("truncated_huge", "--scale", "2"), ("valid_huge", "--scale", "2"),
               ("valid_huge", "--size", "64x64")]
CHECKPOINT_CASES = ["text_ckpt", "text_ckpt2", "empty_ckpt", "tensor_ckpt", "sd_tensor", "no_name", "narrow",
                    "x2_encoder", "negative", "nan_weights", "unknown_model"]
OPTION_CASES = [
    ["--zoom", "1:1e5:2"], ["--zoom", "1:1e300:2"], ["--zoom", "1e-300:1:2"], ["--zoom", "1:2:0"],
    ["--zoom", "1:2:1000000000"], ["--scale", "0"], ["--scale", "nan"], ["--scale", "1e300"], ["--scale", "4,"],
    ["--scale", "1e-9"], ["--size", "0x10"], ["--size", "10"], ["--scale", "2", "--size", "4x4"],
    ["--scale", "2", "--tile", "-1"], ["--scale", "2", "--device", "tpu"], ["--scale", "2", "--gpu", "-1"],
    ["--scale", "2", "--backend", "bogus"], ["--scale", "2", "--max-pixels", "0"], ["--focus", "1,1", "--scale", "2"],
    ["--zoom", "1:2:2", "--self-ensemble"],
]


def run(capsys, *argv) -> tuple[int, str]:
    code = demo.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, out_dir: Path, expected_code: int = 2) -> None:
    assert code == expected_code, err
    assert len(lines(err)) == 1 and err.startswith("demo.py: error: ") and "Traceback" not in err, err
    assert not out_dir.exists() or not any(out_dir.rglob("*")), list(out_dir.rglob("*"))


@pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda c: "-".join(c))
def test_images_too_large_are_refused_from_their_header(capsys, tmp_path, inputs, case):
    name, *target = case
    code, err = run(capsys, "--input", inputs[name], "--output", tmp_path / "out" / "sr.png", *target,
                    "--model", inputs["ckpt"])
    assert_refused(code, err, tmp_path / "out")
    assert "pixels" in err or "too large" in err


def test_a_folder_run_skips_an_oversized_image_and_goes_on(capsys, tmp_path, inputs):
    code, err = run(capsys, "-q", "--input", inputs["good"].parent, "--output", tmp_path / "out", "--scale", "2",
                    "--model", inputs["ckpt"])
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]
    assert all(line.startswith("warning: skipping") for line in lines(err)) and "Traceback" not in err


@pytest.mark.parametrize("name", CHECKPOINT_CASES)
def test_files_that_are_not_usable_checkpoints_are_one_line(capsys, tmp_path, inputs, name):
    code, err = run(capsys, "--input", inputs["good"], "--output", tmp_path / "out" / "sr.png", "--scale", "2",
                    "--model", inputs[name])
    assert_refused(code, err, tmp_path / "out")
    assert "}}}}" not in err and "None" not in err


@pytest.mark.parametrize("options", OPTION_CASES, ids=" ".join)
def test_bad_options_are_refused_before_any_work(capsys, tmp_path, inputs, options):
    suffix = ".gif" if "--zoom" in options else ".png"
    code, err = run(capsys, "--input", inputs["good"], "--output", tmp_path / "out" / f"o{suffix}", *options,
                    "--model", inputs["ckpt"])
    assert_refused(code, err, tmp_path / "out")


@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_input_or_output_is_not_the_current_folder(capsys, tmp_path, inputs, value):
    code, err = run(capsys, "--input", value, "--output", tmp_path / "out", "--scale", "2", "--model", inputs["ckpt"])
    assert_refused(code, err, tmp_path / "out")
    code, err = run(capsys, "--input", inputs["good"], "--output", value, "--scale", "2", "--model", inputs["ckpt"])
    assert code == 2 and len(lines(err)) == 1 and "empty" in err


def test_a_model_whose_render_is_not_finite_writes_nothing(capsys, tmp_path, inputs, monkeypatch):
    """Finite weights can still overflow: the render is checked, and a NaN image is an error, not a black file."""
    model = make_tiny_model()
    monkeypatch.setattr(demo, "load_model", lambda path, device, precision: model)
    monkeypatch.setattr(type(model), "render", lambda self, field, **kw: torch.full((1, 3, 24, 32), float("nan")))
    code, err = run(capsys, "-q", "--input", inputs["good"], "--output", tmp_path / "out" / "sr.png", "--scale", "2")
    assert_refused(code, err, tmp_path / "out", expected_code=1)
    assert "non-finite" in err


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs (root only): a real full disk. Skips where mounting is not allowed."""
    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    (mount / "filler").write_bytes(b"\0" * 62_000)  # a few kB left: less than any output here
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.slow
@pytest.mark.parametrize("output", ["sr.png", "zoom.gif", "zoom.mp4"])
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, inputs, full_disk, output):
    options = ["--scale", "8"] if output.endswith(".png") else ["--zoom", "4:8:6"]
    done = subprocess.run([sys.executable, "demo.py", "-q", "--input", inputs["good"], "--output",
                           full_disk / output, *options, "--model", inputs["ckpt"]],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert len(lines(done.stderr)) == 1 and ("No space left" in done.stderr or "disk" in done.stderr), done.stderr
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


@pytest.mark.slow
def test_each_class_as_a_program(tmp_path, inputs):
    """One case of each class through a real process: exit code, one line, no traceback, nothing written."""
    out = tmp_path / "out"
    cases = [(["--input", inputs["bomb"], "--scale", "2", "--model", inputs["ckpt"]], 2),
             (["--input", inputs["good"], "--scale", "2", "--model", inputs["text_ckpt"]], 2),
             (["--input", inputs["good"], "--scale", "2", "--model", inputs["nan_weights"]], 2),
             (["--input", inputs["good"], "--zoom", "1:1e5:2", "--model", inputs["ckpt"]], 2)]
    for argv, expected in cases:
        suffix = ".gif" if "--zoom" in argv else ".png"
        done = subprocess.run([sys.executable, "demo.py", *map(str, argv), "--output", str(out / f"o{suffix}")],
                              cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == expected, done.stderr
        assert len(lines(done.stderr)) == 1 and "Traceback" not in done.stderr, done.stderr
        assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("kind", ["folder", "zoom"])
def test_a_signal_leaves_no_partial_file(tmp_path, inputs, sig, kind):
    """A signal while outputs are being written: exit 130, one line, no traceback, no temporary left."""
    folder = tmp_path / "many"
    for i in range(40):
        write_image(folder / f"img{i:02d}.png", smooth_image(48, 64, seed=i))
    target = tmp_path / "out" if kind == "folder" else tmp_path / "out" / "zoom.gif"
    argv = (["--input", folder, "--output", target, "--scale", "6"] if kind == "folder" else
            ["--input", folder / "img00.png", "--output", target, "--zoom", "1:12:400"])
    process = subprocess.Popen([sys.executable, "demo.py", "-q", *map(str, argv), "--model", str(inputs["ckpt"])],
                               cwd=ROOT, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    # wait until the work is under way: the first image written, or the video's temporary file opened
    started = (lambda: any((tmp_path / "out").glob("*.png"))) if kind == "folder" else (
        lambda: any((tmp_path / "out").glob(".zoom.*")))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not started():
        time.sleep(0.05)
    time.sleep(0.2)  # mid-way through a write or a render
    process.send_signal(sig)
    err = process.communicate(timeout=60)[1]
    assert process.returncode == 130, err
    assert len(lines(err)) == 1 and "interrupted" in err and "Traceback" not in err, err
    leftovers = [p.name for p in (tmp_path / "out").rglob(".*")] if (tmp_path / "out").exists() else []
    assert leftovers == [], leftovers
    if kind == "zoom":
        assert not target.exists()


def test_the_input_pixel_limit_is_what_the_header_check_uses(tmp_path):
    """The limit is a named constant, and an image just above it is refused without reading its pixels."""
    from inference.image_io import ImageError, image_size

    side = int(MAX_INPUT_PIXELS ** 0.5) + 1
    path = hostile.png_header_only(tmp_path / "edge.png", side, side)
    with pytest.raises(ImageError, match="above the limit"):
        image_size(path)
    small = hostile.png_header_only(tmp_path / "small.png", 7, 5)
    assert image_size(small) == (5, 7) and os.path.getsize(small) < 100
