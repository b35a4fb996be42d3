"""Rasterizer benchmark: backends × cases, forward and forward+backward, median of repeated runs after warm-up.

Prints a table and writes JSON (device, date, figures) under benchmarks/. On CUDA, times with CUDA events and
reports peak allocated memory; on the CPU, wall-clock time and the peak resident-memory increase.
Fields are shaped like the head's: dictionary-mixture covariances, offsets in (−1, 1) LR pixels.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rasterizer  # noqa: E402
from gaussian import DGP_UNIT, make_dgp_dictionary  # noqa: E402

# (name, LR height, LR width, output height, output width)
CASES = {
    "cpu-256sq-x4": (256, 256, 1024, 1024),
    "official-2040x1356": (339, 510, 1356, 2040),
    "official-2048sq": (256, 256, 2048, 2048),
    "train-48sq-x4-b16": (48, 48, 192, 192),
}
DEFAULT_CASES = {"cpu": ["cpu-256sq-x4"], "cuda": list(CASES)}
TRAIN_BATCH = 16


def make_field(lr_h: int, lr_w: int, height: int, width: int, batch: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hg, wg = 2 * lr_h, 2 * lr_w
    offset = torch.rand(batch, hg, wg, 2, generator=g) * 2 - 1
    cols = torch.arange(wg).view(1, -1)
    rows = torch.arange(hg).view(-1, 1)
    x = cols / lr_w - 1 + 2 * offset[..., 0] / lr_w - 1 / width
    y = rows / lr_h - 1 + 2 * offset[..., 1] / lr_h - 1 / height
    weights = torch.softmax(torch.randn(batch, hg, wg, 730, generator=g) * 3, -1)
    l0 = weights @ make_dgp_dictionary()
    chol = l0 * torch.tensor([width / lr_w, height / lr_h, height / lr_h]) / DGP_UNIT
    colour = torch.rand(batch, hg, wg, 3, generator=g)
    return [t.to(device) for t in (torch.stack((x, y), -1), chol, colour)]


def time_runs(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Milliseconds per run."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            start_s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start_s) * 1e3)
    return times


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> float:
    """Reset the kernel's resident-memory high-water mark (Linux) and return the current RSS in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def peak_rss_mib() -> float:
    return _status_mib("VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backends", default="torch", help="comma-separated rasterizer backends")
    parser.add_argument("--cases", default=None, help=f"comma-separated, from: {', '.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default: 5 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--backward", action="store_true", help="also time forward+backward")
    parser.add_argument("--out", default=None, help="JSON path (default: benchmarks/raster-<device>-<date>.json)")
    args = parser.parse_args()
    device = torch.device(args.device)
    repeats = args.repeats or (20 if device.type == "cuda" else 5)
    cases = args.cases.split(",") if args.cases else DEFAULT_CASES[device.type]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads")
    results = []
    for case in cases:
        lr_h, lr_w, height, width = CASES[case]
        batch = TRAIN_BATCH if case.startswith("train") else 1
        xy, chol, colour = make_field(lr_h, lr_w, height, width, batch, device)
        for backend in args.backends.split(","):
            modes = ["forward"] + (["forward+backward"] if args.backward else [])
            for mode in modes:
                def run():
                    if mode == "forward":
                        with torch.no_grad():
                            rasterizer.rasterize(xy, chol, colour, height, width, backend)
                    else:
                        inputs = [t.clone().requires_grad_(True) for t in (xy, chol, colour)]
                        rasterizer.rasterize(*inputs, height, width, backend).sum().backward()

                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                    base = torch.cuda.memory_allocated(device)
                rss_before = reset_peak_rss() if device.type == "cpu" else 0.0
                times = time_runs(run, device, args.warmup, repeats)
                peak = ((torch.cuda.max_memory_allocated(device) - base) / 2 ** 20 if device.type == "cuda"
                        else peak_rss_mib() - rss_before)
                results.append({"case": case, "backend": backend, "mode": mode, "gaussians": xy[..., 0].numel(),
                                "output": [batch, height, width], "median_ms": statistics.median(times),
                                "min_ms": min(times), "repeats": repeats, "peak_mib": peak})
                r = results[-1]
                print(f"{case:22s} {backend:8s} {mode:17s} {r['gaussians']:>9d} G → {batch}x{height}x{width}: "
                      f"median {r['median_ms']:9.2f} ms  (min {r['min_ms']:.2f})  peak +{peak:.0f} MiB", flush=True)
    date = datetime.date.today().isoformat()
    out = Path(args.out) if args.out else Path("benchmarks") / f"raster-{device.type}-{date}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device_name, "date": date, "torch": torch.__version__,
                               "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
