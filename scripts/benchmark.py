"""Benchmarks: the rasterizer (backends × cases) and the model (encode, per-scale render, a 40-scale sweep).

    python scripts/benchmark.py raster [--backends torch,triton] [--backward] [--cases ...]
    python scripts/benchmark.py model  [--encoders edsr-baseline,hat-srx4] [--lr 192x256]
    python scripts/benchmark.py cpu    [--backends torch,numba] [--model weights/...pth]
    python scripts/benchmark.py pairs  [--cases ...] [--scales 2,4,8,16] [--model weights/...pth]
    python scripts/benchmark.py precision --photos data/photos/test [--scales 2,3,4,6,8] [--limit N]

`pairs` times nothing: it counts, on the CPU, the (pixel, Gaussian) pairs the Triton kernels evaluate (from
their launch grids and loop bounds, `rasterizer.footprints`) against the pairs actually drawn (α ≥ 1/255), for
every raster case and for the bundled model's field of the bundled example at each of --scales, beside the
ratios of an earlier count (--before: by default the lattice-window kernels' count that the footprint kernels
replaced). `precision` scores the bundled model (--model) on a folder of HR photographs (the test split of
scripts/prepare_photos.py) with the benchmark protocol, encoding in fp32 and in bf16, and prints the PSNR change
per scale; on a CPU without native bf16 (where encode() runs bf16 as fp32) it emulates bf16, tens of times
slower: use --limit and --crop there. Otherwise each figure is the median of repeated runs after warm-up: CUDA events on a GPU, wall clock
on the CPU, with peak memory (allocated on CUDA, resident-set increase on the CPU). Prints a table and writes JSON (device,
date, figures) under benchmarks/. Fields for the raster cases are shaped like the head's (dictionary-mixture
covariances, offsets in (−1, 1) LR pixels).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import entry_point  # noqa: E402  (the standard library only: its guard is up before the heavy imports)

if __name__ == "__main__":
    entry_point.starting("benchmark.py")

import torch  # noqa: E402

import cli  # noqa: E402
import gaussian  # noqa: E402
import models  # noqa: E402
import rasterizer  # noqa: E402
from gaussian import DGP_UNIT, make_dgp_dictionary  # noqa: E402
from inference.arguments import non_negative_int, positive_int, size_arg  # noqa: E402
from utils import (DEVICE_AUTO, DEVICE_CHOICES, EXIT_OK, UsageError, atomic_path, describe_device,  # noqa: E402
                   resolve_device)

# name → (LR height, LR width, output height, output width, batch)
RASTER_CASES = {
    "256sq-to-1024sq": (256, 256, 1024, 1024, 1),
    "691560g-to-2040x1356": (339, 510, 1356, 2040, 1),
    "262144g-to-2048sq": (256, 256, 2048, 2048, 1),
    "train-b16-48sq-to-192sq": (48, 48, 192, 192, 16),
    "196608g-to-1024x768": (192, 256, 768, 1024, 1),  # the x4 render of an LR 256x192 image
    "smoke-6x8-to-12x16": (6, 8, 12, 16, 2),  # toy size: scripts/device_check.py --cpu-smoke
}
DEFAULT_RASTER_CASES = {"cpu": ["256sq-to-1024sq"], "cuda": [c for c in RASTER_CASES if not c.startswith("smoke")]}
ENCODERS = {
    "edsr-baseline": {"name": "edsr-baseline", "args": {"no_upsampling": False, "scale": 4}},
    "hat-srx4": {"name": "hat", "args": {
        "upscale": 4, "in_chans": 3, "img_size": 64, "window_size": 16, "compress_ratio": 3, "squeeze_factor": 30,
        "conv_scale": 0.01, "overlap_ratio": 0.5, "img_range": 1.0, "depths": [6] * 6, "embed_dim": 180,
        "num_heads": [6] * 6, "mlp_ratio": 2, "upsampler": "pixelshuffle", "resi_connection": "1conv"}},
    # toy HAT (same code path, seconds on a CPU): scripts/device_check.py --cpu-smoke
    "hat-smoke": {"name": "hat", "args": {
        "upscale": 4, "img_size": 16, "window_size": 4, "compress_ratio": 3, "squeeze_factor": 4, "embed_dim": 12,
        "depths": [1, 1], "num_heads": [2, 2], "mlp_ratio": 2, "upsampler": "pixelshuffle"}},
}
DEFAULT_MODEL_LR = {"cpu": (48, 64), "cuda": (192, 256)}
SWEEP_SCALES = [4 + 8 * k / 39 for k in range(40)]  # 40 scales, x4 to x12


def make_field(lr_h: int, lr_w: int, height: int, width: int, batch: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hg, wg = 2 * lr_h, 2 * lr_w
    offset = torch.rand(batch, hg, wg, 2, generator=g) * 2 - 1
    x = torch.arange(wg).view(1, -1) / lr_w - 1 + 2 * offset[..., 0] / lr_w - 1 / width
    y = torch.arange(hg).view(-1, 1) / lr_h - 1 + 2 * offset[..., 1] / lr_h - 1 / height
    dictionary = make_dgp_dictionary()
    logits = torch.randn(batch * hg * wg, dictionary.shape[0], generator=g) * 3
    l0 = torch.cat([torch.softmax(rows, -1) @ dictionary for rows in logits.split(1 << 16)])
    chol = l0.view(batch, hg, wg, 3) * torch.tensor([width / lr_w, height / lr_h, height / lr_h]) / DGP_UNIT
    colour = torch.rand(batch, hg, wg, 3, generator=g)
    return [t.to(device) for t in (torch.stack((x, y), -1), chol, colour)]


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> dict[str, float]:
    """Median and min milliseconds per run, and peak memory above the level before the runs (MiB)."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the resident-memory high-water mark (Linux)
        base = _status_mib("VmRSS")
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(stop))
        else:
            start_s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start_s) * 1e3)
    peak = ((torch.cuda.max_memory_allocated(device) - base) / 2 ** 20 if device.type == "cuda"
            else _status_mib("VmHWM") - base)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "repeats": repeats, "peak_mib": peak}


