"""The one command to run first on a CUDA machine: environment, GPU tests and the benchmarks, in one folder.

    python scripts/device_check.py [--out DIR]      # on a CUDA machine: at most 8 minutes
    python scripts/device_check.py --cpu-smoke      # every step at toy sizes on the CPU (CI)

Run it on an NVIDIA H100 where one is available: the official code's figures (`TARGETS`) were measured on one,
so only there do the two compare on the same GPU. It runs the GPU tests (`pytest -m "gpu or triton"`), the
raster benchmark (the Triton kernels' figures beside those of the kernels they replaced, read from
`BEFORE_RASTER`: the committed JSON of an earlier check, on the device it names; and torch's), the model
benchmark with the encode in fp32 and in bf16, the training step's benchmark with each backend, and a
1200x900 photo encoded as demo.py does it (scripts/benchmark_encode.py: what a megapixel costs on this GPU).

Each step runs in its own process with a time limit (`STEPS`), so a failing or hanging step costs only its own
share; the whole check stays within `TOTAL_BUDGET_S`. Everything goes into one folder (default
benchmarks/device-check-<cuda|cpu-smoke>-<date>): `device_check.log` (every step's output), `device_check.json`
(environment, each step's status, time and parsed summary, the targets below next to the measured figures; it is
rewritten after every step, so an interrupted check keeps what it measured) and the benchmark scripts' own JSON
files. The targets are figures for an H100 beside the official code's on one: read them, they are never
asserted. Exit status 0 if every step passed, 1 if one failed or ran out of time, 2 on bad options.
It needs only a stock CUDA PyTorch image (torch, triton, numpy, pillow, pyyaml, tqdm, imageio, pytest).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from entry_point import OneLineParser  # noqa: E402  (the standard library only)
TOTAL_BUDGET_S = 470  # under 8 minutes, with room for process start-up and the final write
LOG_NAME, SUMMARY_NAME = "device_check.log", "device_check.json"
LOG_TAIL_CHARS = 4000  # of a failed step's output, kept in the summary too
MIN_STEP_S = 1  # a step with less time than this left in the budget is skipped
# The limit of a step that runs the Triton kernels through the interpreter (the CPU smoke test: numpy, one
# Python step per footprint pixel), in place of its CUDA limit.
INTERPRETED_STEP_S = 150
RASTER_CASES = ["691560g-to-2040x1356", "262144g-to-2048sq", "196608g-to-1024x768", "train-b16-48sq-to-192sq"]
MODEL_LR = "192x256"  # LR 256x192 (width x height), as H x W
SMOKE_PHOTO = "48x36"  # the photo encode's size in the CPU smoke test (on CUDA: benchmark_encode.py's default)
ENCODERS = "edsr-baseline,hat-srx4"

# The lattice-window kernels' raster figures (before the footprint kernels), as the first check measured them.
BEFORE_RASTER = ROOT / "benchmarks" / "device-check-h200-2026-12-04" / "raster-triton.json"
# (where the figure is, what it is, target ms, the official code's ms on an H100): targets, never asserted.
TARGETS = [
    ({"file": "raster-triton.json", "case": "691560g-to-2040x1356", "backend": "triton", "mode": "forward"},
     "691,560 Gaussians -> 2040x1356, forward", 0.25, 1.48),
    ({"file": "raster-triton.json", "case": "691560g-to-2040x1356", "backend": "triton",
      "mode": "forward+backward"}, "691,560 Gaussians -> 2040x1356, forward+backward", 1.0, 3.08),
    ({"file": "raster-triton.json", "case": "262144g-to-2048sq", "backend": "triton", "mode": "forward"},
     "262,144 Gaussians -> 2048x2048, forward", 0.3, 1.21),
    ({"file": "model.json", "encoder": "hat-srx4", "step": "render x4"},
     "one x4 render after encoding LR 256x192 (HAT-SRx4)", 0.5, 37.6),
    ({"file": "model.json", "encoder": "hat-srx4", "step": "40-scale sweep x4..x12 (1 encode + 40 renders)"},
     "40-scale sweep x4..x12 with HAT-SRx4, fp32 (official 1.81 s, LIIF 22.2 s)", 300.0, 1810.0),
    ({"file": "model-bf16.json", "encoder": "hat-srx4", "step": "40-scale sweep x4..x12 (1 encode + 40 renders)"},
     "40-scale sweep x4..x12 with HAT-SRx4, bf16 encode", 120.0, 1810.0),
]


@dataclass
class Step:
    name: str
    command: list[str]
    timeout_s: float
    output: str | None = None  # the JSON file the step writes into the folder
    interpret: bool = False  # run Triton kernels through the interpreter (CPU smoke only)
    result: dict = field(default_factory=dict)

    def __post_init__(self):  # an interpreted step gets the interpreter's limit, not its CUDA one
        if self.interpret:
            self.timeout_s = INTERPRETED_STEP_S


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def steps_for(smoke: bool, out: Path) -> list[Step]:
    """The check's steps: toy sizes on the CPU with `smoke`, the benchmarks' full sizes on CUDA otherwise."""
    bench, train = str(ROOT / "scripts" / "benchmark.py"), str(ROOT / "scripts" / "benchmark_train.py")
    once = ["--repeats", "1", "--warmup", "0"]
    if smoke:
        device, cases, lr, encoders = ["--device", "cpu"], ["smoke-6x8-to-12x16"], "8x8", "edsr-baseline,hat-smoke"
        fast_repeats = torch_repeats = model_repeats = once
        train_args = ["--config", str(ROOT / "configs" / "train" / "tiny.yaml"), "--steps", "1", "--warmup", "0"]
        tests = ["-m", "gpu"]  # all skip on the CPU: this checks the step itself
    else:
        device, cases, lr, encoders = ["--device", "cuda"], RASTER_CASES, MODEL_LR, ENCODERS
        fast_repeats, torch_repeats = ["--repeats", "20", "--warmup", "2"], ["--repeats", "5", "--warmup", "1"]
        model_repeats = ["--repeats", "10", "--warmup", "1"]
        train_args = ["--steps", "20", "--warmup", "3"]
        tests = ["-m", "gpu or triton"]
    fast = ["triton"] + (["gsplat"] if _importable("gsplat") else [])

    def raster(backends: list[str], repeats: list[str], name: str) -> list[str]:
        return python(bench, "raster", *device, "--backends", ",".join(backends), "--backward", "--cases",
                      ",".join(cases), *repeats, "--out", str(out / name))

    def photo() -> list[str]:
        return python(str(ROOT / "scripts" / "benchmark_encode.py"), *device, "--scales", "4", "--matmul-seconds",
                      "2", *(["--size", SMOKE_PHOTO] if smoke else []), "--out", str(out / "encode-photo.json"))

    def model(precision: str, name: str) -> list[str]:
        return python(bench, "model", *device, "--encoders", encoders, "--lr", lr, "--precision", precision,
                      *model_repeats, "--out", str(out / name))

    steps = [
        Step("environment", python(str(Path(__file__).resolve()), "--environment"), 20),
        Step("gpu-tests", python("-m", "pytest", "-q", "-p", "no:cacheprovider", *tests), 120),
        # the fast backends apart from torch's, so that a slow torch run cannot cost their figures
        Step("raster-benchmark-" + "-".join(fast), raster(fast, fast_repeats, "raster-triton.json"), 45,
             "raster-triton.json", interpret=smoke),
        Step("raster-benchmark-torch", raster(["torch"], torch_repeats, "raster-torch.json"), 40,
             "raster-torch.json"),
        Step("model-benchmark-fp32", model("fp32", "model.json"), 70, "model.json"),
        Step("model-benchmark-bf16", model("bf16", "model-bf16.json"), 60, "model-bf16.json"),
    ]
    for backend in ("torch", "triton"):
        steps.append(Step(f"train-benchmark-{backend}",
                          python(train, *device, *train_args, "--backend", backend,
                                 "--out", str(out / f"train-{backend}.json")),
                          35, f"train-{backend}.json", interpret=smoke and backend == "triton"))
    steps.append(Step("photo-encode", photo(), 45, "encode-photo.json"))  # a 1200x900 photo, as demo.py runs it
    return steps


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _text(stream) -> str:
    return stream.decode(errors="replace") if isinstance(stream, bytes) else (stream or "")


def _run(command: list[str], timeout: float, env: dict | None = None) -> tuple[int | None, str, str]:
    """(exit code, or None on timeout; stdout; stderr) of a command run with a time limit."""
    try:
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        return proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:  # run() has killed the child
        return None, _text(exc.stdout), _text(exc.stderr)
    except OSError as exc:
        return 127, "", f"{type(exc).__name__}: {exc}"


def environment() -> dict:
    """GPU, driver, torch, triton and the packages the check relies on, as this Python sees them."""
    import platform

    env = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET")}
    code, stdout, stderr = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                                 "--format=csv,noheader"], 15)
    env["nvidia_smi"] = stdout.strip().splitlines() if code == 0 else f"unavailable ({(stdout + stderr)[:200]})"
    import torch

    env["torch"] = torch.__version__
    env["torch_cuda"] = torch.version.cuda
    env["cuda_available"] = torch.cuda.is_available()
    env["gpus"] = [{"name": torch.cuda.get_device_name(i), "capability": list(torch.cuda.get_device_capability(i)),
                    "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2 ** 30, 1)}
                   for i in range(torch.cuda.device_count())]
    for module in ("triton", "numpy", "PIL", "yaml", "tqdm", "imageio", "pytest", "skimage", "gsplat",
                   "tensorboardX", "imageio_ffmpeg"):
        try:
            env[module] = getattr(__import__(module), "__version__", "present")
        except Exception as exc:  # a missing or broken package is a finding, not a failure of this step
            env[module] = f"missing ({type(exc).__name__})"
    sys.path.insert(0, str(ROOT))
    import rasterizer

    env["rasterizer_backends"] = sorted(rasterizer.BACKENDS)
    if torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
        env["auto_backend"] = rasterizer.resolve_backend("auto", device)
        env["triton_probe"] = rasterizer.PROBED.get(("triton", str(device)), "not run") or "passed"
    return env


def summarise(step: Step, stdout: str, out: Path) -> dict:
    """What a step's output says in a few fields: pytest counts, or the figures in the JSON it wrote."""
    lines = stdout.strip().splitlines() or [""]
    if step.name == "environment":
        try:
            return {"environment": json.loads(lines[-1])}
        except json.JSONDecodeError:
            return {}
    if step.name == "gpu-tests":
        return {"pytest": {kind: int(n) for n, kind in
                           re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed)", lines[-1])}}
    if step.output and (out / step.output).exists():
        try:
            data = json.loads((out / step.output).read_text())
        except json.JSONDecodeError:
            return {"unreadable": step.output}
        if "results" in data:  # benchmark.py
            return {"figures": [{k: r.get(k) for k in ("case", "encoder", "step", "backend", "mode", "median_ms",
                                                       "peak_mib", "scale", "tiles", "encode_s", "render_s",
                                                       "peak_gpu_mib") if k in r} for r in data["results"]]}
        return {"figures": {k: data.get(k) for k in ("backend", "batch", "step_ms_median", "iterations_per_s",
                                                     "render_share")}}
    return {}


def compare_targets(out: Path, smoke: bool) -> list[dict]:
    """The targets beside the figures measured for them (none at the smoke test's toy sizes)."""
    rows = []
    for where, what, target_ms, official_ms in TARGETS:
        measured = None
        path = out / where["file"]
        if path.exists() and not smoke:
            try:
                results = json.loads(path.read_text()).get("results", [])
            except json.JSONDecodeError:
                results = []
            keys = {k: v for k, v in where.items() if k != "file"}
            found = [r for r in results if all(r.get(k) == v for k, v in keys.items())]
            measured = found[0]["median_ms"] if found else None
        rows.append({"what": what, "target_ms": target_ms, "official_h100_ms": official_ms, "measured_ms": measured,
                     "within_target": None if measured is None else measured <= target_ms})
    return rows


def before_after(out: Path, before: Path = BEFORE_RASTER) -> list[dict]:
    """Each Triton raster figure of this check beside the same case's figure in `before` (the kernels replaced),
    with both devices: a ratio across two different GPUs says less than one on the same."""
    rows = []
    try:
        now = json.loads((out / "raster-triton.json").read_text())
        then = json.loads(before.read_text())
    except (OSError, json.JSONDecodeError):
        return rows
    earlier = {(r.get("case"), r.get("mode")): r.get("median_ms") for r in then.get("results", [])
               if r.get("backend") == "triton"}
    for r in now.get("results", []):
        before_ms = earlier.get((r.get("case"), r.get("mode")))
        if r.get("backend") != "triton" or before_ms is None:
            continue
        rows.append({"case": r["case"], "mode": r["mode"], "before_ms": before_ms, "before_device": then.get("device"),
                     "after_ms": r["median_ms"], "after_device": now.get("device"),
                     "speedup": before_ms / r["median_ms"] if r["median_ms"] else None})
    return rows


def write_summary(out: Path, summary: dict) -> None:
    partial = out / f".{SUMMARY_NAME}.tmp"
    partial.write_text(json.dumps(summary, indent=2) + "\n")
    partial.replace(out / SUMMARY_NAME)


def _stop(signum, frame):
    raise KeyboardInterrupt  # subprocess.run kills the running step's process on the way out


def main() -> None:
    parser = OneLineParser(prog=Path(__file__).name, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="output folder (default: benchmarks/device-check-<cuda|cpu-smoke>-<date>)")
    parser.add_argument("--cpu-smoke", action="store_true", help="every step at toy sizes on the CPU")
    parser.add_argument("--environment", action="store_true", help=argparse.SUPPRESS)  # the first step, inside
    args = parser.parse_args()
    if args.environment:
        print(json.dumps(environment()))
        return
    import torch  # only to know whether there is a device: every step runs in its own process

    if not args.cpu_smoke and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --cpu-smoke for the CPU check")
    mode = "cpu-smoke" if args.cpu_smoke else "cuda"
    date = datetime.date.today().isoformat()
    out = Path(args.out) if args.out else ROOT / "benchmarks" / f"device-check-{mode}-{date}"
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} is not empty: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _stop)
    steps = steps_for(args.cpu_smoke, out)
    summary = {"mode": mode, "date": date, "command": " ".join(sys.argv), "budget_s": TOTAL_BUDGET_S,
               "complete": False, "steps": [], "targets": compare_targets(out, args.cpu_smoke),
               "targets_note": "targets for an H100, beside the official code on an H100 (HAT-SRx4, its gsplat "
                               "fork): figures to tune for, never asserted"}
    start = time.monotonic()
    base_env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    with open(out / LOG_NAME, "w") as log:
        try:
            for step in steps:
                remaining = TOTAL_BUDGET_S - (time.monotonic() - start)
                timeout = min(step.timeout_s, remaining)
                header = f"=== {step.name} (limit {timeout:.0f} s): {' '.join(step.command)}"
                print(header, flush=True)
                log.write(header + "\n")
                if timeout < MIN_STEP_S:
                    step.result = {"name": step.name, "status": "skipped", "reason": "the check's time budget is spent"}
                else:
                    env = dict(base_env, TRITON_INTERPRET="1") if step.interpret else base_env
                    began = time.monotonic()
                    code, stdout, stderr = _run(step.command, timeout, env)
                    seconds = time.monotonic() - began
                    text = stdout + stderr
                    log.write(text + ("" if text.endswith("\n") else "\n"))
                    log.flush()
                    status = "ok" if code == 0 else ("timeout" if code is None else "failed")
                    step.result = {"name": step.name, "status": status, "exit_code": code,
                                   "seconds": round(seconds, 1), "limit_s": round(timeout), "output": step.output,
                                   **summarise(step, stdout, out)}
                    if status != "ok":
                        step.result["output_tail"] = text[-LOG_TAIL_CHARS:]
                line = f"--- {step.name}: {step.result['status']}" + (
                    f" in {step.result['seconds']} s" if "seconds" in step.result else "")
                print(line, flush=True)
                log.write(line + "\n")
                summary["steps"].append(step.result)
                summary["targets"] = compare_targets(out, args.cpu_smoke)
                summary["raster_before_after"] = [] if args.cpu_smoke else before_after(out)
                summary["seconds"] = round(time.monotonic() - start, 1)
                write_summary(out, summary)
            summary["complete"] = True
        except KeyboardInterrupt:
            summary["interrupted"] = True
            log.write("--- interrupted\n")
        summary["seconds"] = round(time.monotonic() - start, 1)
        write_summary(out, summary)
    failed = [s["name"] for s in summary["steps"] if s["status"] != "ok"]
    for row in [] if args.cpu_smoke else summary.get("raster_before_after", []):
        print(f"raster {row['case']} {row['mode']}: {row['after_ms']:.3f} ms on {row['after_device']}, before "
              f"{row['before_ms']:.3f} ms on {row['before_device']}")
    for row in [] if args.cpu_smoke else summary["targets"]:
        measured = "not measured" if row["measured_ms"] is None else f"{row['measured_ms']:.3f} ms"
        print(f"target {row['what']}: {measured} (target {row['target_ms']} ms, official {row['official_h100_ms']})")
    print(f"wrote {out} ({len(list(out.iterdir()))} files); "
          + (f"failed: {', '.join(failed)}" if failed else "every step passed"))
    sys.exit(130 if summary.get("interrupted") else (1 if failed or not summary["complete"] else 0))


if __name__ == "__main__":
    main()
