"""Compile the Triton kernels ahead of time for real GPU targets (no GPU needed) and print each build's resources.

    python scripts/triton_aot_report.py [--kernels forward,backward] [--cases ...] [--channels 1,2,3,4]
                                        [--capabilities 80,90] [--json out.json]

Every kernel × case (the JIT's specialisations, `rasterizer.triton_aot.CASES`) × channel count × target is
compiled exactly as the wrapper launches it; the table gives registers per thread and spill bytes from ptxas
(figures to read, not limits). Exits 1 if any build fails, 2 on bad options. Runs with TRITON_INTERPRET unset
and a fresh Triton cache, so that every build really compiles.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported: the interpreter's kernels do not compile
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cli  # noqa: E402
from rasterizer import triton_aot  # noqa: E402


def _choices(text: str, known, what: str, parser: argparse.ArgumentParser, convert=str) -> list:
    try:
        values = [convert(v) for v in text.split(",") if v]
    except ValueError:
        parser.error(f"--{what}: expected comma-separated values, got {text!r}")
    unknown = [v for v in values if v not in known]
    if unknown or not values:
        parser.error(f"--{what}: unknown {', '.join(map(str, unknown)) or 'empty list'} "
                     f"(known: {', '.join(map(str, known))})")
    return values


def main() -> None:
    parser = cli.OneLineParser(prog="triton_aot_report.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", default=",".join(triton_aot.KERNELS))
    parser.add_argument("--cases", default=",".join(triton_aot.CASES))
    parser.add_argument("--channels", default=",".join(map(str, triton_aot.CHANNELS)))
    parser.add_argument("--capabilities", default=",".join(map(str, triton_aot.CAPABILITIES)),
                        help="compute capabilities, e.g. 80,90")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="builds compiled at once (processes)")
    parser.add_argument("--json", help="also write the builds to this JSON file")
    args = parser.parse_args()
    kernels = _choices(args.kernels, list(triton_aot.KERNELS), "kernels", parser)
    cases = _choices(args.cases, list(triton_aot.CASES), "cases", parser)
    channels = _choices(args.channels, triton_aot.CHANNELS, "channels", parser, int)
    capabilities = _choices(args.capabilities, range(50, 130), "capabilities", parser, int)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    try:
        triton_aot.check_triton()
    except triton_aot.UnsupportedTriton as exc:
        print(f"triton_aot_report.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
    builds = []
    matrix = list(itertools.product(kernels, cases, channels, capabilities))
    with tempfile.TemporaryDirectory(prefix="triton-aot-cache-") as cache:
        os.environ["TRITON_CACHE_DIR"] = cache  # inherited by the workers
        print(f"triton {triton_aot.triton.__version__}: {len(matrix)} builds")
        print(f"{'kernel':9s} {'case':9s} {'C':>2s} {'sm':>3s}  {'regs':>5s} {'spill st/ld':>12s}")
        with ProcessPoolExecutor(min(args.jobs, len(matrix))) as pool:
            for build in pool.map(triton_aot.compile_build, *zip(*matrix)):
                builds.append(build)
                row = f"{build.kernel:9s} {build.case:9s} {build.channels:2d} {build.capability:3d}  "
                if build.ok:
                    spills = f"{build.spill_stores}/{build.spill_loads}"
                    print(row + f"{build.registers!s:>5s} {spills:>12s}", flush=True)
                else:
                    print(row + f"FAILED {build.error}", flush=True)
    failed = [b for b in builds if not b.ok]
    print(f"{len(builds) - len(failed)} builds compiled, {len(failed)} failed")
    if args.json:
        out = Path(args.json)
        partial = out.with_name(f".{out.name}.tmp")
        partial.write_text(json.dumps({"triton": triton_aot.triton.__version__,
                                       "builds": [dataclasses.asdict(b) for b in builds]}, indent=2) + "\n")
        partial.replace(out)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
