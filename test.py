"""Evaluate a checkpoint on a test config with the paper's protocol (LIIF family; docs/DESIGN.md §7).

    python test.py --config configs/test/test-set5-4.yaml --model ckpt.pth [--root DATA] [--scales 2,3,4] [--gpu N]
                   [--self-ensemble]

Prints PSNR / SSIM per image and their means, and the model's time per image (one encode plus one render).
--self-ensemble scores the mean over the eight flips and transposes of each input instead (EDSR's "+" rows;
inference/self_ensemble.py): eight encodes per image.
The config keys are documented in evaluation/protocol.py. Everything is checked before the model is loaded.
Exit code 2, with a one-line message, for a bad option (--workers < 0, --scales), a bad config, a missing or empty
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
from evaluation.protocol import (build_dataset, check_scales, check_workers,  # noqa: E402
                                 evaluate, format_report, load_config, load_model, parse_scales, resolve_data_paths,
                                 validate_config)
from inference.self_ensemble import OPTION_HELP as SELF_ENSEMBLE_HELP  # noqa: E402
from rasterizer import check_backend  # noqa: E402
from utils import (DEVICE_AUTO, DEVICE_CHOICES, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE,  # noqa: E402
                   NonFiniteError, UsageError, resolve_device, stop_cleanly_on_sigterm)

DEFAULT_WORKERS = 2


def main(argv: list[str] | None = None) -> int:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="test config (configs/test/*.yaml)")
    parser.add_argument("--model", required=True, help="checkpoint in the official format, or 'bicubic' for the "
                                                       "bicubic baseline (MATLAB-compatible, 8-bit)")
    parser.add_argument("--root", help="data root that the config's relative dataset paths are joined to "
                                       "(default: the config's data_root, else ./load)")
    parser.add_argument("--scales", help="comma-separated scales ≤ the config's: encode each LR once and render "
                                         "every scale from that field (see evaluation/protocol.py)")
    parser.add_argument("--save-dir", help="write the SR images to SAVE_DIR/x{scale}/{name}.png")
    parser.add_argument("--device", default=DEVICE_AUTO,
                        help=f"{DEVICE_CHOICES} (default auto: CUDA if available, else the CPU)")
    parser.add_argument("--gpu", type=int, metavar="N",
                        help="CUDA device N (the official flag; the same as --device cuda:N)")
    parser.add_argument("--backend", default="auto", help="rasterizer backend (auto, torch, triton, gsplat)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="data loader processes")
    parser.add_argument("--self-ensemble", action="store_true", help=SELF_ENSEMBLE_HELP)
    args = parser.parse_args(argv)
    try:
        check_workers(args.workers)
        config = resolve_data_paths(load_config(args.config), args.root)
        protocol = validate_config(config)
        scales = parse_scales(args.scales) if args.scales is not None else None
        dataset = build_dataset(config)
        scales = check_scales(dataset, protocol, scales)
        device = resolve_device(args.device, args.gpu)
        check_backend(args.backend, device)
        model = load_model(args.model, device, args.self_ensemble)
        result = evaluate(model, dataset, protocol, scales=scales, data_norm=config.get("data_norm"),
                          device=device, backend=args.backend, save_dir=args.save_dir, workers=args.workers,
                          description=Path(args.config).stem)
    except UsageError as exc:
        print(f"test.py: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteError as exc:
        print(f"test.py: error: {exc}; no score is given for a non-finite output", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:  # SIGINT, or SIGTERM through stop_cleanly_on_sigterm
        print("test.py: interrupted; no scores were reported", file=sys.stderr)
        return EXIT_INTERRUPTED
    ensemble = ", self-ensemble of 8" if args.self_ensemble else ""
    print(format_report(result, title=f"{args.config} with {args.model}{ensemble}"))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
