"""The training loop: the run's state (model, optimizer, scheduler, moving average, counters), its epochs and
steps, validation and checkpoints (docs/DESIGN.md §7)."""
from __future__ import annotations

import copy
import math
import re
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

import datasets
import models
from training import distributed
from training.config import built, save_config
from training.logger import Logger
from training.optim import (make_optimizer, make_scheduler, rng_state, seed_everything, set_rng_state, update_ema,
                            warmed_up, warmup_factor)
from training.render import RenderAtTarget
from training.resume_state import check_resume_state
from training.validation import OutputWriteError, make_val_sets, validate
from utils import one_line, remove_stale_temporaries, worker_stops_cleanly


class NonFiniteLoss(RuntimeError):
    """The loss or the gradient norm is NaN or infinite: training stops before the step is applied."""


class TimeLimitReached(Exception):
    """--time-limit has passed: last.pth holds the step just taken, and --resume continues from it."""


def make_train_loader(cfg: dict[str, Any], ctx: distributed.Context) -> DataLoader:
    """This process's loader of the config's training samples: its share of the global batch, shuffled per epoch,
    one scale per batch (datasets.ScaleBatchSampler)."""
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
        batches = self.loader.batch_sampler.batches_per_epoch()
        if self.batch_in_epoch > batches:  # saved inside its epoch, or after its last batch (a time limit)
            raise models.CheckpointError(f"cannot resume from this checkpoint: it stopped after batch "
                                         f"{self.batch_in_epoch} of an epoch, and this run's epochs have {batches}")
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
        self.log(f"resumed {self.position()}")

    def position(self) -> str:
        """Where the run stands, epochs named as its messages name them: 'after epoch 3, step 120' at an epoch's
        end, 'at epoch 4, batch 12, step 132' within one (epoch 4 being the one in progress)."""
        if self.batch_in_epoch:
            return f"at epoch {self.epoch + 1}, batch {self.batch_in_epoch}, step {self.step}"
        return f"after epoch {self.epoch}, step {self.step}"

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
                raise TimeLimitReached(f"stopped at the time limit {self.position()}; continue with --resume "
                                       f"{self.out / 'last.pth'}")
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
