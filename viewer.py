"""A local web viewer: open an image, it is encoded once, then zoom and pan continuously through its Gaussian field.

    python viewer.py [--model CKPT] [--device auto|cpu|cuda:N] [--gpu N] [--port 8000] [--host 127.0.0.1]

The page (viewer_static/) shows each view rendered from the cached field at the screen's resolution — only the
visible window (`zoom.render_window`) — with bicubic of the same view until the render arrives, and bicubic and
ContinuousSR split or side by side. It downloads the current view, or the whole image at a scale or size
(demo.py's limits). The server binds to 127.0.0.1 unless --host says otherwise; nothing from the client touches
the file system: uploads are read from memory up to --max-upload-mb, and fields are kept in memory, at most
--max-images of them and --max-cache-mb in all, the least recently used evicted first.

The HTTP API and the cache are inference/viewer_app.py's.

Exit status: 0 stopped (Ctrl+C); 2 bad usage (one line on stderr, before any work).
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import socket
import sys

import entry_point  # the standard library only: its guard is up before the heavy imports

if __name__ == "__main__":
    entry_point.starting("viewer.py")

import uvicorn  # noqa: E402

import cli  # noqa: E402
from inference import pipeline  # noqa: E402
from inference.arguments import (  # noqa: E402
    AUTO, add_precision_option, non_negative_int, positive_int, tile_arg)
from inference.image_io import MAX_OUTPUT_PIXELS  # noqa: E402
from inference.viewer_app import (  # noqa: E402
    DEFAULT_MAX_CACHE_MIB, DEFAULT_MAX_IMAGES, DEFAULT_MAX_UPLOAD_MIB, MIB, Limits, create_app)
from rasterizer import check_backend  # noqa: E402
from utils import DEVICE_AUTO, DEVICE_CHOICES, UsageError, resolve_device  # noqa: E402

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MAX_PORT = 65535
LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "::1"]
# --max-upload-mb and --max-cache-mb: from one byte to this many MiB (1 TiB), so that the byte counts are numbers.
MAX_MEGABYTES = 1 << 20

log = logging.getLogger("viewer")


def port_arg(text: str) -> int:
    if not text.isdigit() or int(text) > MAX_PORT:
        raise argparse.ArgumentTypeError(f"--port must be a whole number from 0 (any free port) to {MAX_PORT}, "
                                         f"got {text!r}")
    return int(text)


def megabytes_arg(text: str) -> float:
    """A size in MiB from one byte to MAX_MEGABYTES (a larger one would overflow the byte count)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 1 / MIB <= value <= MAX_MEGABYTES:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"expected a size in MiB from {1 / MIB:.3g} (one byte) to "
                                         f"{MAX_MEGABYTES:,}, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = cli.OneLineParser(prog="viewer.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a ContinuousSR checkpoint (default: the bundled model)")
    parser.add_argument("--device", default=DEVICE_AUTO, help=f"{DEVICE_CHOICES} (auto: CUDA if available)")
    parser.add_argument("--gpu", type=non_negative_int, metavar="N", help="CUDA device N (as --device cuda:N)")
    parser.add_argument("--backend", default=AUTO, help="rasterizer backend (auto picks the fastest available)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
    parser.add_argument("--port", type=port_arg, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0: any free")
    add_precision_option(parser)
    parser.add_argument("--tile", type=tile_arg, default=None, metavar="auto|N",
                        help="encode in tiles of N x N input pixels (0: never); auto: as demo.py (default)")
    parser.add_argument("--tile-overlap", type=non_negative_int, metavar="N",
                        help="input pixels of context around each tile (default: as demo.py)")
    parser.add_argument("--max-pixels", type=positive_int, default=MAX_OUTPUT_PIXELS, metavar="N",
                        help=f"refuse whole-image downloads above N pixels (default {MAX_OUTPUT_PIXELS:,})")
    parser.add_argument("--max-upload-mb", type=megabytes_arg, default=DEFAULT_MAX_UPLOAD_MIB, metavar="MB",
                        help=f"refuse uploads above MB MiB (default {DEFAULT_MAX_UPLOAD_MIB})")
    parser.add_argument("--max-images", type=positive_int, default=DEFAULT_MAX_IMAGES, metavar="N",
                        help=f"fields kept in memory; the least recently used go first (default {DEFAULT_MAX_IMAGES})")
    parser.add_argument("--max-cache-mb", type=megabytes_arg, default=DEFAULT_MAX_CACHE_MIB, metavar="MB",
                        help="memory for images and fields in all, in MiB; it also bounds one upload's size "
                             f"(default {DEFAULT_MAX_CACHE_MIB})")
    parser.add_argument("-q", "--quiet", action="store_true", help="only the address, warnings and errors")
    return parser


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one), or a one-line UsageError."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen()
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def is_loopback(host: str) -> bool:
    """Whether every address `host` names (IPv4 and IPv6) is this machine's loopback."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
        return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)
    except (OSError, ValueError, UnicodeError):
        return False


def main(argv: list[str] | None = None) -> int:
    args = cli.parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    logging.basicConfig(format="%(name)s: %(message)s", level=logging.WARNING if args.quiet else logging.INFO)
    return cli.run("viewer.py", lambda: serve(args))


def serve(args: argparse.Namespace) -> int:
    """Load the model and serve until Ctrl+C (exit status 0)."""
    device = resolve_device(args.device, args.gpu)
    backend = check_backend(args.backend, device)
    path = pipeline.model_path(args.model)
    sock = listen(args.host, args.port)
    model = pipeline.load_model(path, device, args.precision)
    settings = pipeline.Settings(device, backend, args.tile, args.tile_overlap, args.max_pixels, progress=False)
    limits = Limits(round(args.max_upload_mb * MIB), args.max_images, round(args.max_cache_mb * MIB),
                    args.max_pixels)
    loopback = is_loopback(args.host)
    # Host headers are checked on every loopback address, IPv4 and IPv6 (no other site's page can reach the
    # viewer by DNS rebinding).
    app = create_app(model, settings, limits, LOOPBACK_HOSTS + [args.host] if loopback else None)
    if not loopback:
        log.warning("listening on %s: anyone who can reach this machine can use the viewer", args.host)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"viewer: model {path.name} on {device}; open http://{shown}:{port}/ (Ctrl+C to stop)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning" if args.quiet else "info", access_log=False))
    try:
        server.run(sockets=[sock])  # shuts down cleanly on SIGINT/SIGTERM, then re-raises the signal
    except KeyboardInterrupt:
        print("viewer: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
