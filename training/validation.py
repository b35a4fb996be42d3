"""Validation during training: mean RGB PSNR of the clamped render at each configured scale over an HR folder,
split over the processes, with a few renders kept as samples."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm import tqdm

import datasets
from evaluation import metrics
from inference.image_io import ImageError, write_image
from training import distributed
from training.logger import Logger
from training.render import RenderAtTarget
from utils import check_finite

# PSNR of a perfect render is capped by flooring the MSE (100 dB), so that a mean over images stays finite.
PSNR_CAP_DB = 100.0


class OutputWriteError(RuntimeError):
    """A file of the run (checkpoint, config, sample) could not be written, e.g. on a full disk; one line."""


def psnr_rgb(sr: torch.Tensor, gt: torch.Tensor) -> float:
    """Plain RGB PSNR (dB) of the clamped render, whole image, no shave, capped for a perfect match: a training
    monitor, not the benchmark protocol (test.py scores that)."""
    return min(metrics.psnr(sr.clamp(0, 1), gt).item(), PSNR_CAP_DB)


def make_val_sets(cfg: dict[str, Any]) -> dict[float, Any]:
    spec = cfg["val_dataset"]
    if spec is None:
        return {}
    base = datasets.make(spec["dataset"])
    return {float(s): datasets.make({"name": "sr-implicit-downsampled"},
                                    {"dataset": base, "scale_min": float(s), "scale_max": float(s)})
            for s in spec["scales"]}


def sample_name(dataset, position: int) -> str:
    source = dataset.source(position)
    return Path(source).stem if source is not None else f"{position:04d}"


def validate(model: nn.Module, val_sets: dict[float, Any], cfg: dict[str, Any], ctx: distributed.Context,
             log: Logger, out: Path, epoch: int) -> dict[float, float]:
    """Mean RGB PSNR per scale; images are split over the ranks and the sums all-reduced. Always fp32, as test.py
    and demo.py run the model: bf16's rounding moves the PSNR by about as much as an epoch of fine-tuning does
    (0.013 dB at x4 on the bundled model), which would let it choose best.pth."""
    runner = RenderAtTarget(model, False, cfg["rasterizer_backend"])
    model.eval()
    results = {}
    with torch.no_grad():
        for scale, dataset in val_sets.items():
            positions = range(ctx.rank, len(dataset), ctx.world_size)
            total = torch.zeros(2, dtype=torch.float64)
            for position in tqdm(positions, desc=f"val x{scale:g}", leave=False, disable=not ctx.is_main):
                sample = dataset[position]
                inp, gt = sample["inp"][None].to(ctx.device), sample["gt"][None].to(ctx.device)
                sr = runner(inp, gt.shape[-2:])
                check_finite(sr, f"the validation render of {sample_name(dataset, position)} at x{scale:g}")
                total += torch.tensor([psnr_rgb(sr, gt), 1.0], dtype=torch.float64)
                if ctx.is_main and position < cfg["val_samples"]:
                    name = f"{sample_name(dataset, position)}_x{scale:g}"
                    try:
                        write_image(out / "samples" / f"{name}.png", sr[0].float().cpu())
                    except ImageError as exc:
                        raise OutputWriteError(str(exc)) from None
                    log.image(f"val/{name}", sr[0].float().cpu(), epoch)
            total = distributed.all_reduce_sum(total.to(ctx.device), ctx).cpu()
            results[scale] = float(total[0] / total[1])
    model.train()
    return results
