"""Train the bundled model on a GPU machine in one time-boxed command, and export small weights to bring back.

    python scripts/pack_device_data.py --photos data/photos --out data/device     # here, once (~43 MiB)
    # on the GPU machine, with data/device copied there (give the job a minute more than --minutes):
    python scripts/device_train.py --data data/device --minutes 7 --out device-train
    python scripts/device_train.py --cpu-smoke --data DIR --out DIR               # the same steps, toy sizes (CI)

What it does, all within --minutes of wall time:
1. Plan (a new run): time the recipe's training step (scripts/benchmark_train.py) at the scale whose LR size is
   the mean of the recipe's scale range (E[1/s^2] = 1/(a·b) for s ~ U(a, b), so sqrt(a·b)), then size the cosine
   schedule (epoch_max = T_max) to end when the time does. A run folder that already holds last.pth (a machine
   kept warm between two commands) is resumed instead, on the schedule it was planned with.
2. Train: train.py with the bundled recipe (configs/train/bundled-edsr-baseline.yaml, from the bundled weights)
   at the paper's crop and batch, bf16 autocast (DEVICE_OVERRIDES; the recipe's CPU steps are fp32), a warm-up,
   and --time-limit as the backstop.
3. Export into --out, small enough to copy back quickly (at most 8 files of 16 MiB): best.pth and
   last.pth as official checkpoints without the optimizer, weights in fp16 (11 MiB; the bundled weights are
   fp16 too), with the run's epoch, step and config for scripts/bundle_model.py's card; log.txt; config.yaml;
   device_train.json (machine, plan, measured rate, exit status, the validation curve).
Back here: score best.pth on val at every scale, then `scripts/bundle_model.py --checkpoint best.pth --test
data/photos/test` (the test split never leaves this machine). Exit status: 0 when training ended well (the time
limit included), 1 when timing or training failed (what a failed training left is exported all the same), 2 on
bad options.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import entry_point  # noqa: E402  (the standard library only: its guard is up before the heavy imports)

if __name__ == "__main__":
    entry_point.starting("device_train.py")

import torch  # noqa: E402

import cli  # noqa: E402
import models  # noqa: E402
import rasterizer  # noqa: E402
from datasets.image_folder import DatasetError  # noqa: E402
from inference.image_io import is_image_file  # noqa: E402
from training.config import apply_overrides, complete, load_yaml  # noqa: E402
from utils import EXIT_FAILURE, EXIT_OK, UsageError, atomic_path, describe_device  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_RECIPE = ROOT / "configs" / "train" / "bundled-edsr-baseline.yaml"
TINY_RECIPE = ROOT / "configs" / "train" / "tiny.yaml"
# The paper's crop and batch on a GPU, from the bundled weights, over the whole range of scales the bundled model
# is scored at (the CPU recipe narrows it to x2-x6 to spend its few steps near x4). A step 14x larger in HR pixels
# than the CPU recipe's averages its gradients over far more texture, so the lr may be higher than its 3e-5;
# the warm-up keeps Adam's fresh moments from throwing the converged weights out of their basin (a fine-tune at
# 1e-4 without one lost 1.2 dB on val), and val still chooses best.pth, whose epoch 0 is the bundled model.
DEVICE_OVERRIDES = ("train_dataset.wrapper.args.inp_size=256", "train_dataset.wrapper.args.scale_min=1.5",
                    "train_dataset.wrapper.args.scale_max=8", "train_dataset.batch_size=16",
                    "train_dataset.num_workers=8", "optimizer.args.lr=1.0e-4", "lr_scheduler.args.eta_min=1.0e-6",
                    "save_every_steps=500", "log_every_steps=50", "bf16=true")
# The same steps at toy sizes on the CPU (the tiny config's one-block encoder: no weights to start from).
SMOKE_OVERRIDES = ("train_dataset.dataset.args.repeat=2", "val_dataset.dataset.name=image-folder",
                   "val_dataset.scales=[2]", "val_samples=0", "rasterizer_backend=torch",
                   "lr_scheduler={name: cosine_annealing_lr, args: {T_max: 1}}")
WARMUP_FRACTION = 0.05  # of the planned steps, at most MAX_WARMUP_STEPS
MAX_WARMUP_STEPS = 200
PLAN_FILL = 0.85  # of the training time the planned schedule fills (start-up, validation and saves take the rest)
EXPORT_RESERVE_S = 20  # kept for the export after training stops
BENCHMARK_STEPS, BENCHMARK_WARMUP = 12, 3
SMOKE_BENCHMARK_STEPS, SMOKE_BENCHMARK_WARMUP = 2, 1
CHECKPOINTS = ("best.pth", "last.pth")
EPOCH_LINE = re.compile(r"^epoch (\d+)(?:/\d+)?[ :].*?val PSNR (.+?) dB")


def recipe(smoke: bool, data: Path) -> tuple[Path, list[str]]:
    """The training config and its overrides: the bundled recipe at GPU sizes, or the tiny one on the CPU."""
    folders = [f"train_dataset.dataset.args.root_path={json.dumps(str(data / 'train'))}",
               f"val_dataset.dataset.args.root_path={json.dumps(str(data / 'val'))}"]
    if smoke:
        return TINY_RECIPE, [*SMOKE_OVERRIDES, *folders]
    weights = ROOT / "weights" / "continuoussr-edsr-baseline.pth"
    return BUNDLED_RECIPE, [*DEVICE_OVERRIDES, *folders, f"init_from={json.dumps(str(weights))}"]


def mean_cost_scale(scale_min: float, scale_max: float) -> float:
    """The fixed scale whose LR has the mean LR area of s ~ U(scale_min, scale_max): E[1/s^2] = 1/(min·max)."""
    return math.sqrt(scale_min * scale_max)


def check_data(data: Path) -> int:
    """The number of training images; a UsageError unless `data` holds train/ and val/ with images."""
    counts = {}
    for split in ("train", "val"):
        folder = data / split
        counts[split] = sum(1 for p in folder.iterdir() if is_image_file(p)) if folder.is_dir() else 0
        if not counts[split]:
            raise UsageError(f"{folder} holds no images (pack them with scripts/pack_device_data.py)")
    return counts["train"]


def recipe_config(config: Path, overrides: list[str]) -> dict:
    """The training config train.py will run: `config` with `overrides`, completed and checked."""
    return complete(apply_overrides(load_yaml(config), overrides))


def measure_step_s(config: Path, overrides: list[str], cfg: dict, device: str, smoke: bool,
                   timeout_s: float) -> float:
    """Mean seconds of one training step of the recipe (`cfg`, i.e. `config` with `overrides`) at its mean-cost
    scale (scripts/benchmark_train.py)."""
    args = cfg["train_dataset"]["wrapper"]["args"]
    scale = mean_cost_scale(args["scale_min"], args["scale_max"])
    steps, warmup = (SMOKE_BENCHMARK_STEPS, SMOKE_BENCHMARK_WARMUP) if smoke else (BENCHMARK_STEPS,
                                                                                    BENCHMARK_WARMUP)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rate.json"
        sets = [a for o in [*overrides, f"train_dataset.wrapper.args.scale_min={scale}",
                            f"train_dataset.wrapper.args.scale_max={scale}"] for a in ("--set", o)]
        command = [sys.executable, str(ROOT / "scripts" / "benchmark_train.py"), "--config", str(config), *sets,
                   "--device", device, "--steps", str(steps), "--warmup", str(warmup), "--out", str(out)]
        try:
            proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"timing the step took over {timeout_s:.0f} s; give more --minutes") from None
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout or "no output").strip().splitlines()[-1]
            raise RuntimeError(f"timing the step failed (exit {proc.returncode}): {last}")
        return 1 / json.loads(out.read_text())["iterations_per_s"]


def plan(train_images: int, cfg: dict, step_s: float, train_s: float) -> dict:
    """Epochs (= the cosine's T_max) and warm-up steps that fill PLAN_FILL of `train_s` at `step_s` a step."""
    repeat = cfg["train_dataset"]["dataset"]["args"].get("repeat", 1)
    steps_per_epoch = math.ceil(train_images * repeat / cfg["train_dataset"]["batch_size"])
    epochs = max(1, math.floor(PLAN_FILL * train_s / (step_s * steps_per_epoch)))
    warmup = min(MAX_WARMUP_STEPS, math.ceil(WARMUP_FRACTION * epochs * steps_per_epoch))
    return {"step_s": step_s, "steps_per_epoch": steps_per_epoch, "epochs": epochs, "warmup_steps": warmup,
            "planned_steps": epochs * steps_per_epoch}


def export_checkpoint(source: Path, target: Path) -> None:
    """`source` (a train.py checkpoint) without optimizer, scheduler and RNG state, its weights in fp16."""
    ckpt = models.load_checkpoint(source)
    model = {**ckpt["model"], "sd": {k: v.half() if v.is_floating_point() else v
                                     for k, v in ckpt["model"]["sd"].items()}}
    slim = {"model": model, **{k: ckpt[k] for k in ("epoch", "step", "config", "best_psnr", "best_epoch")
                               if k in ckpt}}
    models.save_checkpoint(slim, target)


def val_curve(log_text: str) -> list[dict]:
    """[{epoch, val}] from train.py's log lines ("epoch 3/12: ..., val PSNR x4 29.13 dB ...")."""
    curve = []
    for line in log_text.splitlines():
        match = EPOCH_LINE.match(line)
        if match:
            scores = dict(part.split(" ") for part in match.group(2).split(", "))
            curve.append({"epoch": int(match.group(1)), "val_psnr": {k: float(v) for k, v in scores.items()}})
    return curve


def export(run: Path, out: Path, record: dict) -> None:
    """The run's checkpoints (slim, fp16), log and config, and the record, into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINTS:
        if (run / name).is_file():
            export_checkpoint(run / name, out / name)
    for name in ("log.txt", "config.yaml"):
        if (run / name).is_file():
            shutil.copyfile(run / name, out / name)
    log = (run / "log.txt").read_text() if (run / "log.txt").is_file() else ""
    record["val_curve"] = val_curve(log)
    with atomic_path(out / "device_train.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = cli.OneLineParser(prog="device_train.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/device", help="the pack: train/ and val/ (pack_device_data.py)")
    parser.add_argument("--out", required=True, help="where the weights, log and record go")
    parser.add_argument("--minutes", type=float, default=7.0, help="wall time of the whole command")
    parser.add_argument("--run", default="save/device-bundled",
                        help="the training run's folder; resumed when it holds last.pth")
    parser.add_argument("--backend", help="rasterizer backend (default: the recipe's auto; e.g. torch, should the "
                                          "device check find the Triton kernels failing there)")
    parser.add_argument("--cpu-smoke", action="store_true", help="the same steps with the tiny recipe on the CPU")
    args = cli.parse(parser, argv)
    return args if isinstance(args, int) else cli.run("device_train.py", lambda: run_device(args))


def run_device(args: argparse.Namespace) -> int:
    """Plan (or resume), train within the time left, and export."""
    started = time.monotonic()
    device = "cpu" if args.cpu_smoke else "cuda"
    run, out, data = (Path(p).resolve() for p in (args.run, args.out, args.data))
    try:
        if not (math.isfinite(args.minutes) and args.minutes > 0):
            raise UsageError(f"--minutes must be a positive number, got {args.minutes:g}")
        if device == "cuda" and not torch.cuda.is_available():
            raise UsageError("no CUDA device: this command is for a GPU machine (--cpu-smoke tries it on the CPU)")
        train_images = check_data(data)
        config, overrides = recipe(args.cpu_smoke, data)
        if args.backend:
            overrides.append(f"rasterizer_backend={rasterizer.check_backend(args.backend, torch.device(device))}")
        resume = run / "last.pth"
        record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "device": describe_device(torch.device(device)), "torch": torch.__version__, "minutes": args.minutes,
                  "recipe": str(config.relative_to(ROOT)), "overrides": overrides, "resumed": resume.is_file()}
        if resume.is_file():
            command = ["--resume", str(resume)]
        else:
            if run.exists():
                raise UsageError(f"{run} exists without last.pth: remove it, or give another --run")
            budget_s = 60 * args.minutes - EXPORT_RESERVE_S
            cfg = recipe_config(config, overrides)
            step_s = measure_step_s(config, overrides, cfg, device, args.cpu_smoke, timeout_s=budget_s / 2)
            record["plan"] = plan(train_images, cfg, step_s, budget_s - (time.monotonic() - started))
            epochs, warmup = record["plan"]["epochs"], record["plan"]["warmup_steps"]
            command = ["--config", str(config), "--out", str(run),
                       *[a for o in [*overrides, f"epoch_max={epochs}", f"lr_scheduler.args.T_max={epochs}",
                                     f"warmup_steps={warmup}"] for a in ("--set", o)]]
            print(f"device_train: {step_s:.3f} s a step -> {epochs} epochs of {record['plan']['steps_per_epoch']} "
                  f"steps, warm-up {warmup}", flush=True)
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, RuntimeError) as exc:  # the step could not be timed: nothing was trained
        raise cli.Failure(str(exc)) from None
    limit_min = (60 * args.minutes - EXPORT_RESERVE_S - (time.monotonic() - started)) / 60
    if limit_min <= 0:
        raise UsageError("no time left to train after planning; give more --minutes")
    train_started = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *command, "--device", device,
                           "--time-limit", f"{limit_min:.3f}"], cwd=ROOT)
    record.update(train_exit=proc.returncode, train_s=round(time.monotonic() - train_started, 1))
    export(run, out, record)
    print(f"device_train: train.py exited {proc.returncode} after {record['train_s']} s; exported to {out}")
    return EXIT_OK if proc.returncode == 0 else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
