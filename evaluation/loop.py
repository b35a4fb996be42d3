"""The evaluation loop of the paper's protocol (docs/DESIGN.md §7): scores per image and scale, and timings.

Each image is encoded once (`model.encode`) and rendered at the ground truth's size (`model.render`). The
encoders reflect-pad to their window themselves and crop the features back (models/window_blocks.py), so the
field always covers exactly the LR image: no padding happens here, and no `window` option is needed.

With `scales` (test.py --scales), each image's LR is still encoded once and the one field is rendered at every
listed scale s ≤ the LR's own scale S: the reference at S is the HR image itself (the protocol's numbers), the
reference at s < S is the HR image downscaled to the rendered size round(h·s) x round(w·s) with MATLAB's bicubic
(`imresize`), i.e. the image a benchmark package would ship as the HR at that size. The shave follows s.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from datasets import DatasetError, UnreadableImageWarning
from evaluation.data import check_sample_scale, check_scales, item_names, reference_image, rendered_size, unscorable
from evaluation.metrics import EvalProtocol
from evaluation.schema import check_workers, parse_data_norm
from inference.image_io import ImageError, write_image
from utils import check_finite, worker_stops_cleanly


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def scale_label(scale: float) -> str:
    return f"x{scale:g}"


@dataclass
class Evaluation:
    """Per-image scores at each scale, and timings (seconds) of the model's work per image."""

    protocol: EvalProtocol
    scales: list[float]
    names: list[str] = field(default_factory=list)
    psnr: dict[float, list[float]] = field(default_factory=dict)
    ssim: dict[float, list[float]] = field(default_factory=dict)
    encode_seconds: list[float] = field(default_factory=list)
    render_seconds: dict[float, list[float]] = field(default_factory=dict)

    def mean(self, metric: str, scale: float) -> float:
        values = getattr(self, metric)[scale]
        return sum(values) / len(values)

    def seconds_per_image(self, scale: float) -> float:
        """Mean encode + render time per image at `scale` (the encode is shared by all scales)."""
        renders = self.render_seconds[scale]
        return (sum(self.encode_seconds) + sum(renders)) / len(renders)

    def summary(self) -> list[dict[str, float]]:
        return [{"scale": s, "psnr": self.mean("psnr", s), "ssim": self.mean("ssim", s),
                 "seconds_per_image": self.seconds_per_image(s),
                 "encode_seconds": sum(self.encode_seconds) / len(self.encode_seconds),
                 "render_seconds": sum(self.render_seconds[s]) / len(self.render_seconds[s])} for s in self.scales]

    def to_dict(self) -> dict[str, Any]:
        return {"eval_type": f"{self.protocol.kind}-{self.protocol.scale:g}", "images": len(self.names),
                "summary": self.summary(),
                "per_image": [{"name": name, **{scale_label(s): {"psnr": self.psnr[s][i], "ssim": self.ssim[s][i]}
                                                for s in self.scales}} for i, name in enumerate(self.names)]}

def evaluate(model: torch.nn.Module, dataset, protocol: EvalProtocol, *, scales: Sequence[float] | None = None,
             data_norm: Any = None, device: torch.device | str = "cpu", backend: str = "auto",
             save_dir: str | Path | None = None, workers: int = 0, progress: bool = True,
             description: str = "test", warmup: bool | None = None) -> Evaluation:
    """Encode each image once; render at the HR size (or at every `scales` entry, see the module docstring); score.

    `save_dir` receives the clamped SR images as save_dir/x{s}/{name}.png. `warmup` (default: on CUDA) first runs
    the model once on the first image, untimed and unscored, so that one-off costs (kernel compilation, cuDNN
    autotuning) do not count in the time per image.
    """
    device = torch.device(device)
    warmup = device.type == "cuda" if warmup is None else warmup
    check_workers(workers)
    scales = check_scales(dataset, protocol, scales)
    norm = {k: (sub.to(device), div.to(device)) for k, (sub, div) in parse_data_norm(data_norm).items()}
    result = Evaluation(protocol, scales, item_names(dataset), {s: [] for s in scales}, {s: [] for s in scales},
                        [], {s: [] for s in scales})
    # A worker loads whole images one at a time: more workers than images would only be started to idle (a huge
    # --workers would start processes without end).
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=min(workers, len(dataset)),
                        pin_memory=device.type == "cuda", worker_init_fn=worker_stops_cleanly)
    bar = tqdm(loader, desc=description, unit="image", disable=not progress, dynamic_ncols=True)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("error", UnreadableImageWarning)
            if warmup and len(dataset):
                inp = dataset[0]["inp"][None].to(device)
                model.render(model.encode((inp - norm["inp"][0]) / norm["inp"][1]), scale=scales[-1], backend=backend)
                _synchronize(device)
            for index, batch in enumerate(bar):  # the bar counts an image when asked for the next: no zip
                _evaluate_sample(model, result.names[index], batch, result, norm, device, backend, save_dir)
                bar.set_postfix(psnr=f"{result.mean('psnr', scales[-1]):.3f}")
    except (UnreadableImageWarning, ImageError, DatasetError) as exc:
        raise unscorable(exc) from None
    return result


def _evaluate_sample(model: torch.nn.Module, name: str, batch: dict[str, torch.Tensor], result: Evaluation,
                     norm: dict[str, tuple[torch.Tensor, torch.Tensor]], device: torch.device, backend: str,
                     save_dir: str | Path | None) -> None:
    """One encode, then one render and score per scale, appended to `result`."""
    protocol = result.protocol
    inp, gt = batch["inp"].to(device), batch["gt"].to(device)
    check_sample_scale(name, inp, gt, protocol)
    _synchronize(device)
    start = time.perf_counter()
    gaussians = model.encode((inp - norm["inp"][0]) / norm["inp"][1])
    _synchronize(device)
    result.encode_seconds.append(time.perf_counter() - start)
    if hasattr(gaussians, "check_finite"):  # a NaN or infinite Gaussian vanishes from the render: a black image
        gaussians.check_finite()
    for s in result.scales:
        size = rendered_size(protocol, s, tuple(inp.shape[-2:]), tuple(gt.shape[-2:]))
        start = time.perf_counter()
        sr = model.render(gaussians, size=size, backend=backend) * norm["gt"][1] + norm["gt"][0]
        _synchronize(device)
        result.render_seconds[s].append(time.perf_counter() - start)
        check_finite(sr, f"{name}: the model's output at x{s:g}")
        scores = protocol.at_scale(s).score(sr, reference_image(gt, size))
        result.psnr[s].append(scores["psnr"].item())
        result.ssim[s].append(scores["ssim"].item())
        if save_dir is not None:
            write_image(Path(save_dir) / scale_label(s) / f"{name}.png", sr[0].clamp(0, 1))
