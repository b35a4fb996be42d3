"""Write docs/PERFORMANCE.md and the README's quality and speed tables from the measured JSON.

    python scripts/performance_page.py           # rewrite docs/PERFORMANCE.md and the README's marked blocks
    python scripts/performance_page.py --check   # exit 1 if either differs from what the JSON gives now

Every figure on the page comes from a file under benchmarks/ (written by scripts/benchmark.py,
scripts/benchmark_train.py, scripts/benchmark_viewer.py and scripts/device_check.py) or from the bundled
model's record (weights/continuoussr-edsr-baseline.json, written by scripts/bundle_model.py); each table names
its file, device and date. The README's blocks sit between `<!-- generated: NAME -->` and `<!-- end: NAME -->`.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import entry_point  # noqa: E402  (the standard library only: its guard is up before the heavy imports)

if __name__ == "__main__":
    entry_point.starting("performance_page.py")

import cli  # noqa: E402
from utils import EXIT_OK, REPOSITORY, atomic_path  # noqa: E402

EXIT_DIFFERS = 1
PAGE = Path("docs") / "PERFORMANCE.md"
README = Path("README.md")
MODEL_RECORD = Path("weights") / "continuoussr-edsr-baseline.json"
DEVICE_CHECK = Path("benchmarks") / "device-check-h200-2026-12-04"
# What that check timed of the rasterizer, said beside its figures (update with DEVICE_CHECK): its Triton kernels
# are not the ones rasterizer/triton_backend.py holds now.
DEVICE_CHECK_RASTERIZER = ("its rasterizer rows timed the lattice-window Triton kernels, since replaced by the "
                           "footprint kernels, which await a GPU check")
LIIF_REFERENCE = Path("benchmarks") / "reference-official-liif-h100.json"
CPU_PHOTO = Path("benchmarks") / "encode-photo-1200x900-cpu-2026-12-07.json"
BUNDLED_ENCODER = "edsr-baseline"  # the bundled model's encoder, whose encode the megapixel rows time
PIXELS_PER_MEGAPIXEL = 1e6
CPU_RENDER_SMALL = Path("benchmarks") / "cpu-render-64x48-cpu-2026-12-01.json"
CPU_RENDER_LARGE = Path("benchmarks") / "cpu-render-256x192-numba-cpu-2026-12-01.json"
CPU_RENDER_BOTH = Path("benchmarks") / "cpu-render-both-sizes-cpu-2026-12-01.json"
CPU_RASTER = Path("benchmarks") / "raster-cpu-2026-11-24.json"
CPU_MODEL = Path("benchmarks") / "model-cpu-2026-11-24.json"
CPU_TRAIN = (Path("benchmarks") / "train-cpu-2026-11-24.json",
             Path("benchmarks") / "train-recipe-bf16-false-cpu-2026-12-03.json",
             Path("benchmarks") / "train-recipe-bf16-true-cpu-2026-12-03.json")
VIEWER = (Path("benchmarks") / "viewer-torch-cpu-2026-12-01.json",
          Path("benchmarks") / "viewer-numba-cpu-2026-12-01.json")
NO_RASTERIZER = "-"  # the backend field of a benchmark row that renders nothing (the encode)
MS_PER_S = 1000.0


def load(root: Path, path: Path) -> dict:
    return json.loads((root / path).read_text())


def duration(ms: float) -> str:
    """A time to three significant figures, in ms below a second, else in s."""
    if ms >= MS_PER_S:
        return f"{ms / MS_PER_S:.3g} s"
    return f"{ms:.3g} ms" if ms >= 1 else f"{ms:.2f} ms"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def source(path: Path, record: dict) -> str:
    """The caption line naming a table's file, device, software and date."""
    software = f", torch {record['torch']}" if "torch" in record else ""
    return f"*`{path.as_posix()}`: {record.get('device', '?')}{software}, {str(record['date'])[:10]}.*"


def quality_table(root: Path) -> list[str]:
    """The bundled model against bicubic on the test split, per scale (the README's table)."""
    record = load(root, MODEL_RECORD)
    psnr = record["psnr"]
    scales = sorted(psnr["model"], key=float)
    rows = [["bicubic"] + [f"{psnr['bicubic'][s]:.2f}" for s in scales],
            ["ContinuousSR (bundled)"] + [f"{psnr['model'][s]:.2f}" for s in scales],
            ["gain"] + [f"{psnr['model'][s] - psnr['bicubic'][s]:+.2f}" for s in scales]]
    caption = (f"*PSNR (dB, luma) on the {record['table_split']} split's photographs, which no model or choice saw; "
               f"LR = PIL bicubic of the HR. `{MODEL_RECORD.as_posix()}`, {record['date']}.*")
    return table(["test split"] + [f"x{s}" for s in scales], rows) + ["", caption]


