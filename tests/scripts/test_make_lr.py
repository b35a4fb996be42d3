"""scripts/make_lr.py: file layout, modcrop + MATLAB bicubic content, and usage errors (exit code 2)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evaluation.imresize import imresize
from scripts.make_lr import main


@pytest.fixture
def hr_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "HR"
    folder.mkdir()
    images = {"baby": rng.integers(0, 256, (50, 37, 3), dtype=np.uint8),
              "bird": rng.integers(0, 256, (24, 36, 3), dtype=np.uint8)}
    for stem, array in images.items():
        Image.fromarray(array).save(folder / f"{stem}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder, images


def test_writes_benchmark_layout_with_modcrop_and_matlab_bicubic(hr_folder, tmp_path, capsys):
    folder, images = hr_folder
    out = tmp_path / "LR_bicubic"
    assert main(["--hr", str(folder), "--out", str(out), "--scales", "3,2"]) == 0
    assert "wrote 4 LR images" in capsys.readouterr().out
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "X2/babyx2.png", "X2/birdx2.png", "X3/babyx3.png", "X3/birdx3.png"]
    lr = np.asarray(Image.open(out / "X3" / "babyx3.png"))
    assert lr.shape == (16, 12, 3)  # 50x37 → modcrop 48x36 → /3
    np.testing.assert_array_equal(lr, imresize(images["baby"][:48, :36], 1 / 3))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "X2" / "birdx2.png")),
                                  imresize(images["bird"], 1 / 2))


@pytest.mark.parametrize("scales, message", [("2.5", "integers"), ("1", "integers"), ("x", "integers")])
def test_bad_scales_exit_2(hr_folder, tmp_path, capsys, scales, message):
    folder, _ = hr_folder
    assert main(["--hr", str(folder), "--out", str(tmp_path / "o"), "--scales", scales]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_missing_or_empty_folder_exits_2(tmp_path, capsys):
    assert main(["--hr", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["--hr", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no images" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("bad, message", [(b"not a png", "not an image"), (None, "is smaller than the scale 4")])
def test_a_bad_image_after_good_ones_writes_nothing(hr_folder, tmp_path, capsys, bad, message):
    """The folder's last image (sorted) is unreadable or too small: refused before the first LR image is written."""
    folder, _ = hr_folder
    last = folder / "zebra.png"
    last.write_bytes(bad) if bad is not None else Image.fromarray(np.zeros((3, 40, 3), np.uint8)).save(last)
    assert main(["--hr", str(folder), "--out", str(tmp_path / "o")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "o").exists()
