"""What a big photo costs: a 1200x900 photograph (by default) upscaled x2 and x4 through the tiled encode demo.py runs (automatic
tiles), with the peak resident memory, the encode's time, the model's arithmetic and its rate against this
machine's fp32 matrix-multiply rate measured in the same run.

    python scripts/benchmark_encode.py [--photo PATH] [--size 1200x900] [--scales 2 4] [--model CKPT] [--device cpu]

The photo: PATH resized (Lanczos) to cover --size and centre-cropped; by default scikit-image's `rocket.jpg`
(a public-domain SpaceX photograph shipped with the package, one of scripts/prepare_photos.py's sources).
Each scale runs in a fresh process (as `demo.py --input photo --scale S` would: the bundled model, demo's
`encode`, the render, the PNG written), whose peak resident memory the kernel reports (as `/usr/bin/time -v`).
FLOPs are counted by torch.utils.flop_counter on the meta device (nothing computed): the model's FLOPs are the
untiled encode's, what the image needs; the executed FLOPs include the encoder's repeated work on the tiles'
context. The matrix-multiply rate is the best of repeated 2048x2048 fp32 products on the same threads, just
before and just after the encode. Prints a table and writes JSON under benchmarks/ (with the load average: on a
shared machine the times are inflated).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import cli  # noqa: E402
from gaussian import output_size  # noqa: E402
from inference import pipeline, tiling  # noqa: E402
from inference.arguments import size_arg  # noqa: E402
from inference.image_io import MAX_OUTPUT_PIXELS, read_image, write_image  # noqa: E402
from rasterizer import check_backend  # noqa: E402
from utils import atomic_path, resolve_device  # noqa: E402

DEFAULT_SIZE = "1200x900"  # the LR photo, width x height
DEFAULT_PHOTO = "rocket.jpg"  # in skimage.data.data_dir
MATMUL_SIDE = 2048
MATMUL_SECONDS = 2.0  # time spent measuring the matrix-multiply rate, each time
BACKEND = "auto"  # the rasterizer backend, as demo.py by default
KIB = 1024  # ru_maxrss is in KiB on Linux


def prepare_photo(source: Path, target: Path, size: tuple[int, int]) -> None:
    """`source` resized to cover `size` (H, W) (Lanczos) and centre-cropped to it, written to `target` as PNG."""
    height, width = size
    with Image.open(source) as image:
        image = image.convert("RGB")
        factor = max(width / image.width, height / image.height)
        image = image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS)
        left, top = (image.width - width) // 2, (image.height - height) // 2
        image.crop((left, top, left + width, top + height)).save(target)


def matmul_rate(device: torch.device) -> float:
    """FLOP/s of the best of repeated MATMUL_SIDE² fp32 matrix products over MATMUL_SECONDS."""
    a = torch.rand(MATMUL_SIDE, MATMUL_SIDE, device=device)
    b = torch.rand(MATMUL_SIDE, MATMUL_SIDE, device=device)
    best = float("inf")
    stop = time.perf_counter() + MATMUL_SECONDS
    while time.perf_counter() < stop or best == float("inf"):
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_SIDE ** 3 / best


def count_flops(model: torch.nn.Module, lr_size: tuple[int, int], tile: int | None, overlap: int) -> int:
    """FLOPs of encoding an image of `lr_size` in tiles of `tile` (None: whole), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(model).to("meta")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        tiling.encode_tiled(meta, torch.empty(1, 3, *lr_size, device="meta"), tile, overlap,
                            tiling.tile_alignment(meta), progress=False)
    return counter.get_total_flops()


def run_scale(photo: Path, scale: float, model_arg: str | None, device_arg: str) -> dict:
    """In this process: demo.py's upscale of `photo` at `scale`, timed, with the FLOPs and the matmul rate."""
    device = resolve_device(device_arg, None)
    settings = pipeline.Settings(device, check_backend(BACKEND, device), None, None, MAX_OUTPUT_PIXELS, progress=False)
    model = pipeline.load_model(pipeline.model_path(model_arg), device)
    rgb = read_image(photo)
    lr_size = tuple(rgb.shape[-2:])
    size = output_size(lr_size, scale=scale)
    overlap = tiling.default_overlap(model)
    tile = tiling.auto_tile(model, lr_size, tiling.free_memory(device), overlap)
    rate_before = matmul_rate(device)
    synchronise = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        start = time.perf_counter()
        field = pipeline.encode(model, rgb[None].to(device), settings)
        synchronise()
        encoded = time.perf_counter()
        sr = model.render(field, size=size, backend=settings.backend)[0].clamp(0, 1).cpu()
        rendered = time.perf_counter()
    rate_after = matmul_rate(device)
    with tempfile.TemporaryDirectory() as folder:
        write_image(Path(folder) / "sr.png", sr)
    return {"scale": scale, "output": list(size), "tile": tile, "overlap": overlap,
            "tiles": len(tiling.plan_tiles(lr_size, tile or max(lr_size), overlap, tiling.tile_alignment(model))),
            "encode_s": encoded - start, "render_s": rendered - encoded,
            "model_flops": count_flops(model, lr_size, None, overlap),
            "executed_flops": count_flops(model, lr_size, tile, overlap),
            "matmul_flops_per_s": max(rate_before, rate_after), "threads": torch.get_num_threads()}


