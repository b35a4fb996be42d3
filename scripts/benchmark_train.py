"""Training-step benchmark: iterations per second and where a step's time goes.

A step is split into phases measured separately: `encode` (encoder + head forward), `render` (rasterizer
forward), `loss`, `render_bwd` (backward of the render, down to the Gaussian field), `encode_bwd` (backward of
the field through the head and encoder) and `optimizer`, plus `data` when real data is loaded (`--path`).
Splitting the backward at the field gives the same gradients as one backward call. The render share is
(render + render_bwd) / step. On CUDA phases are timed with CUDA events, on the CPU with perf_counter.

Without --path, batches are synthetic (random LR/HR tensors of the recipe's shapes: one scale s ~ U(scale_min,
scale_max) per batch, LR floor(inp_size / s)), so the figures are the model's alone. The step is train.py's
own: its model and optimizer built from the config (`train.built`, `train.make_optimizer`), its encode and
render (`train.RenderAtTarget`: bf16 autocast on CUDA or the CPU when the config's `bf16` or --bf16 asks, the
field and rasterizer float32). Prints a table and writes JSON (device, date, config, figures) under
benchmarks/, atomically.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import datasets  # noqa: E402
import models  # noqa: E402
import rasterizer  # noqa: E402
import train  # noqa: E402
from gaussian import GaussianField  # noqa: E402
from training.config import ConfigError, apply_overrides, complete, load_yaml  # noqa: E402
from utils import (DEVICE_AUTO, DEVICE_CHOICES, EXIT_USAGE, UsageError, atomic_path, repository_path,  # noqa: E402
                   resolve_device)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "train" / "edsr-baseline.yaml"
PHASES = ("data", "encode", "render", "loss", "render_bwd", "encode_bwd", "optimizer")


class PhaseTimer:
    """Marks phase boundaries within a step; CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, object]] = []

    def start(self) -> None:
        self.marks = [("start", self._now())]

    def mark(self, phase: str) -> None:
        self.marks.append((phase, self._now()))

    def _now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def durations_ms(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
        out = {}
        for (_, before), (phase, after) in zip(self.marks, self.marks[1:]):
            out[phase] = before.elapsed_time(after) if self.cuda else (after - before) * 1e3
        return out


def synthetic_batches(cfg: dict, batch: int, device: torch.device, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of the recipe's shapes (one scale per batch), generated on the device; a config without
    an HR crop size is refused here, before any step."""
    args = cfg["train_dataset"]["wrapper"].get("args") or {}
    inp_size = args.get("inp_size")
    if inp_size is None:
        raise ConfigError("synthetic batches need train_dataset.wrapper.args.inp_size (or pass --path)")
    scale_min = args.get("scale_min", 1)
    scale_max = args.get("scale_max") or scale_min
    return _synthetic(inp_size, scale_min, scale_max, batch, device, torch.Generator().manual_seed(seed))


def _synthetic(inp_size: int, scale_min: float, scale_max: float, batch: int, device: torch.device,
               g: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        s = scale_min + (scale_max - scale_min) * float(torch.rand(1, generator=g))
        lr = math.floor(inp_size / s + datasets.wrappers.FLOOR_TOLERANCE)
        yield {"inp": torch.rand(batch, 3, lr, lr, generator=g).to(device),
               "gt": torch.rand(batch, 3, inp_size, inp_size, generator=g).to(device)}


def loader_batches(cfg: dict, batch: int, seed: int):
    """Endless batches from the config's real training data (seeded, one scale per batch)."""
    spec = cfg["train_dataset"]
    dataset = datasets.make(spec["wrapper"], {"dataset": datasets.make(spec["dataset"])})
    sampler = datasets.ScaleBatchSampler(torch.utils.data.RandomSampler(dataset), batch,
                                         getattr(dataset, "scale_range", None), seed=seed)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=spec["num_workers"],
                                         pin_memory=torch.cuda.is_available())
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def step(runner: train.RenderAtTarget, optimizer, batches, device, timer: PhaseTimer) -> None:
    """One training step of train.py's, timed phase by phase (the backward split at the field)."""
    timer.start()
    batch = next(batches)
    inp = batch["inp"].to(device, non_blocking=True)
    gt = batch["gt"].to(device, non_blocking=True)
    timer.mark("data")
    field = runner.encode(inp)
    timer.mark("encode")
    leaves = GaussianField(*(t.detach().requires_grad_(True) for t in (field.colour, field.cholesky, field.offset)))
    out = runner.render(leaves, gt.shape[-2:])
    timer.mark("render")
    loss = F.l1_loss(out, gt)
    timer.mark("loss")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    timer.mark("render_bwd")
    torch.autograd.backward([field.colour, field.cholesky, field.offset],
                            [leaves.colour.grad, leaves.cholesky.grad, leaves.offset.grad])
    timer.mark("encode_bwd")
    optimizer.step()
    timer.mark("optimizer")


def config_name(path: str) -> str:
    """The config's path relative to the repository when it lies inside it (so results do not name a machine)."""
    return repository_path(path) or str(path)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="training config (default: EDSR-baseline)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE")
    parser.add_argument("--path", help="time real batches from this HR folder (default: synthetic batches)")
    parser.add_argument("--batch", type=int, help="batch size (default: the config's train_dataset.batch_size)")
    parser.add_argument("--device", default=DEVICE_AUTO,
                        help=f"{DEVICE_CHOICES} (default auto: CUDA if available, else the CPU)")
    parser.add_argument("--backend", help="rasterizer backend (default: the config's rasterizer_backend)")
    parser.add_argument("--bf16", action="store_true",
                        help="bf16 autocast of the encoder and head, as train.py (default: the config's bf16)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 50 on CUDA, 5 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 CUDA, 1 CPU)")
    parser.add_argument("--out", help="JSON path (default: benchmarks/train-<device>-<date>.json)")
    args = parser.parse_args()
    try:
        device = resolve_device(args.device)
        overrides = list(args.overrides) + ([f"train_dataset.dataset.args.root_path={json.dumps(args.path)}"]
                                            if args.path else [])
        cfg = complete(apply_overrides(load_yaml(args.config), overrides))
        batch = args.batch or cfg["train_dataset"]["batch_size"]
        bf16 = args.bf16 or cfg["bf16"]
        backend = rasterizer.resolve_backend(args.backend or cfg["rasterizer_backend"], device)
        train.seed_everything(cfg["seed"])
        model = train.built("model", models.make, cfg["model"]).to(device).train()
        optimizer = train.built("optimizer", train.make_optimizer, cfg,
                                [p for p in model.parameters() if p.requires_grad])
        batches = loader_batches(cfg, batch, cfg["seed"]) if args.path else synthetic_batches(cfg, batch, device,
                                                                                             cfg["seed"])
    except (UsageError, ValueError, datasets.DatasetError, datasets.UnknownDatasetError,
            models.UnknownModelError) as exc:
        print(f"benchmark_train.py: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    runner = train.RenderAtTarget(model, bf16, backend)
    steps = args.steps or (50 if device.type == "cuda" else 5)
    warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 1)
    timer = PhaseTimer(device)
    for _ in range(warmup):
        step(runner, optimizer, batches, device, timer)
    per_step = []
    for index in range(steps):
        step(runner, optimizer, batches, device, timer)
        per_step.append(timer.durations_ms())
        print(f"step {index + 1}/{steps}: {sum(per_step[-1].values()):.1f} ms", file=sys.stderr, flush=True)
    totals = [sum(d.values()) for d in per_step]
    medians = {phase: statistics.median(d[phase] for d in per_step) for phase in PHASES}
    mean_step = statistics.fmean(totals)
    shares = {phase: statistics.fmean(d[phase] for d in per_step) / mean_step for phase in PHASES}
    wrapper_args = cfg["train_dataset"]["wrapper"].get("args") or {}
    result = {"device": device_name(device), "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "config": config_name(args.config), "model": cfg["model"], "batch": batch,
              "inp_size": wrapper_args.get("inp_size"),
              "scale_range": [wrapper_args.get("scale_min"), wrapper_args.get("scale_max")],
              "data": "real" if args.path else "synthetic", "backend": backend, "bf16": bf16,
              "steps": steps, "warmup": warmup, "iterations_per_s": 1e3 / mean_step,
              "step_ms_median": statistics.median(totals), "phase_ms_median": medians, "phase_share": shares,
              "render_share": shares["render"] + shares["render_bwd"]}
    print(f"{result['device']}, batch {batch}, {result['data']} data, backend {backend}{', bf16' if bf16 else ''}:")
    print(f"{'phase':12s} {'median ms':>10s} {'share':>7s}")
    for phase in PHASES:
        print(f"{phase:12s} {medians[phase]:10.1f} {shares[phase]:7.1%}")
    print(f"{'step':12s} {result['step_ms_median']:10.1f}   {result['iterations_per_s']:.2f} it/s, "
          f"rasterizing {result['render_share']:.1%} of the step")
    out = Path(args.out) if args.out else Path("benchmarks") / f"train-{device.type}-{result['date']}.json"
    with atomic_path(out) as tmp:  # never a half-written result
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
