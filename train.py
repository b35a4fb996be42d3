"""Train ContinuousSR: `python train.py --path /path/to/DIV2K_train_HR` (one process) or, on several GPUs or
nodes, `torchrun --nproc_per_node=N train.py --config configs/train/<recipe>.yaml --path ...`.

Every sample is an HR crop and its bicubic LR at a random scale (docs/DESIGN.md §7); the loss is L1 between
`model.render(model.encode(inp), size=gt.shape[-2:])` and the HR crop.

The config keys (YAML; `--set key.sub=value` overrides any key, the value parsed as YAML; `--path DIR` sets
train_dataset.dataset.args.root_path, `--val-path DIR` the same for val_dataset) are documented beside their
defaults in training/config.py.

The output folder (--out, default save/<config name>) holds config.yaml (the config used), last.pth (every
epoch), best.pth (best mean validation PSNR), epoch-<n>.pth, tensorboard/ (train/loss, train/lr, train/grad_norm,
val/psnr_x<s>, val/psnr, sample images; written with tensorboardX, else with torch's writer where the tensorboard
package is installed, else not at all), samples/ (the latest sample renders) and log.txt.
Checkpoints use the official format {'model': {'name', 'args', 'sd'}, 'optimizer', 'epoch', 'config'} plus what
resuming needs ('step', 'batch_in_epoch', 'lr_scheduler', 'rng', 'best_psnr', 'best_epoch'; 'train_sd' with
ema_decay), written atomically;
`--resume <ckpt>` continues at the same epoch, batch and step, with the same optimizer, scheduler and RNG state.
`--time-limit MINUTES` stops the run after the step at which that much wall time has passed, with last.pth saved
there (exit 0): training in time-boxed commands (a batch scheduler's time slots) loses no step between them.
Resuming a run that has finished all its epochs says so and exits 0 (raise epoch_max with --set to train on); one
that stopped beyond epoch_max is refused (exit 2).
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
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import entry_point  # the standard library only: its guard is up before the heavy imports

if __name__ == "__main__":
    entry_point.starting("train.py")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import cli  # noqa: E402
import datasets  # noqa: E402
import models  # noqa: E402
import rasterizer  # noqa: E402
from training import distributed  # noqa: E402
from training.config import ConfigError, apply_overrides, complete, load_yaml  # noqa: E402
from training.logger import Logger  # noqa: E402
from training.optim import check_optimisation  # noqa: E402
from training.trainer import NonFiniteLoss, TimeLimitReached, Trainer  # noqa: E402
from training.validation import OutputWriteError  # noqa: E402
from utils import (  # noqa: E402
    DEVICE_AUTO, DEVICE_CHOICES, NonFiniteError, UsageError, check_path, one_line, resolve_device)

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "train" / "edsr-baseline.yaml"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; a bad option is one line on stderr and SystemExit(2), --help SystemExit(0)."""
    summary, _, details = __doc__.partition("\n\n")
    parser = cli.OneLineParser(prog="train.py", description=summary, epilog=details,
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
                             "reached (exit status 0) and --resume continues, e.g. in a batch scheduler's time slots")
    parser.add_argument("--device", default=DEVICE_AUTO,
                        help=f"{DEVICE_CHOICES} (default auto: CUDA if available, else the CPU; under torchrun "
                             "each process takes CUDA device LOCAL_RANK)")
    return parser.parse_args(argv)


def folder_override(path: str, key: str) -> str:
    return f"{key}.dataset.args.root_path={json.dumps(str(path))}"  # quoted: a path is never parsed as YAML


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
    try:
        check_path(out)
    except OSError as exc:
        raise ConfigError(f"--out {out}: {exc.strerror}") from None
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


class NothingLeft(Exception):
    """The checkpoint to resume has trained every epoch of its config: nothing is written (exit 0)."""


