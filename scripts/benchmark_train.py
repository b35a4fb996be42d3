"""Training-step benchmark: iterations per second and where a step's time goes.

A step is split into phases measured separately: `encode` (encoder + head forward), `render` (rasterizer
forward), `loss`, `render_bwd` (backward of the render, down to the Gaussian field), `encode_bwd` (backward of
the field through the head and encoder) and `optimizer`, plus `data` when real data is loaded (`--path`).
Splitting the backward at the field gives the same gradients as one backward call. The render share is
(render + render_bwd) / step. On CUDA phases are timed with CUDA events, on the CPU with perf_counter.

Without --path, batches are synthetic (random LR/HR tensors of the recipe's shapes: one scale s ~ U(scale_min,
scale_max) per batch, LR floor(inp_size / s)), so the figures are the model's alone; with it, `data` is the wait
for train.py's own loader (`training.trainer.make_train_loader`), its share the share of a step spent waiting
for data. The step is train.py's own: its model and optimizer built from the config (`training.config.built`,
`training.optim.make_optimizer`), its encode and render (`training.render.RenderAtTarget`: bf16 autocast on CUDA
or the CPU when the config's `bf16` or --bf16 asks, the field and rasterizer float32).

--data-only times the loader alone, with each number of worker processes in --workers: samples/s of the loader
and per worker, the resident memory of every process (from /proc/PID/smaps_rollup and smaps: RSS, PSS, the
pages shared with other processes, the private ones, and the decoded cache's mapped pixels, which the page cache
holds once for all), and with --step-ms T the share of a step of T ms (the device's, slept here) spent waiting.

Prints a table and writes JSON (device, date, load average, config, figures) under benchmarks/, atomically.
"""
from __future__ import annotations

import argparse
import collections
import copy
import cProfile
import datetime
import json
import math
import os
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import entry_point  # noqa: E402  (the standard library only: its guard is up before the heavy imports)

if __name__ == "__main__":
    entry_point.starting("benchmark_train.py")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import cli  # noqa: E402
import datasets  # noqa: E402
import models  # noqa: E402
import rasterizer  # noqa: E402
from datasets.decoded_cache import SUFFIX as DECODED_SUFFIX  # noqa: E402
from gaussian import GaussianField  # noqa: E402
from inference.arguments import non_negative_int, positive_int  # noqa: E402
from training import distributed  # noqa: E402
from training.config import ConfigError, apply_overrides, built, complete, load_yaml  # noqa: E402
from training.optim import make_optimizer, seed_everything  # noqa: E402
from training.render import RenderAtTarget  # noqa: E402
from training.trainer import make_train_loader  # noqa: E402
from utils import (DEVICE_AUTO, DEVICE_CHOICES, EXIT_OK, UsageError, atomic_path, describe_device,  # noqa: E402
                   repository_path, resolve_device, usable_cpus)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "train" / "edsr-baseline.yaml"
PHASES = ("data", "encode", "render", "loss", "render_bwd", "encode_bwd", "optimizer")
# --data-only's defaults: untimed batches first (the workers' start), then timed batches.
DATA_WARMUP = 3
DATA_BATCHES = 30


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


def train_loader(cfg: dict, batch: int, workers: int, device: torch.device) -> torch.utils.data.DataLoader:
    """train.py's loader of the config's training data, as the one process of a run: `batch` samples a batch
    (one scale per batch, seeded), `workers` loader processes."""
    cfg = copy.deepcopy(cfg)
    cfg["train_dataset"].update(batch_size=batch, num_workers=workers)
    return make_train_loader(cfg, distributed.Context(rank=0, world_size=1, local_rank=0, device=device))


