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
context. The machine's matrix-multiply rate: 2048x2048 fp32 products on the same threads, repeated for
MATMUL_SECONDS just before and just after the encode; the encode's rate is compared with their median (the
machine's sustained rate, as the encode runs for minutes), and their best (a burst, often a quarter higher on a
shared virtual machine) is recorded beside it. On a CPU the encode is timed once (it takes minutes); on CUDA
after a warm-up, the median of ENCODE_REPEATS timed with CUDA events, with the peak GPU memory. Prints a table
and writes JSON under benchmarks/ (with the load average: on a shared machine the times are inflated).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import entry_point  # noqa: E402  (the standard library only: its guard is up before the heavy imports)

if __name__ == "__main__":
    entry_point.starting("benchmark_encode.py")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

import cli  # noqa: E402
from gaussian import output_size  # noqa: E402
from inference import pipeline, tiling  # noqa: E402
from inference.arguments import positive_float, size_arg  # noqa: E402
from inference.image_io import MAX_OUTPUT_PIXELS, read_image, write_image  # noqa: E402
from rasterizer import check_backend  # noqa: E402
from scripts.benchmark import measure  # noqa: E402
from utils import EXIT_USAGE, UsageError, atomic_path, describe_device, resolve_device  # noqa: E402

DEFAULT_SIZE = "1200x900"  # the LR photo, width x height
DEFAULT_PHOTO = "rocket.jpg"  # in skimage.data.data_dir
MATMUL_SIDE = 2048
MATMUL_SECONDS = 10.0  # time spent measuring the matrix-multiply rate, each time
ENCODE_REPEATS = 5  # timed encodes on CUDA, after one warm-up
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


def matmul_times(device: torch.device, seconds: float = MATMUL_SECONDS) -> list[float]:
    """Seconds of each of repeated MATMUL_SIDE² fp32 matrix products over `seconds`."""
    a = torch.rand(MATMUL_SIDE, MATMUL_SIDE, device=device)
    b = torch.rand(MATMUL_SIDE, MATMUL_SIDE, device=device)
    times: list[float] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or not times:
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def count_flops(model: torch.nn.Module, lr_size: tuple[int, int], tile: int | None, overlap: int) -> int:
    """FLOPs of encoding an image of `lr_size` in tiles of `tile` (None: whole), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(model).to("meta")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        tiling.encode_tiled(meta, torch.empty(1, 3, *lr_size, device="meta"), tile, overlap,
                            tiling.tile_alignment(meta), progress=False)
    return counter.get_total_flops()


def run_scale(photo: Path, scale: float, model_arg: str | None, device_arg: str,
              matmul_seconds: float = MATMUL_SECONDS) -> dict:
    """In this process: demo.py's upscale of `photo` at `scale`, timed, with the FLOPs and the matmul rates."""
    device = resolve_device(device_arg, None)
    settings = pipeline.Settings(device, check_backend(BACKEND, device), None, None, MAX_OUTPUT_PIXELS, progress=False)
    model = pipeline.load_model(pipeline.model_path(model_arg), device)
    rgb = read_image(photo)
    lr_size = tuple(rgb.shape[-2:])
    size = output_size(lr_size, scale=scale)
    tile, overlap = pipeline.tile_choice(model, lr_size, settings)  # as the encode below chooses them
    lr = rgb[None].to(device)
    matmul = matmul_times(device, matmul_seconds)
    synchronise = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        start = time.perf_counter()  # on a CPU the one timed run; on CUDA the warm-up
        field = pipeline.encode(model, lr, settings)
        synchronise()
        encode_s, peak = time.perf_counter() - start, {}
        if device.type == "cuda":
            timing = measure(lambda: pipeline.encode(model, lr, settings), device, 0, ENCODE_REPEATS)
            encode_s, peak = timing["median_ms"] / 1e3, {"peak_gpu_mib": timing["peak_mib"]}
        start = time.perf_counter()
        sr = model.render(field, size=size, backend=settings.backend)
        synchronise()
        render_s = time.perf_counter() - start
    matmul += matmul_times(device, matmul_seconds)
    with tempfile.TemporaryDirectory() as folder:
        write_image(Path(folder) / "sr.png", sr[0].clamp(0, 1).cpu())
    flop = 2 * MATMUL_SIDE ** 3
    return {"scale": scale, "output": list(size), "tile": tile, "overlap": overlap,
            "tiles": len(tiling.plan_tiles(lr_size, tile or max(lr_size), overlap, tiling.tile_alignment(model))),
            "encode_s": encode_s, "render_s": render_s, **peak,
            "model_flops": count_flops(model, lr_size, None, overlap),
            "executed_flops": count_flops(model, lr_size, tile, overlap),
            "matmul_flops_per_s": flop / statistics.median(matmul), "matmul_best_flops_per_s": flop / min(matmul),
            "threads": torch.get_num_threads(), "device": describe_device(device)}


