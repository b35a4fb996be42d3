"""Measure the peak memory of `encode` per LR pixel for each encoder class: the `encode_bytes_per_lr_pixel`
figures that the encoder classes declare (models/encoder.py) for inference/tiling.py.

Each (encoder, size) runs in a fresh process: build the model (random weights), encode a tiny image to warm up,
then encode a size x size image under `torch.inference_mode()` and read the peak resident memory before and
after. The bytes per LR pixel are the slope between two sizes, so that fixed costs (weights, the allocator's
pools) cancel. CPU only; a GPU's per-pixel use is close, since the same tensors are made.

    python scripts/measure_encode_memory.py [--sizes 64 128]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The encoders in the configurations the head takes (64 channels at x4), as released or as the paper uses them.
ENCODER_SPECS = {
    "EDSREncoder": {"name": "edsr-baseline", "args": {"no_upsampling": False, "scale": 4}},
    "RDN": {"name": "rdn", "args": {"no_upsampling": False, "scale": 4}},
    "SwinIR": {"name": "swinir", "args": {"upsampler": "pixelshuffle", "upscale": 4}},
    "HAT": {"name": "hat", "args": {"upsampler": "pixelshuffle", "upscale": 4, "embed_dim": 180,
                                    "depths": [6] * 6, "num_heads": [6] * 6, "window_size": 16,
                                    "compress_ratio": 3, "squeeze_factor": 30, "mlp_ratio": 2}},
}
WARM_UP_SIZE = 8
KIB = 1024  # ru_maxrss is in KiB on Linux


def peak_bytes(encoder: str, size: int) -> int:
    """In this process: the growth of the peak resident memory while encoding a size x size image."""
    sys.path.insert(0, str(ROOT))
    import torch

    import models

    torch.set_num_threads(1)
    spec = {"name": "continuous-gaussian", "args": {"encoder_spec": ENCODER_SPECS[encoder]}}
    model = models.make(spec).eval()
    with torch.inference_mode():
        model.encode(torch.rand(1, 3, WARM_UP_SIZE, WARM_UP_SIZE))
        image = torch.rand(1, 3, size, size)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        model.encode(image)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (after - before) * KIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=(64, 128), help="two LR sides to measure")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(peak_bytes(args.child[0], int(args.child[1])))
        return
    small, large = args.sizes
    results = {}
    for encoder in ENCODER_SPECS:
        peaks = [int(subprocess.run([sys.executable, __file__, "--child", encoder, str(size)], check=True,
                                    capture_output=True, text=True).stdout) for size in (small, large)]
        per_pixel = (peaks[1] - peaks[0]) / (large ** 2 - small ** 2)
        results[encoder] = {"peak_bytes": dict(zip((small, large), peaks)), "bytes_per_lr_pixel": round(per_pixel)}
        print(f"{encoder}: {per_pixel / KIB:.1f} KiB per LR pixel", file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
