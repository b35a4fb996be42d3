"""Train ContinuousSR: `python train.py --path /path/to/DIV2K_train_HR` (one process) or, on several GPUs or
nodes, `torchrun --nproc_per_node=N train.py --config configs/train/<recipe>.yaml --path ...`.

Every sample is an HR crop and its bicubic LR at a random scale (docs/DESIGN.md §7); the loss is L1 between
`model.render(model.encode(inp), size=gt.shape[-2:])` and the HR crop.

Config keys (YAML; every key but the three specs has a default; `--set key.sub=value` overrides any key, the
value parsed as YAML; `--path DIR` sets train_dataset.dataset.args.root_path, `--val-path DIR` the same for
val_dataset):
  train_dataset.dataset     dataset spec of the HR images, e.g. {name: image-folder, args: {root_path, repeat,
                            cache, first_k}} (datasets/)
  train_dataset.wrapper     sample spec, e.g. {name: sr-implicit-downsampled, args: {inp_size: 256 (the HR crop),
                            scale_min: 4, scale_max: 8, augment: true}}; one scale is drawn per batch
  train_dataset.batch_size  the GLOBAL batch (default 16): each of the N processes takes batch_size / N samples
                            (must divide), so a recipe means the same optimisation on any number of GPUs
  train_dataset.num_workers data-loader processes per training process (default 4)
  val_dataset               null (no validation, the default) or {dataset: spec of an HR folder, scales: [4, ...]}:
                            mean RGB PSNR of the clamped render at each scale (HR cropped to the LR grid, LR =
                            bicubic), over every image of the folder, split over the processes
  model                     model spec, e.g. {name: continuous-gaussian, args: {encoder_spec: {...}}}
  optimizer                 {name: adam | adamw, args} (default Adam, lr 1e-4)
  lr_scheduler              {name: step_lr | multi_step_lr | cosine_annealing_lr, args} stepped once per
                            epoch (default: halve the lr every 100 epochs), or null
  epoch_max                 epochs to train (default 1000)
  epoch_val                 validate every this many epochs, and after the last (default 1)
  epoch_save                also keep epoch-<n>.pth every this many epochs (default 0: only last and best)
  save_every_steps          also save last.pth every this many steps, mid-epoch (default 0: at epoch ends only)
  log_every_steps           TensorBoard loss / lr / gradient-norm every this many steps (default 50)
  val_samples               images per scale whose renders are kept as samples (default 2)
  seed                      seeds model initialisation, shuffling, scales, crops and flips (default 0)
  bf16                      bf16 autocast of the training steps' encoder and head, on CUDA or the CPU (default
                            false; the rasterizer and validation stay float32); the gain depends on the CPU, even
                            among those with AVX512-BF16 (measure: scripts/benchmark_train.py --bf16); on a CPU
                            without native bf16 it warns once and runs fp32 (bf16 would be far slower)
  grad_clip                 max gradient norm, or null (default)
  warmup_steps              the first N steps of a run take lr x step / N (step = 1..N), then the schedule's own
                            lr (default 0: none). A fine-tune (init_from) starts Adam's moments afresh, and its
                            first full-size steps move every weight by about lr; the warm-up keeps them small
  ema_decay                 null (default) or d in (0, 1): keep an exponential moving average of the weights,
                            ema <- d * ema + (1 - d) * weights after every step, starting from the initial
                            weights; validation, best.pth and every checkpoint's model are then the average
                            (what test.py, demo.py and bundle_model.py load), and the trained weights go in the
                            checkpoint's train_sd for resuming. Small batches make noisy steps; the average
                            keeps their mean (horizon about 1 / (1 - d) steps, e.g. 0.999: 1000)
  rasterizer_backend        auto | torch | numba | triton | ... (default auto)
  init_from                 null (default) or an official checkpoint whose model weights start a NEW run
                            (fine-tuning: fresh optimizer, scheduler and counters; the model specs must match);
                            ignored when resuming, where the resumed checkpoint's weights are used; with a
                            val set they are validated first (epoch 0), so best.pth is never worse than them

The output folder (--out, default save/<config name>) holds config.yaml (the config used), last.pth (every
epoch), best.pth (best mean validation PSNR), epoch-<n>.pth, tensorboard/ (train/loss, train/lr, train/grad_norm,
val/psnr_x<s>, val/psnr, sample images; written with tensorboardX, else with torch's writer where the tensorboard
package is installed, else not at all), samples/ (the latest sample renders) and log.txt.
Checkpoints use the official format {'model': {'name', 'args', 'sd'}, 'optimizer', 'epoch', 'config'} plus what
resuming needs ('step', 'batch_in_epoch', 'lr_scheduler', 'rng', 'best_psnr', 'best_epoch'; 'train_sd' with
ema_decay), written atomically;
`--resume <ckpt>` continues at the same epoch, batch and step, with the same optimizer, scheduler and RNG state.
`--time-limit MINUTES` stops the run after the step at which that much wall time has passed, with last.pth saved
there (exit 0): training in time-boxed commands (a lent device, a CPU session) loses no step between them.
A non-finite loss or gradient stops the run (exit 1) before the step is applied, a non-finite validation render
before the epoch is saved; the checkpoints on disk are the last good ones.

Every option is checked before any work starts, and a refused run writes nothing (no folder, log or TensorBoard
file): the config's keys and numbers, the rasterizer backend on the device, the optimizer and the whole lr schedule
(built on a throwaway parameter and stepped through every epoch), the model, the data sets and the checkpoint to
resume. Exit status 2 and one line for bad input; 1 when the run itself fails (a non-finite loss, a checkpoint that
cannot be written, e.g. a full disk: the previous checkpoint is kept); 130 for SIGINT or SIGTERM, which stop the run
at once with the last checkpoint intact. Temporary files that a killed run (kill -9) left beside its checkpoints
are removed when the next run starts in that folder.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import random
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

import datasets
import models
import rasterizer
from evaluation import metrics
from gaussian import GaussianField
from inference.image_io import ImageError, write_image
from training import distributed
from training.config import ConfigError, apply_overrides, complete, load_yaml, save_config
from training.lr_schedule import check_lr_schedule
from training.resume_state import check_resume_state
from training.tensorboard import close_writer, guard_writer
from utils import (DEVICE_AUTO, DEVICE_CHOICES, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, NonFiniteError,
                   UsageError, check_finite, remove_stale_temporaries, resolve_device, stop_cleanly_on_sigterm,
                   worker_stops_cleanly)

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "train" / "edsr-baseline.yaml"
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULERS = {"step_lr": torch.optim.lr_scheduler.StepLR, "multi_step_lr": torch.optim.lr_scheduler.MultiStepLR,
              "cosine_annealing_lr": torch.optim.lr_scheduler.CosineAnnealingLR}
# PSNR of a perfect render is capped by flooring the MSE (100 dB), so that a mean over images stays finite.
PSNR_CAP_DB = 100.0  # a perfect match would be +inf: keeps means finite


class NonFiniteLoss(RuntimeError):
    """The loss or the gradient norm is NaN or infinite: training stops before the step is applied."""


class TimeLimitReached(Exception):
    """--time-limit has passed: last.pth holds the step just taken, and --resume continues from it."""


class OutputWriteError(RuntimeError):
    """A file of the run (checkpoint, config, sample) could not be written, e.g. on a full disk; one line."""


# The C++ source location that torch puts before the reason of a failed write.
TORCH_ENFORCE_PREFIX = re.compile(r"^\[enforce fail at [^\]]*\]\s*\.?\s*")


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, without torch's C++ source location (its write errors span lines)."""
    text = " ".join(str(getattr(exc, "strerror", None) or exc).split())
    return TORCH_ENFORCE_PREFIX.sub("", text) or type(exc).__name__


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    summary, _, details = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(description=summary, epilog=details,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: configs/train/edsr-baseline.yaml; when resuming, "
                        "the checkpoint's own config)")
    parser.add_argument("--path", help="training HR folder (sets train_dataset.dataset.args.root_path)")
    parser.add_argument("--val-path", help="validation HR folder (sets val_dataset.dataset.args.root_path)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE",
                        help="override a config key (repeatable); the value is parsed as YAML")
    parser.add_argument("--resume", help="checkpoint to continue from (e.g. save/<run>/last.pth)")
    parser.add_argument("--out", help="output folder (default: save/<config name>, or the resumed checkpoint's)")
    parser.add_argument("--time-limit", type=float, metavar="MINUTES",
                        help="stop cleanly once this much wall time has passed: last.pth is saved at the step "
                             "reached (exit status 0) and --resume continues, e.g. in time-boxed device sessions")
    parser.add_argument("--device", default=DEVICE_AUTO,
                        help=f"{DEVICE_CHOICES} (default auto: CUDA if available, else the CPU; under torchrun "
                             "each process takes CUDA device LOCAL_RANK)")
    return parser.parse_args(argv)


