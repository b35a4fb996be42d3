"""scripts/device_check.py: one folder with a log and JSON, every step time-boxed, runnable without the extras."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "device_check.py"
SMOKE_TIMEOUT_S = 600


def load_script():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_cpu_smoke_runs_every_step_without_tensorboardx_or_imageio_ffmpeg(tmp_path):
    """As on a stock CUDA PyTorch image, where those two may be missing: nothing the check runs may need them."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for module in ("tensorboardX", "imageio_ffmpeg"):
        (blocked / f"{module}.py").write_text(f"raise ImportError('{module} is not installed (test)')\n")
    out = tmp_path / "check"
    env = dict(os.environ, PYTHONPATH=str(blocked))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    script = load_script()
    steps = script.steps_for(True, out)
    files = {p.name for p in out.iterdir()}
    assert files == {script.LOG_NAME, script.SUMMARY_NAME} | {s.output for s in steps if s.output}
    summary = json.loads((out / script.SUMMARY_NAME).read_text())
    assert summary["complete"] and summary["mode"] == "cpu-smoke"
    assert [s["name"] for s in summary["steps"]] == [s.name for s in steps]
    assert all(s["status"] == "ok" for s in summary["steps"]), summary["steps"]
    env_step = summary["steps"][0]["environment"]
    assert env_step["tensorboardX"].startswith("missing") and env_step["torch"]
    assert summary["steps"][1]["pytest"].get("failed", 0) == 0
    for step in summary["steps"][2:]:
        assert step["figures"], step["name"]
        json.loads((out / step["output"]).read_text())
    raster = json.loads((out / "raster-triton.json").read_text())["results"]
    assert {(r["backend"], r["mode"]) for r in raster} == {("triton", "forward"), ("triton", "forward+backward")}
    assert [t["measured_ms"] for t in summary["targets"]] == [None] * len(script.TARGETS)  # toy sizes: no figures
    log = (out / script.LOG_NAME).read_text()
    assert all(f"=== {s.name}" in log for s in steps)


def test_a_hanging_step_costs_only_its_own_limit(tmp_path, monkeypatch, capsys):
    script = load_script()
    steps = [script.Step("hangs", [sys.executable, "-c", "import time; time.sleep(60)"], 2),
             script.Step("fails", [sys.executable, "-c", "raise SystemExit(3)"], 10),
             script.Step("passes", [sys.executable, "-c", "print('fine')"], 10)]
    monkeypatch.setattr(script, "steps_for", lambda smoke, out: steps)
    monkeypatch.setattr(sys, "argv", ["device_check.py", "--cpu-smoke", "--out", str(tmp_path / "check")])
    with pytest.raises(SystemExit) as exit_info:
        script.main()
    assert exit_info.value.code == 1
    summary = json.loads((tmp_path / "check" / script.SUMMARY_NAME).read_text())
    assert [(s["name"], s["status"], s["exit_code"]) for s in summary["steps"]] == [
        ("hangs", "timeout", None), ("fails", "failed", 3), ("passes", "ok", 0)]
    assert summary["steps"][0]["seconds"] < 10 and summary["complete"]
    assert "fine" in (tmp_path / "check" / script.LOG_NAME).read_text()
    assert "failed: hangs, fails" in capsys.readouterr().out


def test_the_cuda_plan_fits_the_budget_and_covers_the_gpu_work(tmp_path):
    script = load_script()
    steps = script.steps_for(False, tmp_path)
    assert sum(s.timeout_s for s in steps) <= script.TOTAL_BUDGET_S <= 8 * 60
    assert any(s.command[-2:] == ["-m", "gpu or triton"] for s in steps)
    commands = [" ".join(s.command) for s in steps]
    raster = [c for c in commands if " raster " in c]
    assert {b for c in raster for b in c.split("--backends ")[1].split()[0].split(",")} >= {"torch", "triton"}
    assert all("--backward" in c and ",".join(script.RASTER_CASES) in c for c in raster)
    model = [c for c in commands if " model " in c]
    assert all("edsr-baseline,hat-srx4" in c and "--lr 192x256" in c for c in model)
    assert {c.split("--precision ")[1].split()[0] for c in model} == {"fp32", "bf16"}
    assert {"--backend torch", "--backend triton"} <= {c[c.index("--backend "):].split(" --")[0] for c in commands
                                                       if "benchmark_train" in c}
    assert not any(s.interpret for s in steps)  # on CUDA the kernels are compiled, never interpreted
    photo = [c for c in commands if "benchmark_encode.py" in c]  # the default 1200x900 photo, as demo.py runs it
    assert len(photo) == 1 and "--device cuda" in photo[0] and "--size" not in photo[0]
    bench = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(bench)
    bench.loader.exec_module(module)
    assert set(script.RASTER_CASES) <= set(module.RASTER_CASES)
    lr_h, lr_w, height, width, _ = module.RASTER_CASES["691560g-to-2040x1356"]
    assert 4 * lr_h * lr_w == 691_560 and (height, width) == (1356, 2040)
    assert script.BEFORE_RASTER.exists()  # the committed figures the raster benchmark is compared with


def test_raster_figures_are_set_beside_the_earlier_kernels(tmp_path):
    script = load_script()
    now = [{"case": "262144g-to-2048sq", "backend": "triton", "mode": "forward", "median_ms": 0.5},
           {"case": "262144g-to-2048sq", "backend": "gsplat", "mode": "forward", "median_ms": 1.0},
           {"case": "unknown-case", "backend": "triton", "mode": "forward", "median_ms": 1.0}]
    (tmp_path / "raster-triton.json").write_text(json.dumps({"device": "GPU B", "results": now}))
    then = [{"case": "262144g-to-2048sq", "backend": "triton", "mode": "forward", "median_ms": 3.0}]
    (tmp_path / "before.json").write_text(json.dumps({"device": "GPU A", "results": then}))
    rows = script.before_after(tmp_path, tmp_path / "before.json")
    assert rows == [{"case": "262144g-to-2048sq", "mode": "forward", "before_ms": 3.0, "before_device": "GPU A",
                     "after_ms": 0.5, "after_device": "GPU B", "speedup": 6.0}]
    assert script.before_after(tmp_path / "missing", tmp_path / "before.json") == []


def test_targets_are_read_from_the_benchmark_json(tmp_path):
    script = load_script()
    results = [{"case": "691560g-to-2040x1356", "backend": "triton", "mode": "forward", "median_ms": 0.2},
               {"case": "691560g-to-2040x1356", "backend": "triton", "mode": "forward+backward", "median_ms": 1.5}]
    (tmp_path / "raster-triton.json").write_text(json.dumps({"results": results}))
    rows = script.compare_targets(tmp_path, smoke=False)
    assert [(r["measured_ms"], r["within_target"]) for r in rows[:3]] == [(0.2, True), (1.5, False), (None, None)]
    assert all(r["measured_ms"] is None for r in script.compare_targets(tmp_path, smoke=True))