def megapixel_rows(root: Path) -> tuple[list[list[str]], str]:
    """What encoding a megapixel costs with the bundled model: on a CPU (the photo benchmark) and on the device
    check's GPU (its LR 256x192 encode, per megapixel); the rows and their caption."""
    photo = load(root, CPU_PHOTO)
    run = max(photo["results"], key=lambda r: r["scale"])
    megapixels = photo["lr_size"][0] * photo["lr_size"][1] / PIXELS_PER_MEGAPIXEL
    model = load(root, DEVICE_CHECK / "model.json")
    gpu = next(r for r in model["results"] if r["encoder"] == BUNDLED_ENCODER and r["step"] == "encode")
    gpu_per_megapixel = gpu["median_ms"] / (gpu["lr"][0] * gpu["lr"][1] / PIXELS_PER_MEGAPIXEL)
    rows = [[f"encode a megapixel, bundled model ({BUNDLED_ENCODER}), CPU ({run['threads']} threads)",
             duration(MS_PER_S * run["encode_s"] / megapixels), "", ""],
            [f"encode a megapixel, bundled model ({BUNDLED_ENCODER}), GPU",
             duration(gpu_per_megapixel), "", ""]]
    caption = (f"Megapixel rows: a {photo['lr_size'][1]}x{photo['lr_size'][0]} photo encoded as demo.py does "
               f"({run['tiles']} tiles, peak resident memory {run['peak_rss_bytes'] / 1e9:.1f} GB; "
               f"{photo['device']}), {photo['date']} (`{CPU_PHOTO.as_posix()}`); on the GPU, the LR "
               f"{gpu['lr'][1]}x{gpu['lr'][0]} encode's time per megapixel.")
    return rows, caption


def speed_table(root: Path) -> list[str]:
    """This code on a GPU against the official code and LIIF, and what a megapixel costs (the README's table)."""
    check = load(root, DEVICE_CHECK / "device_check.json")
    model = load(root, DEVICE_CHECK / "model.json")
    liif = {row["what"]: row["median_ms"] for row in load(root, LIIF_REFERENCE)["results"]}
    rows = []
    for target in check["targets"]:
        what = re.sub(r" \(official [^)]*\)", "", target["what"])
        rows.append([what, duration(target["measured_ms"]), duration(target["official_h100_ms"]),
                     duration(liif[what]) if what in liif else ""])
    megapixel, megapixel_caption = megapixel_rows(root)
    caption = (f"*This code: one {model['device']}, torch {model['torch']}, fp32, {check['date']} "
               f"(`{DEVICE_CHECK.as_posix()}/`; {DEVICE_CHECK_RASTERIZER}). Official code (its gsplat fork) and LIIF: one "
               f"{load(root, LIIF_REFERENCE)['device']} (`{LIIF_REFERENCE.as_posix()}`). Medians after warm-up. "
               f"{megapixel_caption}*")
    return table(["case", "this code", "official", "LIIF"], rows + megapixel) + ["", caption]


def photo_table(root: Path) -> list[str]:
    """`scripts/benchmark_encode.py`: a photo per scale, its tiles, memory, times and arithmetic rate."""
    record = load(root, CPU_PHOTO)
    rows = [[f"x{r['scale']:g} → {r['output'][1]}x{r['output'][0]}", f"{r['tiles']} (+{r['overlap']} px)",
             f"{r['peak_rss_bytes'] / 1e9:.2f} GB", duration(MS_PER_S * r["encode_s"]),
             duration(MS_PER_S * r["render_s"]), f"{r['model_flops'] / 1e12:.1f} / {r['executed_flops'] / 1e12:.1f}",
             f"{r['encode_flops_per_s'] / 1e9:.0f}", f"{r['matmul_flops_per_s'] / 1e9:.0f} "
             f"({r['rate_share_of_matmul']:.0%})", f"{r['matmul_best_flops_per_s'] / 1e9:.0f} "
             f"({r['rate_share_of_best_matmul']:.0%})"] for r in record["results"]]
    load_average = f"{record['load_average_before'][0]:.2f} before, {record['load_average_after'][0]:.2f} after"
    return (table(["scale", "tiles (+context)", "peak RSS", "encode", "render", "TFLOP model / executed",
                   "encode GFLOP/s", "matmul GFLOP/s sustained (share)", "matmul GFLOP/s best (share)"], rows)
            + ["", source(CPU_PHOTO, record)[:-2] + f"; {record['photo']}, LR "
               f"{record['lr_size'][1]}x{record['lr_size'][0]}; load average {load_average}.*"])


