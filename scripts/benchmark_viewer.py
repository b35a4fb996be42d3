"""Time viewer.py's answer to a zoom: one view request through the HTTP API (render of the visible window + PNG).

    python scripts/benchmark_viewer.py [--model CKPT] [--image assets/example.png] [--size 1280x720]
                                       [--zooms 6,8,16] [--repeats 7] [--device cpu] [--out JSON]

The image is uploaded and encoded once; then, for each zoom, a window of the image centre at that zoom is
requested at --size (the page asks exactly this after a wheel turn), through the app's full ASGI stack in-process
(no sockets): the window's ContinuousSR render and, for comparison, its bicubic. Median and min of --repeats
timed requests after a warm-up, printed as a table and written as JSON (default benchmarks/viewer-<device>-<date>.json).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import entry_point  # noqa: E402  (the standard library only: its guard is up before the heavy imports)

if __name__ == "__main__":
    entry_point.starting("benchmark_viewer.py")

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

import cli  # noqa: E402
from inference import pipeline, viewer_app  # noqa: E402
from inference.arguments import AUTO, non_negative_int, positive_floats, positive_int, size_arg  # noqa: E402
from inference.image_io import MAX_OUTPUT_PIXELS  # noqa: E402
from rasterizer import check_backend  # noqa: E402
from scripts.benchmark import measure  # noqa: E402
from utils import describe_device, resolve_device  # noqa: E402

POLL_S = 0.05
METHODS = (viewer_app.SR, viewer_app.BICUBIC)


def main(argv: list[str] | None = None) -> int:
    parser = cli.OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: the bundled model)")
    parser.add_argument("--image", type=Path, default=ROOT / "assets" / "example.png")
    parser.add_argument("--size", type=size_arg, default=(720, 1280), metavar="WxH", help="the view's size")
    parser.add_argument("--zooms", type=positive_floats, default=[6.0, 8.0, 16.0],
                        help="output pixels per input pixel, comma-separated (default 6,8,16)")
    parser.add_argument("--device", default=AUTO)
    parser.add_argument("--backend", default=AUTO)
    parser.add_argument("--repeats", type=positive_int, default=7)
    parser.add_argument("--warmup", type=non_negative_int, default=1)
    parser.add_argument("--out", type=Path, help="JSON path (default: benchmarks/viewer-<device>-<date>.json)")
    args = cli.parse(parser, argv)
    if isinstance(args, int):
        return args
    return cli.run("benchmark_viewer.py", lambda: benchmark(args, argv))


def benchmark(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Time the views, print the table and write the JSON."""
    device = resolve_device(args.device)
    model = pipeline.load_model(pipeline.model_path(args.model), device)
    settings = pipeline.Settings(device, check_backend(args.backend, device), None, None, MAX_OUTPUT_PIXELS,
                                 progress=False)
    height, width = args.size
    results = []
    with TestClient(viewer_app.create_app(model, settings)) as client:
        start = time.perf_counter()
        info = client.post("/api/images", content=args.image.read_bytes(),
                           headers={"X-Filename": args.image.name}).json()
        while info["state"] == viewer_app.ENCODING:
            time.sleep(POLL_S)
            info = client.get(f"/api/images/{info['id']}").json()
        if info["state"] != viewer_app.READY:
            raise cli.Failure(info["error"])
        seconds = time.perf_counter() - start
        print(f"{args.image.name} {info['width']}x{info['height']}: upload + encode {seconds:.2f} s")
        for zoom in args.zooms:
            window = {"top": info["height"] / 2 - height / zoom / 2, "left": info["width"] / 2 - width / zoom / 2,
                      "height": height / zoom, "width": width / zoom, "out_width": width, "out_height": height}
            for method in METHODS:
                def request():
                    response = client.get(f"/api/images/{info['id']}/view", params={**window, "method": method})
                    if response.status_code != 200:
                        raise cli.Failure(response.json()["error"])

                timing = measure(request, device, args.warmup, args.repeats)
                results.append({"zoom": zoom, "method": method, "view": [height, width], **timing})
    print(f"{'zoom':>6} {'method':>8} {'view':>10} {'median ms':>10} {'min ms':>8}")
    for r in results:
        print(f"{r['zoom']:>6g} {r['method']:>8} {width:>5}x{height:<4} {r['median_ms']:>10.0f} {r['min_ms']:>8.0f}")
    date = datetime.date.today().isoformat()
    out = args.out or ROOT / "benchmarks" / f"viewer-{device.type}-{date}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": describe_device(device), "date": date, "torch": torch.__version__,
                               "backend": args.backend, "image": args.image.name,
                               "command": " ".join(["scripts/benchmark_viewer.py", *(argv or sys.argv[1:])]),
                               "results": results}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