class Run:
    """One invocation: what has been built so far (for the messages and the clean-up of a run that stops)."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.started = args, time.monotonic()
        self.ctx: distributed.Context | None = None
        self.log: Logger | None = None
        self.trainer: Trainer | None = None
        self.out: Path | None = None
        self.nothing_left = False  # a resumed run that had trained every epoch already

    def interrupted(self) -> str:
        """The line for SIGINT or SIGTERM: where to resume from, if anywhere."""
        last = self.out / "last.pth" if self.out is not None else None
        if last is None:
            message = "interrupted before the run started"
        elif last.is_file():
            message = f"interrupted; the last checkpoint is {last} (continue with --resume {last})"
        else:
            message = "interrupted before the first checkpoint; nothing to resume"
        return message

    def build(self) -> None:
        """Check everything and build the trainer; nothing is written."""
        args = self.args
        if args.time_limit is not None and not (math.isfinite(args.time_limit) and args.time_limit > 0):
            raise UsageError(f"--time-limit must be a positive number of minutes, got {args.time_limit:g}")
        device = resolve_device(args.device)
        cfg, ckpt, self.out = prepare_config(args, device)
        self.ctx = distributed.setup(device)
        self.log = Logger(self.out, self.ctx.is_main)
        self.trainer = Trainer(cfg, self.ctx, self.out, self.log, ckpt)
        if self.trainer.epoch > cfg["epoch_max"]:  # a lowered epoch_max: its schedule has no such epoch
            raise ConfigError(f"{args.resume} stopped after epoch {self.trainer.epoch}, beyond epoch_max "
                              f"{cfg['epoch_max']}: set epoch_max to {self.trainer.epoch} or more to resume it")
        if self.trainer.epoch == cfg["epoch_max"]:  # its resume state checked: it has trained every epoch
            raise NothingLeft(f"nothing left to do: {args.resume} has finished all {cfg['epoch_max']} epochs (raise "
                              "epoch_max with --set to train on)")
        if args.time_limit is not None:
            self.trainer.deadline = self.started + 60 * args.time_limit

    def train(self) -> int:
        """Build, then train to the end or the time limit; failures become one-line errors."""
        try:
            self.build()
            trainer, out = self.trainer, self.out
            try:
                self.log.open()
            except OSError as exc:
                raise UsageError(f"cannot write to {out}: {one_line(exc)}") from None
            trainer.run()
        except NothingLeft as exc:
            self.nothing_left = True
            if self.ctx.is_main:
                print(f"train.py: {exc}")
        except TimeLimitReached as exc:
            self.log(str(exc))
        except NonFiniteLoss as exc:
            self.log(f"stopped: {exc} at epoch {trainer.epoch + 1}, step {trainer.step + 1}; nothing was saved after "
                     f"the last good step. Lower optimizer.args.lr or set grad_clip, then --resume {out / 'last.pth'}")
            raise cli.Failure(f"non-finite training ({exc}); last good checkpoint: {out / 'last.pth'}") from None
        except NonFiniteError as exc:  # a validation render: the epoch's checkpoint is not written
            self.log(f"stopped: {exc} after epoch {trainer.epoch}")
            raise cli.Failure(f"non-finite validation ({exc}); last good checkpoint: {out / 'last.pth'}") from None
        except OutputWriteError as exc:
            kept = ("the previous checkpoints are intact" if (out / "last.pth").is_file()
                    else "no checkpoint had been written yet")
            raise cli.Failure(f"{exc}; {kept}") from None
        except KeyboardInterrupt:  # SIGINT, or SIGTERM: log.txt says it too, before the log closes
            if self.log is not None:
                self.log(self.interrupted(), console=False)
            raise
        finally:
            self.close()
        return 0

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self.trainer is not None:
            self.trainer.release_ddp()
        if self.ctx is not None:
            distributed.cleanup(self.ctx)


def main(argv: Sequence[str] | None = None) -> nn.Module | None:
    """Run training; returns the trained model (this process's replica; None when a resumed run had nothing left
    to train) for callers such as tests, and exits with the status of a run that fails (cli.run's: 2 bad input, 1
    failure, 130 interrupted)."""
    job = Run(parse_args(argv))
    code = cli.run("train.py", job.train, usage_errors=(datasets.DatasetError,), interrupted=job.interrupted)
    if code:
        sys.exit(code)
    return None if job.nothing_left or job.trainer is None else job.trainer.model


if __name__ == "__main__":
    main()