def backend_table(root: Path, path: Path) -> list[str]:
    """A `scripts/benchmark.py cpu` file: one row per case, one column per backend, the encode in the caption."""
    record = load(root, path)
    backends = list(dict.fromkeys(r["backend"] for r in record["results"] if r["backend"] != NO_RASTERIZER))
    cases: dict[str, dict[str, float]] = {}
    for r in record["results"]:
        cases.setdefault(r["case"], {})[r["backend"]] = r["median_ms"]
    encodes = {case: by[NO_RASTERIZER] for case, by in cases.items() if NO_RASTERIZER in by}
    rows = [[case] + [duration(by[b]) if b in by else "" for b in backends]
            for case, by in cases.items() if case not in encodes]
    repeats = sorted({r["repeats"] for r in record["results"]})
    notes = "; ".join(f"{case}: {duration(ms)}" for case, ms in encodes.items())
    return (table(["case (median)"] + backends, rows)
            + ["", source(path, record)[:-2] + f"; runs per case {'-'.join(map(str, repeats))}; {notes}.*"])


def gpu_raster_table(root: Path) -> list[str]:
    """Triton against torch on the device check's raster cases, forward and forward+backward."""
    runs = {b: load(root, DEVICE_CHECK / f"raster-{b}.json") for b in ("triton", "torch")}
    torch_rows = {(r["case"], r["mode"]): r for r in runs["torch"]["results"]}
    rows = []
    for r in runs["triton"]["results"]:
        other = torch_rows[(r["case"], r["mode"])]
        rows.append([f"{r['gaussians']:,} Gaussians → {r['output'][2]}x{r['output'][1]} x{r['output'][0]}",
                     r["mode"], duration(r["median_ms"]), duration(other["median_ms"]),
                     f"{other['median_ms'] / r['median_ms']:.1f}", f"{r['peak_mib']:,.0f} / {other['peak_mib']:,.0f}"])
    return (table(["render (W x H x batch)", "pass", "triton", "torch", "torch / triton", "peak MiB triton / torch"],
                  rows) + ["", source(DEVICE_CHECK / "raster-triton.json", runs["triton"])])


def model_table(root: Path, path: Path) -> list[str]:
    """A `scripts/benchmark.py model` file: one row per step, one column per encoder."""
    record = load(root, path)
    encoders = list(dict.fromkeys(r["encoder"] for r in record["results"]))
    steps: dict[str, dict[str, float]] = {}
    for r in record["results"]:
        steps.setdefault(r["step"], {})[r["encoder"]] = r["median_ms"]
    lr = record["results"][0]["lr"]
    rows = [[step] + [duration(by[e]) if e in by else "" for e in encoders] for step, by in steps.items()]
    return table([f"LR {lr[1]}x{lr[0]} (median)"] + encoders, rows) + ["", source(path, record)]


def train_table(root: Path, paths: tuple[Path, ...]) -> list[str]:
    """`scripts/benchmark_train.py` files: one row each (config, batch, crop, backend, bf16, step, render share)."""
    rows, captions = [], []
    for path in paths:
        r = load(root, path)
        rows.append([f"`{Path(r['config']).name}`", str(r["batch"]), f"{r['inp_size']}²",
                     f"{r['scale_range'][0]:g}-{r['scale_range'][1]:g}", r["backend"], "bf16" if r["bf16"] else "fp32",
                     duration(r["step_ms_median"]), f"{100 * r['render_share']:.1f} %"])
        captions.append(source(path, r))
    return table(["recipe", "batch", "HR crop", "scales", "rasterizer", "precision", "step (median)",
                  "render share"], rows) + [""] + captions


def viewer_table(root: Path, paths: tuple[Path, ...]) -> list[str]:
    """`scripts/benchmark_viewer.py` files: a 1280x720 view per zoom, ContinuousSR and bicubic, per file."""
    records = [load(root, p) for p in paths]
    zooms = list(dict.fromkeys(r["zoom"] for r in records[0]["results"]))
    header = ["view 1280x720 (render + PNG, median)"] + [f"x{z:g}" for z in zooms]
    rows = []
    for path, record in zip(paths, records):
        by = {(r["zoom"], r["method"]): r["median_ms"] for r in record["results"]}
        name = path.stem.split("-")[1]
        rows.append([f"ContinuousSR ({name} rasterizer)"] + [duration(by[(z, "sr")]) for z in zooms])
        rows.append([f"bicubic (the {name} run)"] + [duration(by[(z, "bicubic")]) for z in zooms])
    return table(header, rows) + [""] + [source(p, r) for p, r in zip(paths, records)]


def train_run_table(root: Path) -> list[str]:
    """The device check's training step with each rasterizer (the paper's crop and batch)."""
    return train_table(root, tuple(DEVICE_CHECK / f"train-{b}.json" for b in ("triton", "torch")))