def measure_in_child(photo: Path, scale: float, model_arg: str | None, device_arg: str, matmul_seconds: float) -> dict:
    """`run_scale` in a fresh process, with that process's peak resident memory as the kernel counts it."""
    command = [sys.executable, __file__, "--child", str(scale), "--photo", str(photo), "--device", device_arg,
               "--matmul-seconds", str(matmul_seconds)]
    command += ["--model", model_arg] if model_arg else []
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:  # the child's own one line, as this program's: one error, with its exit status
            err.seek(0)
            lines = err.read().strip().splitlines() or [f"the x{scale:g} run failed (exit status {code})"]
            reason = lines[-1].split(": error: ", 1)[-1]
            raise (UsageError if code == EXIT_USAGE else cli.Failure)(f"the x{scale:g} run: {reason}")
        out.seek(0)
        result = json.loads(out.read())
    result["peak_rss_bytes"] = usage.ru_maxrss * KIB
    result["encode_flops_per_s"] = result["model_flops"] / result["encode_s"]
    result["rate_share_of_matmul"] = result["encode_flops_per_s"] / result["matmul_flops_per_s"]
    result["rate_share_of_best_matmul"] = result["encode_flops_per_s"] / result["matmul_best_flops_per_s"]
    return result


def main() -> int:
    parser = cli.OneLineParser(prog="benchmark_encode.py", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", help=f"a photograph (default: scikit-image's {DEFAULT_PHOTO})")
    parser.add_argument("--size", type=size_arg, default=size_arg(DEFAULT_SIZE), metavar="WxH",
                        help=f"the photo's size (default {DEFAULT_SIZE})")
    parser.add_argument("--scales", type=positive_float, nargs="+", default=[2.0, 4.0])
    parser.add_argument("--model", help="a checkpoint (default: the bundled model, as demo.py)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--matmul-seconds", type=positive_float, default=MATMUL_SECONDS, metavar="S",
                        help=f"time spent on the matrix-multiply rate before and after each encode (default "
                             f"{MATMUL_SECONDS:g})")
    parser.add_argument("--out", help="JSON path (default: benchmarks/encode-photo-<WxH>-<device>-<date>.json)")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.child is not None:
        print(json.dumps(run_scale(Path(args.photo), args.child, args.model, args.device, args.matmul_seconds)))
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
        results = [measure_in_child(photo, scale, args.model, args.device, args.matmul_seconds) for scale in args.scales]
    load_after = os.getloadavg()
    height, width = args.size
    print(f"{width}x{height} photo ({source.name}), {results[0]['device']}, load average {load_before[0]:.2f} "
          f"before, {load_after[0]:.2f} after; matmul: median (sustained) and best of {MATMUL_SIDE}^2 products")
    print(f"{'scale':>5} {'tiles':>9} {'peak RSS':>9} {'encode':>8} {'render':>8} {'model':>8} {'executed':>8} "
          f"{'encode':>8} {'matmul':>8} {'ratio':>6} {'best':>8} {'ratio':>6}")
    print(f"{'':>5} {'(+context)':>9} {'GB':>9} {'s':>8} {'s':>8} {'TFLOP':>8} {'TFLOP':>8} {'GFLOP/s':>8} "
          f"{'GFLOP/s':>8} {'':>6} {'GFLOP/s':>8} {'':>6}")
    for r in results:
        print(f"x{r['scale']:<4g} {r['tiles']:>4} (+{r['overlap']}) {r['peak_rss_bytes'] / 1e9:>9.2f} "
              f"{r['encode_s']:>8.2f} {r['render_s']:>8.2f} {r['model_flops'] / 1e12:>8.1f} "
              f"{r['executed_flops'] / 1e12:>8.1f} {r['encode_flops_per_s'] / 1e9:>8.1f} "
              f"{r['matmul_flops_per_s'] / 1e9:>8.1f} {r['rate_share_of_matmul']:>6.0%} "
              f"{r['matmul_best_flops_per_s'] / 1e9:>8.1f} {r['rate_share_of_best_matmul']:>6.0%}")
    date = datetime.date.today().isoformat()
    out = (Path(args.out) if args.out
           else ROOT / "benchmarks" / f"encode-photo-{width}x{height}-{device.type}-{date}.json")
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps({"device": results[0]["device"], "date": date, "torch": torch.__version__, "photo": source.name,
                                   "lr_size": [height, width], "load_average_before": load_before,
                                   "load_average_after": load_after, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run("benchmark_encode.py", main))
