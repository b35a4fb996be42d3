"""scripts/benchmark_viewer.py: one timed view per zoom and method, through the API, in the JSON."""
from __future__ import annotations

import json

import pytest

from conftest import smooth_image
from inference.image_io import write_image

pytest.importorskip("fastapi")  # the viewer's web stack, which a stock GPU image may lack
from scripts.benchmark_viewer import main  # noqa: E402


def test_views_are_timed_and_written(tmp_path, tiny_checkpoint, capsys):
    image, out = tmp_path / "lr.png", tmp_path / "viewer.json"
    write_image(image, smooth_image(20, 30))
    assert main(["--model", str(tiny_checkpoint), "--image", str(image), "--size", "64x48", "--zooms", "4,8",
                 "--repeats", "2", "--warmup", "0", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [(r["zoom"], r["method"], r["view"], r["repeats"]) for r in report["results"]] == [
        (4.0, "sr", [48, 64], 2), (4.0, "bicubic", [48, 64], 2), (8.0, "sr", [48, 64], 2),
        (8.0, "bicubic", [48, 64], 2)]
    assert all(0 < r["min_ms"] <= r["median_ms"] for r in report["results"])
    assert "64x48" in capsys.readouterr().out