def measure_in_child(photo: Path, scale: float, model_arg: str | None, device_arg: str) -> dict:
    """`run_scale` in a fresh process, with that process's peak resident memory as the kernel counts it."""
    command = [sys.executable, __file__, "--child", str(scale), "--photo", str(photo), "--device", device_arg]
    command += ["--model", model_arg] if model_arg else []
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, stdout=out)
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"benchmark_encode.py: the x{scale:g} run failed")
        out.seek(0)
        result = json.loads(out.read())
    result["peak_rss_bytes"] = usage.ru_maxrss * KIB
    result["encode_flops_per_s"] = result["model_flops"] / result["encode_s"]
    result["rate_share_of_matmul"] = result["encode_flops_per_s"] / result["matmul_flops_per_s"]
    return result


def main() -> int:
    parser = cli.OneLineParser(prog="benchmark_encode.py", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", help=f"a photograph (default: scikit-image's {DEFAULT_PHOTO})")
    parser.add_argument("--size", type=size_arg, default=size_arg(DEFAULT_SIZE), metavar="WxH",
                        help=f"the photo's size (default {DEFAULT_SIZE})")
    parser.add_argument("--scales", type=float, nargs="+", default=[2.0, 4.0])
    parser.add_argument("--model", help="a checkpoint (default: the bundled model, as demo.py)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="JSON path (default: benchmarks/encode-photo-<WxH>-<device>-<date>.json)")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(run_scale(Path(args.photo), args.child, args.model, args.device)))
        return 0
    if args.photo:
        source = Path(args.photo)
    else:
        import skimage.data

        source = Path(skimage.data.data_dir) / DEFAULT_PHOTO
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        photo = Path(folder) / "photo.png"
        prepare_photo(source, photo, args.size)
        results = [measure_in_child(photo, scale, args.model, args.device) for scale in args.scales]
    load_after = os.getloadavg()
    height, width = args.size
    print(f"{width}x{height} photo ({source.name}), {platform.processor() or platform.machine()}, "
          f"{results[0]['threads']} threads, load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"{'scale':>5} {'tiles':>9} {'peak RSS':>9} {'encode':>8} {'render':>8} {'model':>10} {'executed':>10} "
          f"{'encode':>10} {'matmul':>10} {'ratio':>6}")
    print(f"{'':>5} {'(+context)':>9} {'GB':>9} {'s':>8} {'s':>8} {'GFLOP':>10} {'GFLOP':>10} {'GFLOP/s':>10} "
          f"{'GFLOP/s':>10} {'':>6}")
    for r in results:
        print(f"x{r['scale']:<4g} {r['tiles']:>4} (+{r['overlap']}) {r['peak_rss_bytes'] / 1e9:>9.2f} "
              f"{r['encode_s']:>8.1f} {r['render_s']:>8.1f} {r['model_flops'] / 1e9:>10.0f} "
              f"{r['executed_flops'] / 1e9:>10.0f} {r['encode_flops_per_s'] / 1e9:>10.1f} "
              f"{r['matmul_flops_per_s'] / 1e9:>10.1f} {r['rate_share_of_matmul']:>6.0%}")
    date = datetime.date.today().isoformat()
    out = Path(args.out) if args.out else ROOT / "benchmarks" / f"encode-photo-{width}x{height}-{args.device}-{date}.json"
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps({"device": args.device, "cpu": platform.processor() or platform.machine(),
                                   "date": date, "torch": torch.__version__, "photo": source.name,
                                   "lr_size": [height, width], "load_average_before": load_before,
                                   "load_average_after": load_after, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run("benchmark_encode.py", main))