def raster_cpu_table(root: Path) -> list[str]:
    """`scripts/benchmark.py raster` on the CPU: one row per case and pass."""
    record = load(root, CPU_RASTER)
    rows = [[f"{r['gaussians']:,} Gaussians → {r['output'][2]}x{r['output'][1]}", r["mode"], r["backend"],
             duration(r["median_ms"]), f"{r['peak_mib']:,.0f}"] for r in record["results"]]
    return (table(["render", "pass", "backend", "median", "peak MiB (RSS increase)"], rows)
            + ["", source(CPU_RASTER, record)])


# (heading, a note or "", the table's lines from the repository root), in the page's order.
SECTIONS: tuple[tuple[str, str, Callable[[Path], list[str]]], ...] = (
    ("Against the official code and LIIF (GPU)",
     "The official code's and LIIF's figures are from an H100, this code's from an H200: the same generation, "
     "not the same card.", speed_table),
    ("GPU rasterizer: triton against torch", "", gpu_raster_table),
    ("GPU model: encode once, render at any scale", "", lambda r: model_table(r, DEVICE_CHECK / "model.json")),
    ("GPU training step (16 HR crops of 256², x4-x8, EDSR-baseline)", "", train_run_table),
    ("CPU rendering: numba against torch (the bundled model, LR 64x48)", "",
     lambda r: backend_table(r, CPU_RENDER_SMALL)),
    ("CPU rendering at both sizes, in one run", "", lambda r: backend_table(r, CPU_RENDER_BOTH)),
    ("CPU rendering with numba, LR 256x192", "", lambda r: backend_table(r, CPU_RENDER_LARGE)),
    ("CPU: a 1200x900 photo through demo.py's tiled encode (the bundled model)",
     "The encode's rate is the model's arithmetic (the untiled encode's FLOPs) over its time, set against the "
     "machine's fp32 matrix-multiply rate measured in the same run: sustained (the median of 2048² products over "
     "10 s before and after, as the encode runs for minutes) and best (a burst). Measured with "
     "`scripts/benchmark_encode.py`; peak RSS is the process's, as `/usr/bin/time -v` reports it.", photo_table),
    ("CPU rasterizer, torch backend", "", raster_cpu_table),
    ("CPU model, torch backend", "", lambda r: model_table(r, CPU_MODEL)),
    ("CPU training step", "`bf16` runs the encoder and head under bf16 autocast; what it gains depends on the CPU "
     "(measure it with `scripts/benchmark_train.py --bf16`).", lambda r: train_table(r, CPU_TRAIN)),
    ("Viewer: a zoomed view through the HTTP API (CPU)", "", lambda r: viewer_table(r, VIEWER)),
)
INTRO = """# Performance

Measured figures, each table from one JSON file under `benchmarks/` (its device and date below it). This page is
written by `scripts/performance_page.py`; to add a measurement, run the benchmark script, which writes the JSON,
then the page script. How to measure on a GPU: [GPU.md](GPU.md). The CPU figures are from 2-core x86-64 virtual
machines that were not always idle: compare ratios within one table, not absolute times across tables.

Regenerate: `.venv/bin/python scripts/performance_page.py`."""


def page(root: Path = REPOSITORY) -> str:
    """docs/PERFORMANCE.md as the JSON under `root` gives it."""
    lines = [INTRO]
    for heading, note, make in SECTIONS:
        lines += ["", f"## {heading}", ""] + ([note, ""] if note else []) + make(root)
    return "\n".join(lines) + "\n"


# The README's blocks: name → the table's lines.
README_BLOCKS: dict[str, Callable[[Path], list[str]]] = {"quality": quality_table, "speed": speed_table}


def readme(text: str, root: Path = REPOSITORY) -> str:
    """`text` (the README) with each marked block replaced by its table from the JSON under `root`."""
    for name, make in README_BLOCKS.items():
        pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end: {name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"the README has no block <!-- generated: {name} --> ... <!-- end: {name} -->")
        block = "\n".join(make(root))
        text = pattern.sub(lambda m: m.group(1) + block + "\n" + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = cli.OneLineParser(prog="performance_page.py", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is out of date")
    args = cli.parse(parser, argv)
    return args if isinstance(args, int) else cli.run("performance_page.py", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    """Write the pages that are out of date (with --check: say which, exit 1)."""
    wanted = {PAGE: page(), README: readme((REPOSITORY / README).read_text())}
    stale = [path for path, text in wanted.items()
             if not (REPOSITORY / path).is_file() or (REPOSITORY / path).read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path} is out of date: run scripts/performance_page.py", file=sys.stderr)
        return EXIT_DIFFERS if stale else EXIT_OK
    for path in stale:
        with atomic_path(REPOSITORY / path) as tmp:
            tmp.write_text(wanted[path])
        print(f"wrote {path}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
