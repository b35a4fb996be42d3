"""Smoke run of the whole model on this machine: build, encode a synthetic LR image once, render several scales.

The weights are random (no trained model is bundled yet), so the picture is not a super-resolution: this
checks that the pipeline runs end to end and reports how long each step takes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models  # noqa: E402

SPEC = {"name": "continuous-gaussian", "args": {"encoder_spec": {
    "name": "edsr-baseline", "args": {"no_upsampling": False, "scale": 4}}}}
SCALES = ((4.0, 4.0), (2.5, 2.5), (3.5, 2.25), (1.5, 1.5))


def synthetic_image(size: int = 48) -> torch.Tensor:
    """A (1, 3, size, size) pattern with edges, gradients and fine detail."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    rings = 0.5 + 0.5 * torch.cos(40 * ((x - 0.5) ** 2 + (y - 0.5) ** 2))
    return torch.stack((x, rings, (x + y > 1).float() * 0.8 + 0.1))[None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default="smoke.png", help="where to write the x4 render")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = models.make(SPEC).eval()
    inp = synthetic_image()
    with torch.no_grad():
        start = time.perf_counter()
        field = model.encode(inp)
        print(f"encode {tuple(inp.shape[-2:])}: {time.perf_counter() - start:.3f} s")
        for scale in SCALES:
            start = time.perf_counter()
            out = model.render(field, scale=scale)
            print(f"render x{scale[0]:g},{scale[1]:g} → {tuple(out.shape[-2:])}: {time.perf_counter() - start:.3f} s")
        out = model.render(field, scale=SCALES[0])
    image = (out[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(image).save(args.output)
    print(f"wrote {args.output} (random weights: a pipeline check, not a super-resolution)")


if __name__ == "__main__":
    main()