def bench_raster(args, device: torch.device) -> list[dict]:
    cases = args.cases.split(",") if args.cases else DEFAULT_RASTER_CASES[device.type]
    unknown = [c for c in cases if c not in RASTER_CASES]
    if unknown:
        raise SystemExit(f"benchmark: unknown case(s) {', '.join(unknown)} (known: {', '.join(RASTER_CASES)})")
    results = []
    for case in cases:
        lr_h, lr_w, height, width, batch = RASTER_CASES[case]
        xy, chol, colour = make_field(lr_h, lr_w, height, width, batch, device)
        for backend in args.backends.split(","):
            for mode in ["forward"] + (["forward+backward"] if args.backward else []):
                def run():
                    if mode == "forward":
                        with torch.no_grad():
                            return rasterizer.rasterize(xy, chol, colour, height, width, backend)
                    inputs = [t.clone().requires_grad_(True) for t in (xy, chol, colour)]
                    rasterizer.rasterize(*inputs, height, width, backend).sum().backward()

                r = {"case": case, "backend": backend, "mode": mode, "gaussians": xy[..., 0].numel(),
                     "output": [batch, height, width], **measure(run, device, args.warmup, args.repeats)}
                results.append(r)
                print(f"{case:24s} {backend:7s} {mode:16s} {r['gaussians']:>9d} G → {batch}x{height}x{width}: "
                      f"median {r['median_ms']:9.3f} ms (min {r['min_ms']:.3f})  peak +{r['peak_mib']:.0f} MiB",
                      flush=True)
    return results


