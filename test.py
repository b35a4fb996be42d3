"""Evaluate a checkpoint on a test config with the paper's protocol (LIIF family; docs/DESIGN.md §7).

    python test.py --config configs/test/test-set5-4.yaml [--model CKPT] [--root DATA] [--scales 2,3,4] [--gpu N]
                   [--self-ensemble]

Without --model it scores the bundled model (weights/continuoussr-edsr-baseline.pth), as demo.py and the viewer
use it; --model bicubic scores the bicubic baseline.

Prints PSNR / SSIM per image and their means, and the model's time per image (one encode plus one render).
--self-ensemble scores the mean over the eight flips and transposes of each input instead (EDSR's "+" rows;
inference/self_ensemble.py): eight encodes per image.
The config keys are documented in evaluation/schema.py. Everything is checked before the model is loaded.
Exit code 2, with a one-line message, for a bad option (--workers < 0, --scales, an unknown option), a bad config, a missing or empty
data folder, an image that cannot be read or is too small to score at a requested scale (the shave and SSIM's 11x11
window, from the image headers), an unreadable checkpoint, data whose scale does not match the config, or a device
that is not here (--gpu N without CUDA). Exit code 1 when the model's output is not finite (never a NaN score);
130 for SIGINT or SIGTERM, leaving no partial image in --save-dir.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import entry_point  # noqa: E402  the standard library only: its guard is up before the heavy imports

if __name__ == "__main__":
    entry_point.starting("test.py")

import cli  # noqa: E402
from evaluation.data import build_dataset, check_scales, resolve_data_paths  # noqa: E402
from evaluation.loading import BICUBIC_MODEL, load_model  # noqa: E402
from evaluation.loop import evaluate, scale_label  # noqa: E402
from evaluation.report import format_report  # noqa: E402
from evaluation.schema import check_workers, load_config, parse_scales, validate_config  # noqa: E402
from inference.arguments import add_precision_option  # noqa: E402
from inference.pipeline import model_path  # noqa: E402
from inference.self_ensemble import OPTION_HELP as SELF_ENSEMBLE_HELP  # noqa: E402
from rasterizer import check_backend  # noqa: E402
from utils import DEVICE_AUTO, DEVICE_CHOICES, EXIT_OK, check_writable, resolve_device  # noqa: E402

DEFAULT_WORKERS = 2


def build_parser() -> argparse.ArgumentParser:
    parser = cli.OneLineParser(prog="test.py", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="test config (configs/test/*.yaml)")
    parser.add_argument("--model", help="checkpoint in the official format (default: the bundled model), or "
                                        f"'{BICUBIC_MODEL}' for the bicubic baseline (MATLAB-compatible, 8-bit)")
    parser.add_argument("--root", help="data root that the config's relative dataset paths are joined to "
                                       "(default: the config's data_root, else ./load)")
    parser.add_argument("--scales", help="comma-separated scales ≤ the config's: encode each LR once and render "
                                         "every scale from that field (see evaluation/loop.py)")
    parser.add_argument("--save-dir", help="write the SR images to SAVE_DIR/x{scale}/{name}.png")
    parser.add_argument("--device", default=DEVICE_AUTO,
                        help=f"{DEVICE_CHOICES} (default auto: CUDA if available, else the CPU)")
    parser.add_argument("--gpu", type=int, metavar="N",
                        help="CUDA device N (the official flag; the same as --device cuda:N)")
    parser.add_argument("--backend", default="auto", help="rasterizer backend (auto, torch, triton, gsplat)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="data loader processes")
    parser.add_argument("--self-ensemble", action="store_true", help=SELF_ENSEMBLE_HELP)
    add_precision_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Check everything, load the model, score it and print the report."""
    check_workers(args.workers)
    config = resolve_data_paths(load_config(args.config), args.root)
    protocol = validate_config(config)
    scales = parse_scales(args.scales) if args.scales is not None else None
    dataset = build_dataset(config)
    scales = check_scales(dataset, protocol, scales)
    for s in scales if args.save_dir is not None else ():
        check_writable(Path(args.save_dir) / scale_label(s))  # a file, or a folder that takes none: refused now
    device = resolve_device(args.device, args.gpu)
    check_backend(args.backend, device)
    model_name = args.model if args.model == BICUBIC_MODEL else str(model_path(args.model))
    model = load_model(model_name, device, args.self_ensemble, args.precision)
    result = evaluate(model, dataset, protocol, scales=scales, data_norm=config.get("data_norm"), device=device,
                      backend=args.backend, save_dir=args.save_dir, workers=args.workers,
                      description=Path(args.config).stem)
    ensemble = ", self-ensemble of 8" if args.self_ensemble else ""
    print(format_report(result, title=f"{args.config} with {model_name}{ensemble}"))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = cli.parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    return cli.run("test.py", lambda: run(args), non_finite="; no score is given for a non-finite output",
                   interrupted="interrupted; no scores were reported")


if __name__ == "__main__":
    sys.exit(main())