def folder_override(path: str, key: str) -> str:
    return f"{key}.dataset.args.root_path={json.dumps(str(path))}"  # quoted: a path is never parsed as YAML


def built(what: str, make, *args, **kwargs):
    """`make(*args, **kwargs)`, with a wrong or missing spec argument reported as a config error about `what`."""
    try:
        return make(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: {exc}") from None


def prepare_config(args: argparse.Namespace, device: torch.device = torch.device("cpu")
                   ) -> tuple[dict[str, Any], dict[str, Any] | None, Path]:
    """(config, checkpoint to resume or None, output folder) from the command line, every option checked for a
    run on `device` (ConfigError / CheckpointError otherwise); nothing is written."""
    ckpt = models.load_checkpoint(args.resume) if args.resume else None
    if args.config or ckpt is None:
        raw = load_yaml(args.config or DEFAULT_CONFIG)
        name = Path(args.config or DEFAULT_CONFIG).stem
    else:
        if not isinstance(ckpt.get("config"), dict):
            raise ConfigError(f"{args.resume} holds no training config; pass --config")
        raw, name = ckpt["config"], None
    if args.val_path and not raw.get("val_dataset"):
        raw = {**raw, "val_dataset": {"dataset": {"name": "image-folder", "args": {}}}}
    overrides = [folder_override(path, key) for path, key in ((args.path, "train_dataset"),
                                                              (args.val_path, "val_dataset")) if path]
    cfg = complete(apply_overrides(raw, overrides + list(args.overrides)))
    if args.out:
        out = Path(args.out)
    elif ckpt is not None:
        out = Path(args.resume).resolve().parent
    else:
        out = Path("save") / name
    if ckpt is None and cfg["init_from"] and not Path(cfg["init_from"]).is_file():
        raise ConfigError(f"init_from: checkpoint not found: {cfg['init_from']}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if ckpt is None and (out / "last.pth").exists():
        raise ConfigError(f"{out} already holds a run: pass --resume {out / 'last.pth'} or choose another --out")
    check_backend(cfg["rasterizer_backend"], device)
    check_optimisation(cfg)
    return cfg, ckpt, out


def check_backend(backend: Any, device: torch.device) -> None:
    """The rasterizer backend must exist and run on `device` (auto always does)."""
    try:
        rasterizer.check_backend(backend, device)
    except UsageError as exc:
        raise ConfigError(f"rasterizer_backend: {exc}") from None


# Errors that torch's optimizers and schedulers raise for arguments of the wrong type or value.
BAD_ARGUMENT_ERRORS = (TypeError, ValueError, ZeroDivisionError, KeyError, AttributeError, OverflowError)


@contextlib.contextmanager
def refusing_bad_args(key: str, spec: dict[str, Any]) -> Iterator[None]:
    """Report torch's error for a bad argument of the optimizer or lr_scheduler `spec` as a config error."""
    try:
        yield
    except ConfigError:
        raise
    except BAD_ARGUMENT_ERRORS as exc:
        raise ConfigError(f"{key} {spec.get('name')!r} with args {spec.get('args')}: {one_line(exc)}") from None


def check_optimisation(cfg: dict[str, Any]) -> None:
    """Build the optimizer and the lr scheduler on a throwaway parameter, step the optimizer once and check the
    schedule over all epoch_max epochs (training.lr_schedule, in constant time): an argument that would fail (or
    give a non-finite lr) only after an epoch or a hundred fails now, before any work."""
    param = nn.Parameter(torch.zeros(1))
    param.grad = torch.zeros(1)
    with refusing_bad_args("optimizer", cfg["optimizer"]):
        optimizer = make_optimizer(cfg, [param])
    with refusing_bad_args("lr_scheduler", cfg["lr_scheduler"]):
        scheduler = make_scheduler(cfg, optimizer)
    with refusing_bad_args("optimizer", cfg["optimizer"]):
        optimizer.step()
    if scheduler is None:
        return
    with refusing_bad_args("lr_scheduler", cfg["lr_scheduler"]):
        check_lr_schedule(scheduler, cfg["epoch_max"])


def summary_writer_class() -> type | None:
    """TensorBoard's SummaryWriter: tensorboardX's (requirements.txt), else torch's own (needs the tensorboard
    package, which stock CUDA images carry), else None: training must not fail for want of its charts."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
    return SummaryWriter


class Logger:
    """Messages to the console (without breaking progress bars) and to log.txt; TensorBoard; rank 0 only.

    Nothing is written until `open()` (called once the run is known to be valid): messages before it are kept
    and written to log.txt then.
    """

    def __init__(self, out: Path, active: bool):
        self.out, self.active, self.writer, self.log_file = out, active, None, None
        self.held: list[str] = []

    def open(self) -> None:
        """Create the output folder, log.txt (with the messages so far) and the TensorBoard writer."""
        if self.active:
            self.out.mkdir(parents=True, exist_ok=True)
            self.log_file = open(self.out / "log.txt", "a")
            self.log_file.writelines(message + "\n" for message in self.held)
            self.log_file.flush()
            self.held = []
            writer_class = summary_writer_class()
            if writer_class is None:
                self("TensorBoard logging is off: neither tensorboardX nor tensorboard is installed (log.txt has "
                     "every epoch's loss, lr and validation PSNR)")
            else:
                self.writer = guard_writer(writer_class(str(self.out / "tensorboard")))

    def __call__(self, message: str, console: bool = True) -> None:
        if self.active:
            if console:
                tqdm.write(message)
            if self.log_file is None:
                self.held.append(message)
            else:
                self.log_file.write(message + "\n")
                self.log_file.flush()

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image.clamp(0, 1), step)

    def close(self) -> None:
        if self.writer is not None:
            close_writer(self.writer)  # a full disk loses the charts' last events quietly: log.txt has them
        if self.log_file is not None:
            with contextlib.suppress(OSError):  # a full disk: its error is reported already; the file is closed
                self.log_file.close()


class RenderAtTarget(nn.Module):
    """`model.render(model.encode(inp), size=size)` as one forward, so that DDP wraps a real forward call.

    With bf16 the encoder and head run under bf16 autocast on the input's device; the field is float32 before
    rasterizing.
    """

    def __init__(self, model: nn.Module, bf16: bool, backend: str):
        super().__init__()
        self.model, self.bf16, self.backend = model, bf16, backend

    def encode(self, inp: torch.Tensor) -> GaussianField:
        """The float32 field of `inp`, the encoder and head under bf16 autocast when configured (any device)."""
        return self.model.encode(inp, precision="bf16" if self.bf16 else "fp32").to(torch.float32)

    def render(self, field: GaussianField, size: Sequence[int]) -> torch.Tensor:
        return self.model.render(field, size=tuple(size), backend=self.backend)

    def forward(self, inp: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return self.render(self.encode(inp), size)


def psnr_rgb(sr: torch.Tensor, gt: torch.Tensor) -> float:
    """Plain RGB PSNR (dB) of the clamped render, whole image, no shave, capped for a perfect match: a training
    monitor, not the benchmark protocol (test.py scores that)."""
    return min(metrics.psnr(sr.clamp(0, 1), gt).item(), PSNR_CAP_DB)


def make_optimizer(cfg: dict[str, Any], params) -> torch.optim.Optimizer:
    spec = cfg["optimizer"]
    if spec["name"] not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {spec['name']!r} (known: {', '.join(OPTIMIZERS)})")
    return OPTIMIZERS[spec["name"]](params, **(spec.get("args") or {}))


def make_scheduler(cfg: dict[str, Any], optimizer: torch.optim.Optimizer):
    spec = cfg["lr_scheduler"]
    if spec is None:
        return None
    if spec.get("name") not in SCHEDULERS:
        raise ConfigError(f"unknown lr_scheduler {spec.get('name')!r} (known: {', '.join(SCHEDULERS)})")
    return SCHEDULERS[spec["name"]](optimizer, **(spec.get("args") or {}))


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The lr multiplier of the run's `step`-th step (1-based): step / warmup_steps during the warm-up, else 1."""
    return min(1.0, step / warmup_steps) if warmup_steps else 1.0


@contextlib.contextmanager
def warmed_up(optimizer: torch.optim.Optimizer, factor: float) -> Iterator[None]:
    """Every group's lr times `factor` for the enclosed optimizer step, restored after: the epoch scheduler (whose
    chainable forms read the current lr) never sees the warm-up."""
    saved = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * factor
    try:
        yield
    finally:
        for group, lr in zip(optimizer.param_groups, saved):
            group["lr"] = lr


def make_train_loader(cfg: dict[str, Any], ctx: distributed.Context) -> DataLoader:
    spec = cfg["train_dataset"]
    dataset = datasets.make(spec["wrapper"], {"dataset": datasets.make(spec["dataset"])})
    batch = distributed.per_rank_batch(spec["batch_size"], ctx)
    indices = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=cfg["seed"])
    sampler = datasets.ScaleBatchSampler(indices, batch, getattr(dataset, "scale_range", None), seed=cfg["seed"],
                                         rank=ctx.rank)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=spec["num_workers"],
                      pin_memory=ctx.device.type == "cuda", persistent_workers=False,
                      worker_init_fn=worker_stops_cleanly)


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