def bench_model(args, device: torch.device) -> list[dict]:
    lr_h, lr_w = args.lr[::-1] if args.lr else DEFAULT_MODEL_LR[device.type]  # --lr is HxW: size_arg reads WxH
    results = []
    for name in args.encoders.split(","):
        if name not in ENCODERS:
            raise SystemExit(f"benchmark: unknown encoder {name!r} (known: {', '.join(ENCODERS)})")
        torch.manual_seed(0)
        spec = {"name": "continuous-gaussian", "args": {"encoder_spec": ENCODERS[name]}}
        model = models.make(spec).to(device).eval()
        model.precision = args.precision
        inp = torch.rand(1, 3, lr_h, lr_w, device=device)
        with torch.no_grad():
            field = model.encode(inp)
            steps = {
                "encode": lambda: model.encode(inp),
                "render x4": lambda: model.render(field, scale=4, backend=args.backend),
                "forward x4 (encode + render)": lambda: model(inp, torch.tensor([[4.0, 4.0]])),
                "40-scale sweep x4..x12 (1 encode + 40 renders)": lambda: [
                    model.render(model.encode(inp) if k == 0 else field, scale=s, backend=args.backend)
                    for k, s in enumerate(SWEEP_SCALES)],
            }
            for step, fn in steps.items():
                repeats = max(1, args.repeats // 4) if "sweep" in step else args.repeats
                r = {"encoder": name, "lr": [lr_h, lr_w], "step": step, "backend": args.backend,
                     "precision": args.precision,
                     **measure(fn, device, args.warmup, repeats)}
                results.append(r)
                print(f"{name:14s} {args.precision} LR {lr_h}x{lr_w}  {step:48s} median {r['median_ms']:10.2f} ms "
                      f"(min {r['min_ms']:.2f})  peak +{r['peak_mib']:.0f} MiB", flush=True)
    return results


# ---- CPU rendering: the same runs for each backend, on the bundled model ---------------------------------
BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "weights" / "continuoussr-edsr-baseline.pth"
CPU_LR_SIZES = "64x48,256x192"  # WxH; the view is cut from the last one's field
# A viewer's frame: a 1280x720 window of the last LR size's field, zoomed x8 (or more) about the centre.
VIEW_SIZE, VIEW_LEVEL = (720, 1280), 8.0
# Training batches (batch, LR side, scale): the bundled recipe's (96x96 HR crops, batch 8) and the default's.
TRAIN_BATCHES = ((8, 24, 4.0), (16, 48, 4.0))
# Work per drawn (pixel, Gaussian) pair (σ, exp, the colour sum), and the peak it compares with: 2 Zen 3 cores,
# 8-lane fp32 FMA (~150 GFLOP/s).
FLOPS_PER_PAIR = 15
CPU_PEAK_GFLOPS = 150.0


def drawn_pairs(g: rasterizer.ProjectedGaussians, height: int, width: int) -> int:
    """(pixel, Gaussian) pairs with α ≥ 1/255 inside the image, counted with the torch reference's boxes."""
    from rasterizer import torch_backend

    batch = g.means.shape[0]
    flat = torch_backend._flatten(g.means.reshape(batch, -1, 2), g.inv_factors.reshape(batch, -1, 3),
                                  g.colours.reshape(batch, -1, g.colours.shape[-1]),
                                  g.extents.reshape(batch, -1, 2), height, width)
    total = 0
    for idx, box_h, box_w in torch_backend._chunks(flat["extents"], flat["means"], height, width):
        weight = torch_backend._evaluate(flat["means"][idx], flat["inv_factors"][idx], flat["extents"][idx],
                                         height, width, box_h, box_w)[0]
        total += int((weight > 0).sum())
    return total


def projections(render: Callable[[str], object]) -> list[tuple[rasterizer.ProjectedGaussians, int, int]]:
    """(projected Gaussians, height, width) of each rasterizer call `render(backend)` makes, through a capturing
    backend registered for the call (it renders zeros)."""
    captured = []

    def capture(g: rasterizer.ProjectedGaussians, height: int, width: int) -> torch.Tensor:
        captured.append((g, height, width))
        return g.colours.new_zeros(g.colours.shape[0], g.colours.shape[-1], height, width)

    rasterizer.register_backend("capture", capture, auto_device_types=())
    try:
        render("capture")
    finally:
        del rasterizer.BACKENDS["capture"]
    return captured


def count_pairs(render: Callable[[str], object]) -> int:
    """The drawn pairs of `render(backend)`."""
    return sum(drawn_pairs(g, height, width) for g, height, width in projections(render))


def _floor(pairs: float, median_ms: float) -> dict[str, float]:
    gflop = pairs * FLOPS_PER_PAIR / 1e9
    floor_ms = gflop / CPU_PEAK_GFLOPS * 1e3
    return {"pairs": pairs, "gflop": gflop, "floor_ms": floor_ms, "x_floor": median_ms / floor_ms}


def bench_cpu(args, device: torch.device) -> list[dict]:
    """One x4 render, the 40-scale sweep (encode included), a 1280x720 zoomed view and a training batch's
    rasterizer forward+backward, for each backend in --backends, with the pairs drawn and the distance from
    the flops floor."""
    from inference.zoom import field_reach, render_window

    model = models.sr_model_from_checkpoint(args.model, device)
    backends = args.backends.split(",")
    results = []

    def record(name: str, backend: str, fn: Callable[[], object], repeats: int, pairs: float | None) -> None:
        r = {"case": name, "backend": backend, **measure(fn, device, args.warmup, repeats)}
        if pairs is not None:
            r.update(_floor(pairs, r["median_ms"]))
        results.append(r)
        floor = f"  {r['x_floor']:7.1f}x the floor ({r['pairs'] / 1e6:.1f} M pairs)" if pairs is not None else ""
        print(f"{name:52s} {backend:6s} median {r['median_ms']:10.2f} ms (min {r['min_ms']:.2f}, "
              f"{repeats} runs){floor}", flush=True)

    torch.manual_seed(0)
    lr_sizes = args.lr_sizes
    for lr_h, lr_w in lr_sizes:
        inp = torch.rand(1, 3, lr_h, lr_w, device=device)
        with torch.no_grad():
            field = model.encode(inp)
            record(f"encode LR {lr_w}x{lr_h}", "-", lambda: model.encode(inp), args.repeats, None)
            size4 = (4 * lr_h, 4 * lr_w)
            x4_pairs = count_pairs(lambda backend: model.render(field, scale=4, backend=backend))
            per_pixel = x4_pairs / (size4[0] * size4[1])  # pairs per output pixel hardly vary with the scale
            sweep_pixels = sum(round(lr_h * s) * round(lr_w * s) for s in SWEEP_SCALES)
            for backend in backends:
                record(f"render x4 LR {lr_w}x{lr_h}", backend,
                       lambda: model.render(field, scale=4, backend=backend), args.repeats, x4_pairs)
                record(f"40-scale sweep x4..x12 LR {lr_w}x{lr_h} (encode included)", backend, lambda: [
                    model.render(model.encode(inp) if k == 0 else field, scale=s, backend=backend)
                    for k, s in enumerate(SWEEP_SCALES)], max(1, args.repeats // 4), per_pixel * sweep_pixels)
                record(f"40 renders x4..x12 LR {lr_w}x{lr_h} (the sweep less its encode)", backend,
                       lambda: [model.render(field, scale=s, backend=backend) for s in SWEEP_SCALES],
                       max(1, args.repeats // 4), per_pixel * sweep_pixels)
    # The viewer's frame, from the last (largest) field.
    reach = field_reach(field)
    # Zoomed x8, or further where the field is too small for the frame: the window lies inside the image.
    level = max(VIEW_LEVEL, VIEW_SIZE[0] / field.lr_size[0], VIEW_SIZE[1] / field.lr_size[1])
    win_h, win_w = VIEW_SIZE[0] / level, VIEW_SIZE[1] / level  # LR pixels, about the centre
    window = ((field.lr_size[0] - win_h) / 2, (field.lr_size[1] - win_w) / 2, win_h, win_w)
    with torch.no_grad():
        view_pairs = count_pairs(lambda backend: render_window(field, window, VIEW_SIZE, backend, reach))
        for backend in backends:
            record(f"view {VIEW_SIZE[1]}x{VIEW_SIZE[0]} of LR {lr_w}x{lr_h} zoomed x{level:g}", backend,
                   lambda: render_window(field, window, VIEW_SIZE, backend, reach), args.repeats, view_pairs)
    for batch, side, scale in TRAIN_BATCHES:
        out = round(side * scale)
        xy, chol, colour = make_field(side, side, out, out, batch, device)
        pairs = drawn_pairs(rasterizer.project(xy, chol, colour, out, out), out, out)
        for backend in backends:
            def step():
                inputs = [t.clone().requires_grad_(True) for t in (xy, chol, colour)]
                rasterizer.rasterize(*inputs, out, out, backend).sum().backward()

            record(f"train batch {batch}x{side}sq -> {out}sq, raster forward+backward", backend, step,
                   args.repeats, None)
            results[-1]["pairs"] = pairs
    return results


BUNDLED_EXAMPLE = Path(__file__).resolve().parents[1] / "assets" / "example.png"
PAIR_SCALES = "2,4,8,16"
# The count of the kernels before the footprint kernels (a tile's lattice window sized by the field's largest
# drift and extent, for every pixel of the tile).
WINDOW_KERNELS_PAIRS = Path(__file__).resolve().parents[1] / "benchmarks" / "pairs-window-kernels-cpu-2026-12-07.json"


def _pair_row(name: str, g: rasterizer.ProjectedGaussians, height: int, width: int, before: dict) -> dict:
    from rasterizer.footprints import evaluated_pairs

    drawn = drawn_pairs(g, height, width)
    forward = backward = evaluated_pairs(g, height, width)  # both kernels step through the same plan
    row = {"field": name, "gaussians": g.means[..., 0].numel(), "output": [g.means.shape[0], height, width],
           "drawn": drawn, "forward_evaluated": forward, "backward_evaluated": backward,
           "forward_ratio": forward / max(drawn, 1), "backward_ratio": backward / max(drawn, 1)}
    earlier = before.get(name)
    if earlier is not None:
        row["before"] = {k: earlier[k] for k in ("forward_ratio", "backward_ratio")}
        print(f"{name:28s} before: forward {earlier['forward_ratio']:6.2f}, backward {earlier['backward_ratio']:6.2f} "
              f"per drawn pair", flush=True)
    print(f"{name:28s} {row['gaussians']:>9d} G -> {g.means.shape[0]}x{height}x{width}: drawn {drawn / 1e6:9.3f} M, "
          f"evaluated forward {forward / 1e6:10.3f} M ({row['forward_ratio']:6.2f} per drawn), backward "
          f"{backward / 1e6:10.3f} M ({row['backward_ratio']:6.2f})", flush=True)
    return row


def bench_pairs(args, device: torch.device) -> list[dict]:
    """Evaluated against drawn pairs for each raster case and the bundled model's real field at --scales."""
    from inference.image_io import read_image

    cases = args.cases.split(",") if args.cases else list(RASTER_CASES)
    unknown = [c for c in cases if c not in RASTER_CASES]
    if unknown:
        raise UsageError(f"unknown case(s) {', '.join(unknown)} (known: {', '.join(RASTER_CASES)})")
    try:
        scales = [float(v) for v in (args.scales or PAIR_SCALES).split(",")]
    except ValueError:
        raise UsageError(f"--scales must be comma-separated numbers, got {args.scales!r}") from None
    if not all(s > 0 for s in scales):
        raise UsageError(f"--scales must be positive, got {args.scales!r}")
    before = {}
    if args.before:
        try:
            before = {r["field"]: r for r in json.loads(Path(args.before).read_text())["results"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"--before {args.before}: not a pairs JSON ({type(exc).__name__}: {exc})") from None
    results = []
    with torch.no_grad():
        for case in cases:
            lr_h, lr_w, height, width, batch = RASTER_CASES[case]
            xy, chol, colour = make_field(lr_h, lr_w, height, width, batch, device)
            results.append(_pair_row(case, rasterizer.project(xy, chol, colour, height, width), height, width,
                                     before))
        model = models.sr_model_from_checkpoint(args.model, device)
        field = model.encode(read_image(BUNDLED_EXAMPLE).unsqueeze(0).to(device))
        for scale in scales:
            for g, height, width in projections(lambda backend: model.render(field, scale=scale, backend=backend)):
                results.append(_pair_row(f"bundled model x{scale:g}", g, height, width, before))
    return results


PRECISION_SCALES = "2,3,4,6,8"


@contextlib.contextmanager
def _real_bf16(device: torch.device):
    """bf16 arithmetic even on a CPU without native bf16, where encode() would run fp32 instead."""
    if device.type != "cpu" or gaussian.cpu_bf16_native():
        yield
        return
    print("this CPU has no native bf16: emulating it (slow)", flush=True)
    native = gaussian.cpu_bf16_native
    gaussian.cpu_bf16_native = lambda: True
    try:
        yield
    finally:
        gaussian.cpu_bf16_native = native


def bench_precision(args, device: torch.device) -> list[dict]:
    """Mean PSNR of the model's renders with the encode in fp32 and in bf16, per scale, on --photos."""
    if not args.photos or not Path(args.photos).is_dir():
        raise UsageError(f"--photos must be a folder of HR images, got {args.photos!r}")
    try:
        scales = [float(v) for v in (args.scales or PRECISION_SCALES).split(",")]
    except ValueError:
        raise UsageError(f"--scales must be comma-separated numbers, got {args.scales!r}") from None
    if args.crop is not None and args.crop < 1:
        raise UsageError(f"--crop must be at least 1, got {args.crop}")
    model = models.sr_model_from_checkpoint(args.model, device)
    from datasets import DatasetError

    with tempfile.TemporaryDirectory() as crops:
        try:
            photos = _central_crops(Path(args.photos), args.crop, args.limit, Path(crops)) if args.crop else args.photos
        except DatasetError as exc:
            raise UsageError(str(exc)) from None
        return _score_precisions(model, Path(photos), scales, args.limit, device)


def _central_crops(folder: Path, side: int, limit: int | None, out: Path) -> Path:
    """The central side x side of each of the first `limit` photographs in `folder`, as PNGs in `out`."""
    from PIL import Image

    from datasets.image_folder import readable_files

    for path in readable_files(folder)[0][:limit]:
        with Image.open(path) as image:
            left, top = max(0, (image.width - side) // 2), max(0, (image.height - side) // 2)
            image.convert("RGB").crop((left, top, left + min(side, image.width), top + min(side, image.height))
                                      ).save(out / f"{path.stem}.png")
    return out


def _score_precisions(model, photos: Path, scales: list[float], limit: int | None,
                      device: torch.device) -> list[dict]:
    from bundle_model import split_config
    from evaluation.protocol import build_dataset, evaluate, validate_config

    results = []
    for scale in scales:
        config = split_config(photos, scale)
        config["test_dataset"]["dataset"]["args"]["first_k"] = limit
        protocol = validate_config(config)
        psnr = {}
        for precision in ("fp32", "bf16"):
            model.precision = precision
            with _real_bf16(device) if precision == "bf16" else contextlib.nullcontext():
                result = evaluate(model, build_dataset(config), protocol, device=device, progress=False)
            psnr[precision] = result.mean("psnr", protocol.scale)
        model.precision = "fp32"
        row = {"scale": scale, "images": len(result.names), "psnr_fp32": psnr["fp32"], "psnr_bf16": psnr["bf16"],
               "change_db": psnr["bf16"] - psnr["fp32"]}
        results.append(row)
        print(f"x{scale:<5g} {row['images']:3d} images: fp32 {psnr['fp32']:.4f} dB, bf16 {psnr['bf16']:.4f} dB, "
              f"change {row['change_db']:+.4f} dB", flush=True)
    return results


def main() -> None:
    parser = cli.OneLineParser(prog="benchmark.py", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("raster", "model", "cpu", "pairs", "precision"))
    parser.add_argument("--device", default=DEVICE_AUTO,
                        help=f"{DEVICE_CHOICES} (default auto: CUDA if available, else the CPU)")
    parser.add_argument("--backends", default=None,
                        help="raster, cpu: comma-separated rasterizer backends (default torch; cpu: torch,numba)")
    parser.add_argument("--lr-sizes", type=lambda text: [size_arg(size) for size in text.split(",")],
                        default=CPU_LR_SIZES, help=f"cpu: LR sizes WxH (default {CPU_LR_SIZES})")
    parser.add_argument("--model", default=str(BUNDLED_MODEL),
                        help="cpu, pairs: the checkpoint (default: the bundled one)")
    parser.add_argument("--scales", default=None,
                        help=f"pairs, precision: the model's scales (default {PAIR_SCALES}; {PRECISION_SCALES})")
    parser.add_argument("--photos", default=None, help="precision: folder of HR photographs (the test split)")
    parser.add_argument("--limit", type=positive_int, default=None, help="precision: score only the first N photographs")
    parser.add_argument("--crop", type=int, default=None,
                        help="precision: score only the central CROP x CROP pixels of each photograph")
    parser.add_argument("--before", default=str(WINDOW_KERNELS_PAIRS),
                        help="pairs: an earlier pairs JSON whose ratios are printed first ('' for none; default: "
                             "the lattice-window kernels')")
    parser.add_argument("--backward", action="store_true", help="raster: also time forward+backward")
    parser.add_argument("--cases", default=None, help=f"raster, pairs: comma-separated, from {', '.join(RASTER_CASES)}")
    parser.add_argument("--encoders", default="edsr-baseline", help=f"model: from {', '.join(ENCODERS)}")
    parser.add_argument("--lr", type=size_arg, default=None, help="model: LR size HxW (default 192x256 on CUDA, 48x64 on CPU)")
    parser.add_argument("--backend", default="auto", help="model: rasterizer backend")
    parser.add_argument("--precision", default="fp32", choices=gaussian.PRECISIONS,
                        help="model: the encode's arithmetic (default fp32; bf16 costs PSNR: -0.10 dB at x2, -0.03 at x3, "
                             "-0.02 at x4, -0.01 at x6 and x8 on central 64x64 crops of three test photographs, "
                             "`precision` mode, 2026-12-07)")
    parser.add_argument("--repeats", type=positive_int, default=None, help="timed runs (default: 5 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=non_negative_int, default=1)
    parser.add_argument("--out", default=None, help="JSON path (default: benchmarks/<what>-<device>-<date>.json)")
    args = parser.parse_args()
    code = cli.run("benchmark.py", lambda: run(args))
    if code:
        sys.exit(code)


def run(args: argparse.Namespace) -> int:
    """Measure what `args.what` names and write the JSON."""
    device = resolve_device(args.device)
    args.repeats = args.repeats or (20 if device.type == "cuda" else 5)
    args.backends = args.backends or ("torch,numba" if args.what == "cpu" else "torch")
    results = {"raster": bench_raster, "model": bench_model, "cpu": bench_cpu, "pairs": bench_pairs,
               "precision": bench_precision}[args.what](args, device)
    date = datetime.date.today().isoformat()
    out = Path(args.out) if args.out else Path("benchmarks") / f"{args.what}-{device.type}-{date}.json"
    with atomic_path(out) as tmp:  # never a half-written result
        tmp.write_text(json.dumps({"device": describe_device(device), "date": date, "torch": torch.__version__,
                                   "command": " ".join(sys.argv), "results": results}, indent=2) + "\n")
    print(f"wrote {out}")
    return EXIT_OK


if __name__ == "__main__":
    main()
