"""Measure the memory of encoding, as tiling (inference/tiling.py) plans it: per LR pixel for each encoder class
(the `encode_bytes_per_lr_pixel` figures in models/encoder.py) and the fixed cost of one chunk of the head
(gaussian.HEAD_CHUNK_BYTES).

The head runs in chunks of bounded size, so an encode's memory grows with the image only through the encoder
(its activations and its x4 features, which the head reads). Each measurement runs in a fresh process: build
the model (random weights), encode a tiny image to warm up, then read the peak resident memory before and after
the measured step under `torch.inference_mode()`.
- Encoder: its forward on a size x size image at two sizes; the bytes per LR pixel are the slope between them,
  so that fixed costs (weights, the allocator's pools) cancel.
- Head: one full chunk (gaussian.HEAD_CHUNK_PIXELS LR pixels) of the head on random features.
CPU only; a GPU's use is close, since the same tensors are made.

    python scripts/measure_encode_memory.py [--sizes 96 192]
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from entry_point import OneLineParser  # noqa: E402  (the standard library only)
# The encoders in the configurations the head takes (64 channels at x4), as released or as the paper uses them.
ENCODER_SPECS = {
    "EDSREncoder": {"name": "edsr-baseline", "args": {"no_upsampling": False, "scale": 4}},
    "RDN": {"name": "rdn", "args": {"no_upsampling": False, "scale": 4}},
    "SwinIR": {"name": "swinir", "args": {"upsampler": "pixelshuffle", "upscale": 4}},
    "HAT": {"name": "hat", "args": {"upsampler": "pixelshuffle", "upscale": 4, "embed_dim": 180,
                                    "depths": [6] * 6, "num_heads": [6] * 6, "window_size": 16,
                                    "compress_ratio": 3, "squeeze_factor": 30, "mlp_ratio": 2}},
}
HEAD = "head"  # the --child name of the head's measurement
WARM_UP_SIZE = 8
KIB = 1024  # ru_maxrss is in KiB on Linux


def peak_bytes(what: str, size: int) -> int:
    """In this process: the growth of the peak resident memory while the encoder `what` runs on a size x size
    image, or (`what` = HEAD) while the head computes one chunk."""
    sys.path.insert(0, str(ROOT))
    import torch

    import gaussian
    import models

    torch.set_num_threads(1)
    encoder = ENCODER_SPECS["EDSREncoder" if what == HEAD else what]
    model = models.make({"name": "continuous-gaussian", "args": {"encoder_spec": encoder}}).eval()
    with torch.inference_mode():
        model.encode(torch.rand(1, 3, WARM_UP_SIZE, WARM_UP_SIZE))
        if what == HEAD:
            side = math.isqrt(gaussian.HEAD_CHUNK_PIXELS)  # one square chunk
            features = torch.rand(1, gaussian.ENCODER_FEATURE_CHANNELS, *[gaussian.ENCODER_FEATURE_SCALE * side] * 2)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            model._head(features, (0, side), (0, side), torch.float32, None)
        else:
            image = torch.rand(1, 3, size, size)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            model.encoder(image)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (after - before) * KIB


def child(what: str, size: int) -> int:
    """`peak_bytes(what, size)` measured in a fresh process."""
    return int(subprocess.run([sys.executable, __file__, "--child", what, str(size)], check=True,
                              capture_output=True, text=True).stdout)


def main() -> None:
    parser = OneLineParser(prog=Path(__file__).name, description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=(96, 192), help="two LR sides to measure")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(peak_bytes(args.child[0], int(args.child[1])))
        return
    small, large = args.sizes
    results: dict = {}
    for encoder in ENCODER_SPECS:
        peaks = [child(encoder, size) for size in (small, large)]
        per_pixel = (peaks[1] - peaks[0]) / (large ** 2 - small ** 2)
        results[encoder] = {"peak_bytes": dict(zip((small, large), peaks)), "bytes_per_lr_pixel": round(per_pixel)}
        print(f"{encoder}: {per_pixel / KIB:.1f} KiB per LR pixel", file=sys.stderr)
    results[HEAD] = {"chunk_bytes": child(HEAD, 0)}
    print(f"head: {results[HEAD]['chunk_bytes'] / KIB ** 2:.0f} MiB per chunk", file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