def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter, in place; buffers are copied."""
    with torch.no_grad():
        for average, param in zip(ema.parameters(), model.parameters()):
            average.lerp_(param, 1.0 - decay)
        for average, buffer in zip(ema.buffers(), model.buffers()):
            average.copy_(buffer)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """The training state (model, optimizer, scheduler, counters) and the loop over epochs and batches."""

    def __init__(self, cfg: dict[str, Any], ctx: distributed.Context, out: Path, log: Logger,
                 ckpt: dict[str, Any] | None):
        self.cfg, self.ctx, self.out, self.log = cfg, ctx, out, log
        self.deadline: float | None = None  # time.monotonic() at which --time-limit stops the run
        seed_everything(cfg["seed"])
        self.model = built("model", models.make, cfg["model"]).to(ctx.device)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = built("optimizer", make_optimizer, cfg, trainable)
        self.scheduler = built("lr_scheduler", make_scheduler, cfg, self.optimizer)
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        self.best_psnr: float | None = None
        self.best_epoch: int | None = None
        self.ema: nn.Module | None = None  # the moving average of the weights (ema_decay), else None
        if ckpt is not None:
            self.restore(ckpt)
        elif cfg["init_from"]:
            self.initialise(cfg["init_from"])
        if cfg["ema_decay"] is not None:
            self.ema = copy.deepcopy(self.model).requires_grad_(False)
            if ckpt is not None and "train_sd" in ckpt:  # its model holds the average, train_sd the weights
                models.load_state_dict_strict(self.ema, ckpt["model"]["sd"])
            log(f"validating and saving the moving average of the weights (ema_decay {cfg['ema_decay']})")
        runner = RenderAtTarget(self.model, cfg["bf16"], cfg["rasterizer_backend"])
        # static_graph: the encoders keep weights that the head never uses (e.g. EDSR's final RGB conv).
        self.net = (DistributedDataParallel(runner, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                            else None, static_graph=True) if ctx.distributed else runner)
        self.loader = built("train_dataset", make_train_loader, cfg, ctx)
        self.val_sets = built("val_dataset", make_val_sets, cfg)
        log(f"model {cfg['model']['name']} ({sum(p.numel() for p in self.model.parameters()) / 1e6:.2f} M "
            f"parameters) on {ctx.device} x {ctx.world_size} process(es); {len(self.loader.dataset)} training "
            f"samples, {self.loader.batch_sampler.batch_size} per process per step, "
            f"{self.loader.batch_sampler.batches_per_epoch()} steps per epoch")

    def restore(self, ckpt: dict[str, Any]) -> None:
        check_resume_state(ckpt, self.optimizer, self.scheduler)
        try:
            models.load_state_dict_strict(self.model, ckpt.get("train_sd", ckpt["model"]["sd"]))
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.scheduler is not None and ckpt.get("lr_scheduler") is not None:
                self.scheduler.load_state_dict(ckpt["lr_scheduler"])
        except (KeyError, ValueError) as exc:
            raise models.CheckpointError(f"cannot resume from this checkpoint: {exc}") from None
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt.get("step", 0))
        self.batch_in_epoch = int(ckpt.get("batch_in_epoch", 0))
        self.best_psnr, self.best_epoch = ckpt.get("best_psnr"), ckpt.get("best_epoch")
        if "rng" in ckpt:
            set_rng_state(ckpt["rng"])
        self.log(f"resumed after epoch {self.epoch}, batch {self.batch_in_epoch}, step {self.step}")

    def initialise(self, path: str) -> None:
        """Start from the model weights of the official checkpoint at `path` (strict keys and shapes)."""
        source = models.load_checkpoint(path)
        if source["model"]["name"] != self.cfg["model"]["name"]:
            raise models.CheckpointError(f"init_from {path} holds a {source['model']['name']!r} model, the config "
                                         f"trains {self.cfg['model']['name']!r}")
        models.load_state_dict_strict(self.model, source["model"]["sd"])
        self.log(f"initialised the model from {path}")

    def release_ddp(self) -> None:
        """Free the DDP wrapper before the process group is destroyed. Its C++ reducer holds the group, and a gloo
        group whose last holder is the reducer is destroyed holding the GIL: it joins its worker threads while one
        may still be freeing a finished collective's tensors, which needs the GIL — a deadlock (pytorch#56297).
        Freed here first, the group's last holder is torch.distributed itself, which destroys it without the GIL."""
        self.net = None

    @property
    def published(self) -> nn.Module:
        """The weights that are validated and saved as the checkpoint's model: the moving average if kept."""
        return self.model if self.ema is None else self.ema

    def checkpoint(self) -> dict[str, Any]:
        ckpt = {"model": models.model_payload(self.cfg["model"], self.published),
                "optimizer": self.optimizer.state_dict(), "epoch": self.epoch, "config": self.cfg, "step": self.step,
                "batch_in_epoch": self.batch_in_epoch,
                "lr_scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "rng": rng_state(), "best_psnr": self.best_psnr, "best_epoch": self.best_epoch}
        if self.ema is not None:
            ckpt["train_sd"] = self.model.state_dict()
        return ckpt

    def save(self, *names: str) -> None:
        """Write the checkpoint under each name (atomically: a failed write keeps the previous file)."""
        if self.ctx.is_main:
            ckpt = self.checkpoint()
            for name in names:
                path = self.out / name
                try:
                    models.save_checkpoint(ckpt, path)
                except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as RuntimeError
                    raise OutputWriteError(f"cannot write checkpoint {path}: {one_line(exc)}") from None

    def output_names(self) -> list[str]:
        """The files of the output folder that the run writes atomically (checkpoints and config)."""
        every = self.cfg["epoch_save"]
        epochs = range(every, self.cfg["epoch_max"] + 1, every) if every else ()
        return ["config.yaml", "last.pth", "best.pth", *(f"epoch-{n}.pth" for n in epochs)]

    def remove_stale_temporaries(self) -> None:
        """Remove what a killed run (kill -9 during a save) left of its atomic writes in this folder."""
        for name in self.output_names():
            for path in remove_stale_temporaries(self.out / name):
                self.log(f"removed {path}, left by an interrupted save")

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
        """One optimisation step; (mean loss over ranks, gradient norm). Raises NonFiniteLoss before stepping."""
        inp = batch["inp"].to(self.ctx.device, non_blocking=True)
        gt = batch["gt"].to(self.ctx.device, non_blocking=True)
        loss = F.l1_loss(self.net(inp, gt.shape[-2:]), gt)
        mean_loss = float(distributed.all_reduce_sum(loss.detach(), self.ctx)) / self.ctx.world_size
        if not math.isfinite(mean_loss):
            raise NonFiniteLoss(f"the loss is {mean_loss}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg["grad_clip"] or math.inf))
        if not math.isfinite(grad_norm):
            raise NonFiniteLoss(f"the gradient norm is {grad_norm}")
        with warmed_up(self.optimizer, warmup_factor(self.step + 1, self.cfg["warmup_steps"])):
            self.optimizer.step()
        if self.ema is not None:
            update_ema(self.ema, self.model, self.cfg["ema_decay"])
        return mean_loss, grad_norm

    def train_epoch(self) -> float | None:
        """Train the rest of the current epoch; the mean loss of its steps (None if none were left to run)."""
        epoch = self.epoch + 1
        sampler = self.loader.batch_sampler
        sampler.set_epoch(epoch, self.batch_in_epoch)
        total, count = 0.0, 0
        bar = tqdm(self.loader, desc=f"epoch {epoch}/{self.cfg['epoch_max']}", leave=False,
                   disable=not self.ctx.is_main, initial=self.batch_in_epoch, total=sampler.batches_per_epoch())
        for batch in bar:
            loss, grad_norm = self.train_step(batch)
            self.step += 1
            self.batch_in_epoch += 1
            total, count = total + loss, count + 1
            bar.set_postfix(loss=f"{loss:.4f}")
            if self.cfg["log_every_steps"] and self.step % self.cfg["log_every_steps"] == 0:
                self.log.scalar("train/loss", loss, self.step)
                self.log.scalar("train/grad_norm", grad_norm, self.step)
                lr = self.optimizer.param_groups[0]["lr"] * warmup_factor(self.step, self.cfg["warmup_steps"])
                self.log.scalar("train/lr", lr, self.step)
            out_of_time = self.out_of_time()
            if out_of_time or (self.cfg["save_every_steps"] and self.step % self.cfg["save_every_steps"] == 0):
                self.save("last.pth")
            if out_of_time:
                bar.close()
                raise TimeLimitReached(f"stopped at the time limit after step {self.step} (epoch {epoch}, batch "
                                       f"{self.batch_in_epoch}); continue with --resume {self.out / 'last.pth'}")
        bar.close()
        return total / count if count else None

    def out_of_time(self) -> bool:
        """Whether the --time-limit deadline has passed, decided together by all processes (one stops, all stop)."""
        if self.deadline is None:
            return False
        expired = torch.tensor(float(time.monotonic() >= self.deadline), device=self.ctx.device)
        return float(distributed.all_reduce_sum(expired, self.ctx)) > 0

    def validate_epoch(self) -> tuple[str, bool]:
        """Validate at the current epoch and log the scalars: the message's part (", val PSNR ...") and whether
        this is the best epoch so far (then recorded as such)."""
        results = validate(self.published, self.val_sets, self.cfg, self.ctx, self.log, self.out, self.epoch)
        for scale, value in results.items():
            self.log.scalar(f"val/psnr_x{scale:g}", value, self.epoch)
        mean = sum(results.values()) / len(results)
        self.log.scalar("val/psnr", mean, self.epoch)
        message = ", val PSNR " + ", ".join(f"x{s:g} {v:.2f}" for s, v in results.items()) + " dB"
        best = self.best_psnr is None or mean > self.best_psnr
        if best:
            self.best_psnr, self.best_epoch = mean, self.epoch
            message += " (best)"
        return message, best

    def run(self) -> None:
        cfg = self.cfg
        if self.ctx.is_main:
            self.remove_stale_temporaries()
            try:
                save_config(cfg, self.out / "config.yaml")
            except OSError as exc:
                raise OutputWriteError(f"cannot write {self.out / 'config.yaml'}: {one_line(exc)}") from None
        if cfg["init_from"] and self.val_sets and self.step == 0:
            # The starting point of the curve: best.pth stays the initial weights until training beats them.
            start = time.perf_counter()
            scores, _ = self.validate_epoch()
            self.save("best.pth")
            self.log(f"epoch 0 (the weights of {cfg['init_from']}){scores} [{time.perf_counter() - start:.1f} s]")
        while self.epoch < cfg["epoch_max"]:
            start = time.perf_counter()
            loss = self.train_epoch()
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            lr = self.optimizer.param_groups[0]["lr"]
            if self.scheduler is not None:
                with warnings.catch_warnings():  # a resumed epoch with no batch left steps no optimizer first
                    warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"), UserWarning)
                    self.scheduler.step()
            message = f"epoch {self.epoch}/{cfg['epoch_max']}: " + ("" if loss is None else f"loss {loss:.4f}, ")
            message += f"lr {lr:.3g}"
            if loss is not None:
                self.log.scalar("train/epoch_loss", loss, self.epoch)
            names = ["last.pth"]
            if self.val_sets and (self.epoch % cfg["epoch_val"] == 0 or self.epoch == cfg["epoch_max"]):
                scores, best = self.validate_epoch()
                message += scores
                names += ["best.pth"] if best else []
            if cfg["epoch_save"] and self.epoch % cfg["epoch_save"] == 0:
                names.append(f"epoch-{self.epoch}.pth")
            self.save(*names)
            self.log(f"{message} [{time.perf_counter() - start:.1f} s]")
        self.log(f"done: {cfg['epoch_max']} epochs, {self.step} steps; checkpoints in {self.out}")


def fail(message: str, code: int) -> None:
    print(f"train.py: error: {message}", file=sys.stderr)
    sys.exit(code)


# What a bad config, data set, model or checkpoint raises: exit status 2, one line.
USAGE_ERRORS = (UsageError, datasets.DatasetError, datasets.UnknownDatasetError, models.UnknownModelError,
                models.CheckpointError, ImageError)


def show_skipped_image(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """warnings.showwarning that prints a skipped training image as one line (`train.py: warning: skipping ...`)
    instead of Python's two (with a source line); other warnings as Python does."""
    if issubclass(category, datasets.UnreadableImageWarning):
        print(f"train.py: warning: {message}", file=sys.stderr if file is None else file)
    else:
        _default(message, category, filename, lineno, file, line)


def interrupted_message(out: Path) -> str:
    last = out / "last.pth"
    if last.is_file():
        return f"interrupted; the last checkpoint is {last} (continue with --resume {last})"
    return "interrupted before the first checkpoint; nothing to resume"


def main(argv: Sequence[str] | None = None) -> nn.Module:
    """Run training; returns the trained model (this process's replica) for callers such as tests."""
    stop_cleanly_on_sigterm()
    warnings.showwarning = show_skipped_image
    started = time.monotonic()
    args = parse_args(argv)
    ctx = log = trainer = out = None
    try:
        try:  # everything is checked and built before the first file is written
            if args.time_limit is not None and not (math.isfinite(args.time_limit) and args.time_limit > 0):
                raise UsageError(f"--time-limit must be a positive number of minutes, got {args.time_limit:g}")
            device = resolve_device(args.device)
            cfg, ckpt, out = prepare_config(args, device)
            ctx = distributed.setup(device)
            log = Logger(out, ctx.is_main)
            trainer = Trainer(cfg, ctx, out, log, ckpt)
            if args.time_limit is not None:
                trainer.deadline = started + 60 * args.time_limit
        except USAGE_ERRORS as exc:
            fail(str(exc), EXIT_USAGE)
        try:
            log.open()
        except OSError as exc:
            fail(f"cannot write to {out}: {one_line(exc)}", EXIT_USAGE)
        trainer.run()
        return trainer.model
    except TimeLimitReached as exc:
        log(str(exc))
        return trainer.model
    except NonFiniteLoss as exc:
        log(f"stopped: {exc} at epoch {trainer.epoch + 1}, step {trainer.step + 1}; nothing was saved after the "
            f"last good step. Lower optimizer.args.lr or set grad_clip, then --resume {out / 'last.pth'}")
        fail(f"non-finite training ({exc}); last good checkpoint: {out / 'last.pth'}", EXIT_FAILURE)
    except NonFiniteError as exc:  # a validation render: the epoch's checkpoint is not written
        log(f"stopped: {exc} after epoch {trainer.epoch}")
        fail(f"non-finite validation ({exc}); last good checkpoint: {out / 'last.pth'}", EXIT_FAILURE)
    except OutputWriteError as exc:
        fail(f"{exc}; the previous checkpoints are intact", EXIT_FAILURE)
    except USAGE_ERRORS as exc:
        fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:  # SIGINT, or SIGTERM through stop_cleanly_on_sigterm
        message = interrupted_message(out) if out is not None else "interrupted before the run started"
        if log is not None:
            log(message, console=False)
        print(f"train.py: {message}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        if log is not None:
            log.close()
        if trainer is not None:
            trainer.release_ddp()
        if ctx is not None:
            distributed.cleanup(ctx)


if __name__ == "__main__":
    main()
