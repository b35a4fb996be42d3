"""scripts/benchmark.py: the pairs count (drawn pairs against the float64 brute force, the kernels' work from the
footprint plan) and its usage errors."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rasterizer import footprints, project
from rasterizer.brute_force import drawn_alpha, sigma_brute_force

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "benchmark.py"
SMOKE_CASE = "smoke-6x8-to-12x16"


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_drawn_pairs_are_the_brute_force_count():
    bench = load_script()
    lr_h, lr_w, height, width, batch = bench.RASTER_CASES[SMOKE_CASE]
    xy, chol, colour = bench.make_field(lr_h, lr_w, height, width, batch, torch.device("cpu"))
    expected = int((drawn_alpha(*sigma_brute_force(xy, chol, height, width)) > 0).sum())
    assert bench.drawn_pairs(project(xy, chol, colour, height, width), height, width) == expected > 0


@pytest.mark.slow
def test_pairs_mode_counts_each_field(tmp_path):
    out = tmp_path / "pairs.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "pairs", "--device", "cpu", "--cases", SMOKE_CASE,
                           "--scales", "1.5", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    assert [r["field"] for r in rows] == [SMOKE_CASE, "bundled model x1.5"]
    bench = load_script()
    lr_h, lr_w, height, width, batch = bench.RASTER_CASES[SMOKE_CASE]
    xy, chol, colour = bench.make_field(lr_h, lr_w, height, width, batch, torch.device("cpu"))
    g = project(xy, chol, colour, height, width)
    assert rows[0]["forward_evaluated"] == footprints.evaluated_pairs(g, height, width)
    assert rows[0]["before"]["forward_ratio"] > 10  # the committed count of the window kernels
    assert all(r["drawn"] > 0 and r["forward_ratio"] == r["forward_evaluated"] / r["drawn"] for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("options", [["pairs", "--scales", "x"], ["pairs", "--cases", "nope"],
                                     ["pairs", "--before", "/nonexistent.json"], ["precision"],
                                     ["precision", "--photos", ".", "--limit", "0"],
                                     ["precision", "--photos", ".", "--crop", "0"], ["model", "--lr", "0x0"],
                                     ["cpu", "--lr-sizes", "64x"], ["model", "--repeats", "-1"]])
def test_bad_options_exit_2_in_one_line(options, tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), *options, "--device", "cpu", "--out", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