def loader_batches(loader: torch.utils.data.DataLoader) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of a train loader, epoch after epoch."""
    epoch = 0
    while True:
        loader.batch_sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


# /proc/PID/smaps fields, in kB.
SHARED_FIELDS = ("Shared_Clean", "Shared_Dirty")
PRIVATE_FIELDS = ("Private_Clean", "Private_Dirty")
KB_PER_MB = 1024


def smaps_fields(lines: Iterator[str]) -> dict[str, int]:
    fields: dict[str, int] = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            fields[parts[0][:-1]] = fields.get(parts[0][:-1], 0) + int(parts[1])
    return fields


def process_memory(pid: int) -> dict[str, float] | None:
    """Resident memory of a process in MB: rss, pss, shared, private (smaps_rollup), the decoded cache's pixels
    mapped (cache_rss, cache_private: pages only this process maps so far), and `own`: private less the
    cache's (page-cache pages any process mapping the file shares), i.e. what this process alone holds. None
    where /proc cannot tell (not Linux, a process gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            total = smaps_fields(f)
        cache_lines, in_cache = [], False
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split(maxsplit=5)
                if head and not head[0].endswith(":"):  # a mapping's first line: address range ... [path]
                    in_cache = len(head) == 6 and head[5].rstrip().endswith(DECODED_SUFFIX)
                elif in_cache:
                    cache_lines.append(line)
    except OSError:
        return None
    cache = smaps_fields(iter(cache_lines))
    private = sum(total.get(k, 0) for k in PRIVATE_FIELDS)
    cache_private = sum(cache.get(k, 0) for k in PRIVATE_FIELDS)
    kb = {"rss": total.get("Rss", 0), "pss": total.get("Pss", 0),
          "shared": sum(total.get(k, 0) for k in SHARED_FIELDS), "private": private,
          "cache_rss": cache.get("Rss", 0), "cache_private": cache_private, "own": private - cache_private}
    return {key: value / KB_PER_MB for key, value in kb.items()}


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a loader's workers), from /proc; none where there is no /proc."""
    children = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = entry.read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.parent.name))
    return sorted(children)


def time_loader(loader: torch.utils.data.DataLoader, warmup: int, batches: int, step_s: float) -> dict:
    """Samples/s of one epoch's iterator after `warmup` batches (worker start-up included there), the share of
    the time spent waiting for batches while each batch is followed by a `step_s` "step", and the memory of
    this process and of its workers (measured while they run)."""
    iterator = iter(loader)
    try:
        for _ in range(warmup):
            next(iterator)
        waited, samples, start = 0.0, 0, time.perf_counter()
        for _ in range(batches):
            before = time.perf_counter()
            samples += len(next(iterator)["gt"])
            waited += time.perf_counter() - before
            time.sleep(step_s)
        elapsed = time.perf_counter() - start
        workers = [process_memory(pid) for pid in child_pids(os.getpid())]
        return {"samples_per_s": samples / elapsed, "wait_share": waited / elapsed,
                "memory_mb": {"main": process_memory(os.getpid()), "workers": [m for m in workers if m]}}
    finally:
        del iterator  # stops the workers


# The stages of a sample (name, file, function of datasets/ or torch whose cumulative time is the stage's).
STAGES = (("read", "image_folder.py", "read_crop"), ("downscale", "wrappers.py", "bicubic_resize"),
          ("augment", "wrappers.py", "augment_pair"), ("to_float", "image_folder.py", "to_float"),
          ("sample", "wrappers.py", "__getitem__"), ("collate", "collate.py", "default_collate"))


def sample_stages(loader: torch.utils.data.DataLoader, batches: int) -> dict[str, float]:
    """Milliseconds per sample of each stage of a loader without workers (`STAGES`: read is the crop out of a
    cache, or the decode without one; collate stacks a batch), and `other` (RNG, the sample's dict), on one
    thread as in a loader worker; profiled (cProfile, whose own overhead they include)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    profile = cProfile.Profile()
    try:
        iterator = iter(loader)
        next(iterator)  # first use
        profile.enable()
        samples = sum(len(next(iterator)["gt"]) for _ in range(batches))
        profile.disable()
    finally:
        torch.set_num_threads(threads)
    stats = pstats.Stats(profile).stats
    ms = {name: 1e3 / samples * max((row[3] for (path, _, function), row in stats.items()
                                     if function == wanted and path.endswith(file)), default=0.0)
          for name, file, wanted in STAGES}
    ms["other"] = ms["sample"] - sum(ms[name] for name, _, _ in STAGES[:4])
    return ms


def data_only(cfg: dict, batch: int, cache_modes: list[str], worker_counts: list[int], warmup: int, batches: int,
              step_ms: float | None) -> dict:
    """The loader's figures for each cache mode and number of workers (`time_loader`), pure throughput and,
    with `step_ms`, against a step of that length; and where a sample's time goes (`sample_stages`)."""
    runs, stages = [], {}
    for cache in cache_modes:
        cfg = copy.deepcopy(cfg)
        cfg["train_dataset"]["dataset"].setdefault("args", {})["cache"] = cache
        for workers in worker_counts:
            run = time_workers(cfg, batch, workers, warmup, batches, step_ms)
            runs.append({"cache": cache, **run})
        loader = train_loader(cfg, batch, 0, torch.device("cpu"))
        stages[cache] = sample_stages(loader, batches)
        print(f"cache {cache}, ms per sample on one thread: "
              + ", ".join(f"{name} {value:.2f}" for name, value in stages[cache].items()), flush=True)
    return {"images": image_summary(loader.dataset.dataset), "runs": runs, "sample_stages_ms": stages}


def image_summary(dataset) -> dict | None:
    """How many images the data set holds and their sizes (H x W: count), where it lists them."""
    files, size = getattr(dataset, "files", None), getattr(dataset, "image_size", None)
    if files is None or size is None:
        return None
    sizes = collections.Counter("x".join(map(str, size(i))) for i in range(len(files)))
    return {"count": len(files), "sizes": dict(sizes)}


def time_workers(cfg: dict, batch: int, workers: int, warmup: int, batches: int, step_ms: float | None) -> dict:
    """`time_loader`'s figures for train.py's loader with `workers` processes (see `data_only`)."""
    loader = train_loader(cfg, batch, workers, torch.device("cpu"))
    needed = max(warmup, 1) + batches  # the stage profile's first batch is untimed too
    if len(loader) < needed:
        raise ConfigError(f"an epoch holds {len(loader)} batches of {batch}, fewer than the {needed} "
                          "to time: raise train_dataset.dataset.args.repeat (--set) or lower --steps")
    run = {"workers": workers, **time_loader(loader, warmup, batches, 0.0)}
    run["samples_per_s_per_worker"] = run["samples_per_s"] / max(workers, 1)
    del run["wait_share"]  # waiting is all a loop that does nothing else does
    if step_ms is not None:
        stepped = time_loader(loader, warmup, batches, step_ms / 1e3)
        run["with_step"] = {"step_ms": step_ms, "samples_per_s": stepped["samples_per_s"],
                            "wait_share": stepped["wait_share"]}
    mem = [m["own"] for m in run["memory_mb"]["workers"]]
    print(f"cache {cfg['train_dataset']['dataset']['args']['cache']}, {workers} worker(s): "
          f"{run['samples_per_s']:7.1f} samples/s ({run['samples_per_s_per_worker']:.1f} per worker)"
          + (f", own memory per worker {max(mem):.0f} MB" if mem else "")
          + (f"; with a {step_ms:g} ms step: waiting {run['with_step']['wait_share']:.1%} of it"
             if step_ms is not None else ""), flush=True)
    return run


def step(runner: RenderAtTarget, optimizer, batches, device, timer: PhaseTimer) -> None:
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


def worker_counts(text: str) -> list[int]:
    """--workers: a comma-separated list of non-negative integers."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 0:
        raise UsageError(f"--workers must be non-negative integers separated by commas, got {text!r}")
    return counts


def positive(value: float | None, flag: str) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UsageError(f"{flag} must be a positive number, got {value:g}")
    return value


def parse_args() -> argparse.Namespace:
    parser = cli.OneLineParser(prog="benchmark_train.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="training config (default: EDSR-baseline)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE")
    parser.add_argument("--path", help="time real batches from this HR folder (default: synthetic batches)")
    parser.add_argument("--batch", type=int, help="batch size (default: the config's train_dataset.batch_size)")
    parser.add_argument("--device", default=DEVICE_AUTO,
                        help=f"{DEVICE_CHOICES} (default auto: CUDA if available, else the CPU)")
    parser.add_argument("--backend", help="rasterizer backend (default: the config's rasterizer_backend)")
    parser.add_argument("--bf16", action="store_true",
                        help="bf16 autocast of the encoder and head, as train.py (default: the config's bf16)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help=f"timed steps (default: 50 on CUDA, 5 on CPU; --data-only: batches, {DATA_BATCHES})")
    parser.add_argument("--warmup", type=non_negative_int, default=None,
                        help=f"untimed steps first (default: 5 CUDA, 1 CPU; --data-only: batches, {DATA_WARMUP})")
    parser.add_argument("--data-only", action="store_true",
                        help="time the loader alone: samples/s, memory per process, waiting (no model)")
    parser.add_argument("--workers", default="1,2", help="--data-only: loader worker counts to time (default 1,2)")
    parser.add_argument("--cache", help="--data-only: image-folder cache modes to compare, e.g. none,mmap (default: "
                                        "the config's)")
    parser.add_argument("--step-ms", type=float,
                        help="--data-only: also time the loader against steps of this many ms (a device's step)")
    parser.add_argument("--out", help="JSON path (default: benchmarks/train[-data]-<device>-<date>.json)")
    return parser.parse_args()


def write_result(result: dict, out: str | None, default_name: str) -> None:
    path = Path(out) if out else Path("benchmarks") / f"{default_name}-{result['date']}.json"
    with atomic_path(path) as tmp:  # never a half-written result
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def recipe(cfg: dict, batch: int) -> dict:
    """What the figures were measured on: the config's data and sample recipe."""
    wrapper_args = cfg["train_dataset"]["wrapper"].get("args") or {}
    return {"dataset": cfg["train_dataset"]["dataset"], "batch": batch, "inp_size": wrapper_args.get("inp_size"),
            "scale_range": [wrapper_args.get("scale_min"), wrapper_args.get("scale_max")],
            "augment": wrapper_args.get("augment", False)}


def main() -> None:
    args = parse_args()
    code = cli.run("benchmark_train.py", lambda: run(args), usage_errors=(ValueError,))
    if code:
        sys.exit(code)


def run(args: argparse.Namespace) -> int:
    """Time the steps (or the loader alone), print the table and write the JSON."""
    device = resolve_device(args.device)
    overrides = list(args.overrides) + ([f"train_dataset.dataset.args.root_path={json.dumps(args.path)}"]
                                        if args.path else [])
    cfg = complete(apply_overrides(load_yaml(args.config), overrides))
    batch = cfg["train_dataset"]["batch_size"] if args.batch is None else args.batch
    if batch < 1:
        raise UsageError(f"--batch must be a positive integer, got {batch}")
    if args.data_only:
        counts, step_ms = worker_counts(args.workers), positive(args.step_ms, "--step-ms")
        caches = (args.cache.split(",") if args.cache
                  else [(cfg["train_dataset"]["dataset"].get("args") or {}).get("cache", "none")])
        warmup, steps = (DATA_WARMUP if args.warmup is None else args.warmup), args.steps or DATA_BATCHES
        load_before = os.getloadavg()
        figures = data_only(cfg, batch, caches, counts, warmup, steps, step_ms)
    else:
        bf16 = args.bf16 or cfg["bf16"]
        backend = rasterizer.resolve_backend(args.backend or cfg["rasterizer_backend"], device)
        seed_everything(cfg["seed"])
        model = built("model", models.make, cfg["model"]).to(device).train()
        optimizer = built("optimizer", make_optimizer, cfg,
                                [p for p in model.parameters() if p.requires_grad])
        batches = (loader_batches(train_loader(cfg, batch, cfg["train_dataset"]["num_workers"], device))
                   if args.path else synthetic_batches(cfg, batch, device, cfg["seed"]))
    if args.data_only:
        cores = usable_cpus()
        single = next((r for r in figures["runs"][::-1] if r["workers"] == 1), None)  # the last cache's
        result = {"mode": "data-only", "device": f"{platform.processor() or platform.machine()} CPU, {cores} cores",
                  "date": datetime.date.today().isoformat(), "torch": torch.__version__,
                  "load_average_before": load_before, "load_average_after": os.getloadavg(),
                  "config": config_name(args.config), **recipe(cfg, batch), "warmup_batches": warmup,
                  "timed_batches": steps, **figures,
                  # one worker per core, each as fast as the single-worker run: an estimate, not a measurement
                  "node_estimate": single and {"cores": cores,
                                               "samples_per_s": cores * single["samples_per_s_per_worker"]}}
        if single:
            print(f"node estimate: {cores} cores x {single['samples_per_s_per_worker']:.1f} samples/s a worker = "
                  f"{result['node_estimate']['samples_per_s']:.0f} samples/s (load average "
                  f"{result['load_average_after'][0]:.1f})")
        write_result(result, args.out, "train-data-cpu")
        return EXIT_OK
    runner = RenderAtTarget(model, bf16, backend)
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
    result = {"device": describe_device(device), "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "load_average": os.getloadavg(), "config": config_name(args.config), "model": cfg["model"],
              **recipe(cfg, batch), "data": "real" if args.path else "synthetic", "backend": backend, "bf16": bf16,
              "steps": steps, "warmup": warmup, "iterations_per_s": 1e3 / mean_step,
              "step_ms_median": statistics.median(totals), "phase_ms_median": medians, "phase_share": shares,
              "render_share": shares["render"] + shares["render_bwd"]}
    print(f"{result['device']}, batch {batch}, {result['data']} data, backend {backend}{', bf16' if bf16 else ''}:")
    print(f"{'phase':12s} {'median ms':>10s} {'share':>7s}")
    for phase in PHASES:
        print(f"{phase:12s} {medians[phase]:10.1f} {shares[phase]:7.1%}")
    print(f"{'step':12s} {result['step_ms_median']:10.1f}   {result['iterations_per_s']:.2f} it/s, "
          f"rasterizing {result['render_share']:.1%} of the step"
          + (f", waiting for data {shares['data']:.1%}" if args.path else ""))
    write_result(result, args.out, f"train-{device.type}")
    return EXIT_OK


if __name__ == "__main__":
    main()
