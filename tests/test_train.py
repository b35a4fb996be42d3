"""train.py end to end on the tiny config: learning, outputs, validation PSNR, resume, interruption, NaN, DDP."""
from __future__ import annotations

import errno
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

import models
import train
import training.trainer
from training import distributed, validation
from training.config import load_yaml
from training.events import read_scalars
from training.logger import Logger, summary_writer_class
from training.render import RenderAtTarget
from training.trainer import Trainer
import utils
from gaussian import cpu_bf16_native
from conftest import default_sigint, random_rgb, reported_lines, screen_lines, write_rgb

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "train" / "tiny.yaml")
# Progress bars off in subprocesses where tqdm allows (training's bars are on for rank 0 whatever the environment:
# the tests read past them with reported_lines).
QUIET = {**os.environ, "TQDM_DISABLE": "1"}


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    """Smooth-ish generated images (noise blurred by a box upscale) that a tiny model can learn something of."""
    root = tmp_path_factory.mktemp("images")
    for i in range(4):
        small = random_rgb(6, 7, seed=i)
        write_rgb(root / f"img{i}.png", np.asarray(Image.fromarray(small).resize((28, 24), Image.BILINEAR)))
    return root


def run(out: Path, image_dir: Path, *extra: str, resume: Path | None = None):
    argv = ["--config", TINY, "--path", str(image_dir), "--out", str(out), *extra]
    if resume is not None:
        argv = ["--resume", str(resume), *extra]
    return train.main(argv)


@pytest.fixture(scope="module")
def straight_run(image_dir, tmp_path_factory) -> Path:
    """An uninterrupted 2-epoch tiny run with validation at x2 and x3."""
    out = tmp_path_factory.mktemp("straight") / "run"
    run(out, image_dir, "--val-path", str(image_dir), "--set", "val_dataset.scales=[2, 3]")
    return out


def trainer_and_batch(image_dir: Path, out: Path, *overrides: str, device: str = "cpu"):
    """A Trainer on the tiny config (nothing logged) and the first batch of its first epoch."""
    argv = ["--config", TINY, "--path", str(image_dir), "--out", str(out)]
    cfg, _, out = train.prepare_config(train.parse_args(argv + [a for o in overrides for a in ("--set", o)]))
    trainer = Trainer(cfg, distributed.setup(device), out, Logger(out, active=False), None)
    trainer.loader.batch_sampler.set_epoch(1)
    return trainer, next(iter(trainer.loader))


@pytest.mark.slow
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(image_dir, tmp_path):
    trainer, batch = trainer_and_batch(image_dir, tmp_path / "run", "optimizer.args.lr=1e-3")

    def loss_now() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.l1_loss(trainer.net(batch["inp"], batch["gt"].shape[-2:]), batch["gt"]))

    before = loss_now()
    losses = [trainer.train_step(batch)[0] for _ in range(12)]
    assert losses[0] == pytest.approx(before, rel=1e-5)
    assert loss_now() < 0.6 * before


def test_gradient_clipping_bounds_the_norm_of_the_step(image_dir, tmp_path):
    trainer, batch = trainer_and_batch(image_dir, tmp_path / "run", "grad_clip=1e-3")
    _, norm_before_clipping = trainer.train_step(batch)
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    assert norm_before_clipping > 1e-3
    assert float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))) == pytest.approx(1e-3, rel=1e-3)


def first_step_change(trainer, batch) -> float:
    """The largest change of any weight in one train_step (Adam's first step moves each by about its lr)."""
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_step(batch)
    return max(float((p.detach() - b).abs().max()) for p, b in zip(trainer.model.parameters(), before))


def test_warmup_scales_the_first_steps_and_leaves_the_schedule_alone(image_dir, tmp_path):
    plain, batch = trainer_and_batch(image_dir, tmp_path / "plain")
    warm, _ = trainer_and_batch(image_dir, tmp_path / "warm", "warmup_steps=4")
    full = first_step_change(plain, batch)
    assert full == pytest.approx(2e-4, rel=0.05)  # the tiny config's lr
    assert first_step_change(warm, batch) == pytest.approx(full / 4, rel=0.05)
    assert warm.optimizer.param_groups[0]["lr"] == plain.optimizer.param_groups[0]["lr"] == 2e-4


def test_ema_keeps_the_moving_average_and_publishes_it_as_the_checkpoints_model(image_dir, tmp_path):
    """ema_decay d: after each step ema = d * ema + (1 - d) * weights, from the initial weights; the checkpoint's
    model is the average and train_sd the trained weights; without it there is no train_sd."""
    trainer, batch = trainer_and_batch(image_dir, tmp_path / "ema", "ema_decay=0.75")
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for step in range(2):
        before = {k: v.clone() for k, v in trainer.ema.state_dict().items()}
        trainer.train_step(batch)
        trained = trainer.model.state_dict()
        for name, value in trainer.ema.state_dict().items():
            expected = 0.75 * before[name] + 0.25 * trained[name]
            assert torch.allclose(value, expected, rtol=0, atol=1e-6), (step, name)
    moved = [k for k in initial if not torch.equal(trainer.ema.state_dict()[k], trained[k])]
    assert len(moved) > len(initial) // 2  # the average lags the weights
    ckpt = trainer.checkpoint()
    for name, value in ckpt["model"]["sd"].items():
        assert torch.equal(value, trainer.ema.state_dict()[name]) and torch.equal(ckpt["train_sd"][name],
                                                                                  trained[name]), name
    plain, _ = trainer_and_batch(image_dir, tmp_path / "plain")
    assert plain.ema is None and "train_sd" not in plain.checkpoint()


@pytest.mark.slow
def test_an_ema_run_validates_the_average_and_resumes_exactly(image_dir, tmp_path):
    ema = ("--val-path", str(image_dir), "--set", "val_dataset.scales=[2]", "--set", "ema_decay=0.5")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(straight, image_dir, *ema, "--set", "epoch_max=2")
    run(resumed, image_dir, *ema, "--set", "epoch_max=1")
    run(resumed, image_dir, "--set", "epoch_max=2", resume=resumed / "last.pth")
    a, b = models.load_checkpoint(resumed / "last.pth"), models.load_checkpoint(straight / "last.pth")
    assert_same_training_state(a, b)
    assert all(torch.equal(a["train_sd"][k], b["train_sd"][k]) for k in b["train_sd"])
    assert not all(torch.equal(b["train_sd"][k], b["model"]["sd"][k]) for k in b["train_sd"])
    best = models.load_checkpoint(straight / "best.pth")
    logged = dict(read_scalars(straight / "tensorboard")["val/psnr_x2"])[best["best_epoch"]]
    assert logged == pytest.approx(independent_psnr(models.model_from_checkpoint(best).eval(), image_dir, 2.0),
                                   abs=1e-3)


def test_training_logs_without_tensorboardx(image_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import tensorboardX now raises ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert summary_writer_class() is None
    run(tmp_path / "run", image_dir, "--set", "epoch_max=1")
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "TensorBoard logging is off" in log and "epoch 1/1" in log
    assert (tmp_path / "run" / "last.pth").is_file() and not (tmp_path / "run" / "tensorboard").exists()


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                                 reason="needs CUDA")])]


@pytest.mark.parametrize("device", [
    pytest.param("cpu", marks=pytest.mark.skipif(not cpu_bf16_native(), reason="this CPU has no native bf16")),
    DEVICES[1]])
@pytest.mark.slow
def test_bf16_steps_are_finite_learn_and_keep_float32_weights(image_dir, tmp_path, device):
    trainer, batch = trainer_and_batch(image_dir, tmp_path / "run", "bf16=true", "optimizer.args.lr=1e-3",
                                       device=device)
    with torch.no_grad():
        low = trainer.net(batch["inp"].to(device), batch["gt"].shape[-2:])
        trainer.net.bf16 = False
        full = trainer.net(batch["inp"].to(device), batch["gt"].shape[-2:])
        trainer.net.bf16 = True
    assert low.dtype == torch.float32
    assert 0 < float((low - full).abs().max()) < 0.05  # autocast is in effect, and only rounds
    losses = [trainer.train_step(batch)[0] for _ in range(12)]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


@pytest.mark.slow
def test_a_run_writes_config_checkpoints_scalars_and_samples(straight_run, image_dir):
    names = {p.name for p in straight_run.iterdir()}
    assert {"config.yaml", "last.pth", "best.pth", "log.txt", "tensorboard", "samples"} <= names
    assert not [n for n in names if utils.TEMPORARY_MARK in n]
    last = models.load_checkpoint(straight_run / "last.pth")
    assert (last["epoch"], last["step"], last["batch_in_epoch"]) == (2, 4, 0)
    assert last["config"]["train_dataset"]["dataset"]["args"]["root_path"] == str(image_dir)
    assert not [k for k in last["model"]["sd"] if k.startswith("module.")]
    assert set(last["optimizer"]) == {"state", "param_groups"}
    assert last["lr_scheduler"]["last_epoch"] == 2
    model = models.model_from_checkpoint(straight_run / "best.pth")
    assert isinstance(model, torch.nn.Module)
    scalars = read_scalars(straight_run / "tensorboard")
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3, 4]
    assert [v for _, v in scalars["train/lr"]] == pytest.approx([2e-4, 2e-4, 1e-4, 1e-4])
    assert len(scalars["val/psnr_x2"]) == len(scalars["val/psnr_x3"]) == 2
    assert sorted(p.name for p in (straight_run / "samples").iterdir()) == ["img0_x2.png", "img0_x3.png"]


def independent_psnr(model, image_dir: Path, scale: float) -> float:
    """Mean RGB PSNR, with the LR made here by PIL and the PSNR by numpy."""
    values = []
    for path in sorted(image_dir.glob("*.png")):
        hr = np.asarray(Image.open(path))
        h_lr, w_lr = math.floor(hr.shape[0] / scale), math.floor(hr.shape[1] / scale)
        hr = hr[:round(h_lr * scale), :round(w_lr * scale)]
        lr = np.asarray(Image.fromarray(hr).resize((w_lr, h_lr), Image.BICUBIC))
        inp = torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            sr = model.render(model.encode(inp), size=hr.shape[:2])[0].permute(1, 2, 0).numpy()
        mse = np.mean((np.clip(sr, 0, 1).astype(np.float64) - hr / 255.0) ** 2)
        values.append(-10 * np.log10(mse))
    return float(np.mean(values))


@pytest.mark.slow
def test_validation_psnr_matches_an_independent_computation(straight_run, image_dir):
    best = models.load_checkpoint(straight_run / "best.pth")
    model = models.model_from_checkpoint(best).eval()
    scalars = read_scalars(straight_run / "tensorboard")
    logged = dict(scalars["val/psnr_x2"])[best["best_epoch"]], dict(scalars["val/psnr_x3"])[best["best_epoch"]]
    expected = independent_psnr(model, image_dir, 2.0), independent_psnr(model, image_dir, 3.0)
    assert logged == pytest.approx(expected, abs=1e-3)
    assert best["best_psnr"] == pytest.approx(sum(expected) / 2, abs=1e-3)
    means = [(a + b) / 2 for (_, a), (_, b) in zip(scalars["val/psnr_x2"], scalars["val/psnr_x3"])]
    assert best["best_psnr"] == pytest.approx(max(means), abs=1e-5)  # TensorBoard holds float32


def test_validation_runs_fp32_whatever_the_training_precision(image_dir, tmp_path, monkeypatch):
    import gaussian
    monkeypatch.setattr(gaussian, "cpu_bf16_native", lambda: True)  # bf16 autocast on this CPU, whichever it is
    trainer, _ = trainer_and_batch(image_dir, tmp_path / "run", "bf16=true", "val_dataset.dataset.name=image-folder",
                                   f"val_dataset.dataset.args.root_path={image_dir}", "val_dataset.scales=[2]")
    model = trainer.model
    scores = validation.validate(model, trainer.val_sets, trainer.cfg, trainer.ctx, trainer.log, trainer.out, 0)
    assert scores[2.0] == pytest.approx(independent_psnr(model.eval(), image_dir, 2.0), abs=1e-5)
    trainer.cfg["bf16"] = False
    assert validation.validate(model, trainer.val_sets, trainer.cfg, trainer.ctx, trainer.log, trainer.out, 0) == scores
    with torch.no_grad():  # the bf16 training forward does round: the test above could tell
        batch = trainer.val_sets[2.0][0]
        low = RenderAtTarget(model, True, "auto")(batch["inp"][None], batch["gt"].shape[-2:])
        full = RenderAtTarget(model, False, "auto")(batch["inp"][None], batch["gt"].shape[-2:])
    assert float((low - full).abs().max()) > 1e-4


def assert_same_training_state(a: dict, b: dict) -> None:
    assert (a["epoch"], a["step"], a["batch_in_epoch"]) == (b["epoch"], b["step"], b["batch_in_epoch"])
    for key in a["model"]["sd"]:
        assert torch.equal(a["model"]["sd"][key], b["model"]["sd"][key]), key
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for index, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][index][name]), (index, name)
    assert a["lr_scheduler"] == b["lr_scheduler"]


@pytest.mark.slow
def test_resume_continues_exactly_where_it_stopped(straight_run, image_dir, tmp_path):
    out = tmp_path / "run"
    run(out, image_dir, "--val-path", str(image_dir), "--set", "val_dataset.scales=[2, 3]", "--set", "epoch_max=1")
    first = models.load_checkpoint(out / "last.pth")
    assert (first["epoch"], first["step"]) == (1, 2)
    run(out, image_dir, "--set", "epoch_max=2", resume=out / "last.pth")
    assert_same_training_state(models.load_checkpoint(out / "last.pth"),
                               models.load_checkpoint(straight_run / "last.pth"))


@pytest.mark.parametrize("where", ["mid-epoch", "after-last-batch"])
@pytest.mark.slow
def test_an_interrupted_run_keeps_what_it_saved_and_resumes_exactly(straight_run, image_dir, tmp_path,
                                                                    monkeypatch, where):
    out = tmp_path / "run"
    real_step, real_validate = Trainer.train_step, validation.validate

    def step_then_interrupt(self, batch):
        if self.step == 3:  # the 4th step: mid-way through epoch 2
            raise KeyboardInterrupt
        return real_step(self, batch)

    def interrupt_validation(*args, **kwargs):  # epoch 1 trained, its end-of-epoch save not yet written
        raise KeyboardInterrupt

    if where == "mid-epoch":
        monkeypatch.setattr(Trainer, "train_step", step_then_interrupt)
    else:
        monkeypatch.setattr(training.trainer, "validate", interrupt_validation)
    with pytest.raises(SystemExit) as stop:
        run(out, image_dir, "--val-path", str(image_dir), "--set", "val_dataset.scales=[2, 3]",
            "--set", "save_every_steps=1")
    assert stop.value.code == utils.EXIT_INTERRUPTED
    monkeypatch.setattr(Trainer, "train_step", real_step)
    monkeypatch.setattr(training.trainer, "validate", real_validate)
    saved = models.load_checkpoint(out / "last.pth")
    expected = (1, 1, 3) if where == "mid-epoch" else (0, 2, 2)
    assert (saved["epoch"], saved["batch_in_epoch"], saved["step"]) == expected
    assert {p.name for p in out.glob("*.pth")} <= {"best.pth", "last.pth"}
    assert not list(out.glob(f".*{utils.TEMPORARY_MARK}*"))
    run(out, image_dir, resume=out / "last.pth")
    assert_same_training_state(models.load_checkpoint(out / "last.pth"),
                               models.load_checkpoint(straight_run / "last.pth"))


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(image_dir, tmp_path, monkeypatch, capsys):
    real_forward = RenderAtTarget.forward
    calls = []

    def nan_on_third_call(self, inp, size):
        calls.append(1)
        out = real_forward(self, inp, size)
        return out * float("nan") if len(calls) == 3 else out

    monkeypatch.setattr(RenderAtTarget, "forward", nan_on_third_call)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        run(out, image_dir)
    assert stop.value.code == utils.EXIT_FAILURE
    assert "non-finite" in capsys.readouterr().err
    saved = models.load_checkpoint(out / "last.pth")
    assert (saved["epoch"], saved["step"]) == (1, 2)
    assert all(torch.isfinite(v).all() for v in saved["model"]["sd"].values())


@pytest.mark.slow
def test_a_non_finite_validation_render_stops_the_run_before_the_epoch_is_saved(image_dir, tmp_path, monkeypatch,
                                                                                capsys):
    real_forward = RenderAtTarget.forward

    def nan_when_validating(self, inp, size):  # validation runs the model in eval mode
        out = real_forward(self, inp, size)
        return out if self.model.training else out * float("nan")

    monkeypatch.setattr(RenderAtTarget, "forward", nan_when_validating)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        run(out, image_dir, "--val-path", str(image_dir))
    assert stop.value.code == utils.EXIT_FAILURE
    err = reported_lines(capsys.readouterr().err)
    assert len(err) == 1 and re.match(r"train.py: error: non-finite validation \(the validation render of img0 at x4 "
                                      r"holds [\d,]+ non-finite values", err[0]), err
    assert not (out / "last.pth").exists() and not (out / "best.pth").exists()  # epoch 1 was never saved


def tiny(*overrides: str) -> list[str]:
    return ["--config", TINY, *(a for o in overrides for a in ("--set", o))]


BAD_INPUTS = {
    "missing config": (["--config", "missing.yaml"], "config not found"),
    "missing folder": (["--config", TINY, "--path", "/nonexistent/folder"], "image folder not found"),
    "empty folder": (["--config", TINY, "--path", "{tmp}/empty"], "no images"),
    "missing val folder": (["--config", TINY, "--val-path", "/nonexistent/val"], "image folder not found"),
    "unknown key": (tiny("epochs=3"), "unknown config key"),
    "bad model arg": (tiny("model.args.encoder_spec.args.bogus=1"), "model: .*bogus"),
    "unknown model": (tiny("model.name=bogus"), "unknown model"),
    "unknown optimizer": (tiny("optimizer.name=lbfgs"), "unknown optimizer"),
    "unknown backend": (tiny("rasterizer_backend=bogus"), r"rasterizer_backend: unknown rasterizer backend 'bogus' "
                                                          r"\(available: auto, "),
    "backend not a name": (tiny("rasterizer_backend=[1]"), "unknown rasterizer backend"),
    "lr not a number": (tiny("optimizer.args.lr=abc"), r"optimizer 'adam' with args \{'lr': 'abc'\}"),
    "negative lr": (tiny("optimizer.args.lr=-1"), "Invalid learning rate"),
    "bad betas": (tiny("optimizer.args.betas=abc"), "optimizer 'adam'"),
    "unknown optimizer arg": (tiny("optimizer.args.momentum=0.9"), "optimizer 'adam'.*momentum"),
    "step_size not a number": (tiny("lr_scheduler.args.step_size=abc"), "lr_scheduler 'step_lr' with args"),
    "zero step_size": (tiny("lr_scheduler.args.step_size=0"), "lr_scheduler 'step_lr'.*modulo by zero"),
    # gamma is first used after step_size epochs: the whole schedule is stepped through at config time
    "gamma not a number, used late": (tiny("lr_scheduler.args={step_size: 100, gamma: abc}", "epoch_max=150"),
                                      "lr_scheduler 'step_lr'"),
    "nan gamma": (tiny("lr_scheduler.args.gamma=.nan"), "the lr would be nan after epoch 1"),
    "missing scheduler arg": (tiny("lr_scheduler={name: cosine_annealing_lr, args: {}}"), "T_max"),
    "bad milestones": (tiny("lr_scheduler={name: multi_step_lr, args: {milestones: 5}}"), "multi_step_lr"),
    "unknown scheduler": (tiny("lr_scheduler.name=bogus"), "unknown lr_scheduler"),
    "zero epochs": (tiny("epoch_max=0"), "epoch_max must be a positive integer"),
    "epochs not a number": (tiny("epoch_max=abc"), "epoch_max must be a positive integer"),
    "zero batch": (tiny("train_dataset.batch_size=0"), "batch_size must be a positive integer"),
    "negative workers": (tiny("train_dataset.num_workers=-1"), "num_workers must be a non-negative integer"),
    "negative epoch_save": (tiny("epoch_save=-1"), "epoch_save must be a non-negative integer"),
    "zero grad_clip": (tiny("grad_clip=0"), "grad_clip must be a positive number"),
    "bf16 not a boolean": (tiny("bf16=maybe"), "bf16 must be true or false"),
    "crop larger than the images": (tiny("train_dataset.wrapper.args.inp_size=64"), "no image of the data set fits"),
    "bad scales": (tiny("train_dataset.wrapper.args.scale_min=5"), "scale_min <= scale_max"),
    "bad val scales": (tiny("val_dataset={dataset: {name: image-folder, args: {root_path: /tmp}}, scales: [0]}"),
                       "val_dataset.scales must be"),
    "bad --set": (tiny("no-equals-sign"), "--set expects key.sub=value"),
    "out is a file": (["--config", TINY, "--out", "{tmp}/a-file"], "is a file, not a folder"),
    "missing init_from": (tiny("init_from=/nonexistent.pth"), "init_from: checkpoint not found"),
    "missing resume": (["--resume", "/nonexistent.pth"], "checkpoint not found"),
    "resume a text file": (["--resume", "{tmp}/text.pth"], "not a readable checkpoint"),
    "resume an empty file": (["--resume", "{tmp}/empty.pth"], "not a readable checkpoint"),
    "bad device": (["--config", TINY, "--device", "tpu"], "unknown device"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, image_dir, capsys):
    argv, message = BAD_INPUTS[case]
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "text.pth").write_text("this is not a checkpoint")
    (tmp_path / "empty.pth").write_bytes(b"")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--path" not in argv and "--resume" not in argv and "missing.yaml" not in argv:
        argv = [*argv, "--path", str(image_dir)]
    out = tmp_path / "run"
    if "--out" not in argv:
        argv = [*argv, "--out", str(out)]
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as stop:
        train.main(argv)
    err = [line for line in screen_lines(capsys.readouterr().err)
           if not line.startswith("train.py: warning: skipping ")]  # each skipped image is named on a line
    assert stop.value.code == utils.EXIT_USAGE, err
    assert len(err) == 1 and err[0].startswith("train.py: error:"), err
    assert re.search(message, err[0]), err
    assert sorted(tmp_path.rglob("*")) == before  # no run folder, log.txt, TensorBoard file or config.yaml


def test_a_backend_that_cannot_run_on_the_device_is_refused_before_any_work(image_dir, tmp_path, monkeypatch,
                                                                           capsys):
    import rasterizer

    torch_backend = rasterizer.BACKENDS["torch"]
    monkeypatch.setitem(rasterizer.BACKENDS, "cuda-only", rasterizer.BackendInfo(
        torch_backend.fn, lambda device: device.type == "cuda", ("cuda",), None))
    with pytest.raises(SystemExit) as stop:
        train.main([*tiny("rasterizer_backend=cuda-only"), "--path", str(image_dir), "--out", str(tmp_path / "run"),
                    "--device", "cpu"])
    assert stop.value.code == utils.EXIT_USAGE and not (tmp_path / "run").exists()
    assert screen_lines(capsys.readouterr().err) == [
        "train.py: error: rasterizer_backend: rasterizer backend 'cuda-only' cannot run on cpu"]


def run_train(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "train.py"), *argv], capture_output=True, text=True, cwd=REPO,
                          env=QUIET, timeout=600, **kwargs)


@pytest.mark.parametrize("override, message", [
    ("rasterizer_backend=bogus", "train.py: error: rasterizer_backend: unknown rasterizer backend 'bogus' "
                                 "(available: auto, "),
    pytest.param("lr_scheduler.args.step_size=abc", "train.py: error: lr_scheduler 'step_lr' with args "
                 "{'step_size': 'abc', 'gamma': 0.5}: unsupported operand type(s) for %: 'int' and 'str'",
                 marks=pytest.mark.slow),
])
def test_cli_refuses_a_late_failing_option_at_once_and_writes_nothing(override, message, image_dir, tmp_path):
    done = run_train("--config", TINY, "--path", str(image_dir), "--out", str(tmp_path / "run"), "--set", override)
    assert done.returncode == utils.EXIT_USAGE
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert done.stdout == "" and list(tmp_path.iterdir()) == []


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(f".*{utils.TEMPORARY_MARK}*"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.slow
def test_a_signal_during_training_exits_130_with_one_line_and_keeps_the_checkpoint(signum, image_dir, tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), "--config", TINY, "--path", str(image_dir),
                                "--out", str(out), "--set", "epoch_max=1000", "--set", "save_every_steps=1"],
                               cwd=REPO, env=QUIET, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + 300
        while not (out / "last.pth").exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        assert (out / "last.pth").exists()
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == utils.EXIT_INTERRUPTED, err
    assert reported_lines(err) == [f"train.py: interrupted; the last checkpoint is {out / 'last.pth'} "
                                f"(continue with --resume {out / 'last.pth'})"]
    assert models.load_checkpoint(out / "last.pth")["step"] >= 1
    assert leftovers(out) == []
    assert (out / "log.txt").read_text().splitlines()[-1].startswith("interrupted; the last checkpoint is")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.slow
def test_a_signal_to_the_whole_process_group_stops_as_cleanly_with_loader_workers(signum, image_dir, tmp_path):
    """Ctrl-C, `kill -- -PGID` or a scheduler cancelling the job signal every process of the group, the data
    loader's workers too: a worker killed by SIGTERM used to turn the clean stop into a DataLoader traceback."""
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), "--config", TINY, "--path", str(image_dir),
                                "--out", str(out), "--set", "epoch_max=1000", "--set", "save_every_steps=1",
                                "--set", "train_dataset.num_workers=1"],
                               cwd=REPO, env=QUIET, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_sigint, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "last.pth").exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        assert (out / "last.pth").exists()
        time.sleep(1)  # well inside the training loop, the worker loading batches
        os.killpg(process.pid, signum)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == utils.EXIT_INTERRUPTED, err
    assert "Traceback" not in err and reported_lines(err) == [
        f"train.py: interrupted; the last checkpoint is {out / 'last.pth'} (continue with --resume {out / 'last.pth'})"]
    assert leftovers(out) == []


def fail_on_save(monkeypatch, error: BaseException, at_call: int) -> list[int]:
    """torch.save that writes part of the file and then raises `error`, on its `at_call`-th call (1-based)."""
    real_save, calls = torch.save, []

    def failing_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == at_call:
            f.write(b"PK\x03\x04 a partial zip")
            raise error
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    return calls


@pytest.mark.parametrize("error, reason", [
    (RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/3: "
                  "file write failed"), "PytorchStreamWriter failed writing file data/3: file write failed"),
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (utils.Terminated("terminated by signal 15"), None),
], ids=["torch write error", "ENOSPC", "SIGTERM mid-save"])
@pytest.mark.slow
def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(error, reason, image_dir, tmp_path, monkeypatch,
                                                                 capsys):
    out = tmp_path / "run"
    fail_on_save(monkeypatch, error, at_call=2)  # epoch 1's last.pth is written, epoch 2's fails
    with pytest.raises(SystemExit) as stop:
        run(out, image_dir)
    captured = capsys.readouterr().err
    err = reported_lines(captured)
    assert "Traceback" not in captured
    if reason is None:
        assert stop.value.code == utils.EXIT_INTERRUPTED
        assert err == [f"train.py: interrupted; the last checkpoint is {out / 'last.pth'} "
                       f"(continue with --resume {out / 'last.pth'})"]
    else:
        assert stop.value.code == utils.EXIT_FAILURE
        assert err == [f"train.py: error: cannot write checkpoint {out / 'last.pth'}: {reason}; the previous "
                       "checkpoints are intact"]
    monkeypatch.undo()
    assert models.load_checkpoint(out / "last.pth")["epoch"] == 1
    assert leftovers(out) == []


@pytest.mark.slow
def test_cli_full_disk_during_a_save_is_one_line_exit_1(image_dir, tmp_path):
    out = tmp_path / "run"
    script = ("import errno, sys, torch; real = torch.save; calls = []\n"
              "def save(obj, f, *a, **k):\n"
              "    calls.append(1)\n"
              "    if len(calls) == 2:\n"
              "        f.write(b'partial'); raise OSError(errno.ENOSPC, 'No space left on device')\n"
              "    return real(obj, f, *a, **k)\n"
              "torch.save = save; sys.path.insert(0, '.'); import train; train.main(sys.argv[1:])\n")
    done = subprocess.run([sys.executable, "-c", script, "--config", TINY, "--path", str(image_dir), "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, env=QUIET, timeout=600)
    assert done.returncode == utils.EXIT_FAILURE
    assert "Traceback" not in done.stderr
    assert reported_lines(done.stderr) == [f"train.py: error: cannot write checkpoint {out / 'last.pth'}: No space left "
                                        "on device; the previous checkpoints are intact"]
    assert models.load_checkpoint(out / "last.pth")["epoch"] == 1 and leftovers(out) == []


@pytest.mark.slow
def test_a_resumed_run_removes_what_a_killed_save_left(image_dir, tmp_path, capsys):
    out = tmp_path / "run"
    run(out, image_dir, "--set", "epoch_max=1", "--set", "epoch_save=1")
    stale = [out / ".last.partial-k9x2ab.pth", out / ".best.partial-0q1w2e.pth", out / ".epoch-2.partial-zz.pth",
             out / ".config.partial-a1.yaml"]
    kept = [out / ".notes.partial-1.pth", out / "notes.txt"]  # not the run's outputs
    for path in stale + kept:
        path.write_bytes(b"\0" * 1024)  # what kill -9 during torch.save leaves
    run(out, image_dir, "--set", "epoch_max=2", resume=out / "last.pth")
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in kept)
    assert models.load_checkpoint(out / "last.pth")["epoch"] == 2
    assert "removed " in (out / "log.txt").read_text()


@pytest.mark.slow
def test_an_existing_run_is_not_overwritten(straight_run, image_dir, capsys):
    before = (straight_run / "last.pth").read_bytes()
    with pytest.raises(SystemExit) as stop:
        run(straight_run, image_dir)
    assert stop.value.code == utils.EXIT_USAGE and "already holds a run" in capsys.readouterr().err
    assert (straight_run / "last.pth").read_bytes() == before


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_worker(rank: int, world_size: int, port: int, argv: list[str], out: str) -> None:
    """One torchrun-like process: the environment torchrun sets, then train.main; saves its replica's weights."""
    import os

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    model = train.main(argv)
    torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")


DDP_DEADLINE_S = 180  # ~10 s alone; a hang (e.g. the gloo teardown deadlock Trainer.release_ddp avoids) fails


def spawn_within(seconds: float, fn, args: tuple, nprocs: int) -> None:
    """mp.spawn that fails the test, killing the processes, if they have not all ended within `seconds`."""
    context = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + seconds
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {nprocs} training processes had not ended after {seconds} s")


@pytest.mark.slow
def test_two_process_gloo_ddp_run_ends_with_identical_replicas(image_dir, tmp_path):
    out = tmp_path / "ddp"
    argv = ["--config", TINY, "--path", str(image_dir), "--out", str(out), "--device", "cpu",
            "--set", "train_dataset.batch_size=4", "--val-path", str(image_dir), "--set", "val_dataset.scales=[3]"]
    spawn_within(DDP_DEADLINE_S, ddp_worker, (2, free_port(), argv, str(tmp_path)), nprocs=2)
    replicas = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    saved = models.load_checkpoint(out / "last.pth")
    assert (saved["epoch"], saved["step"]) == (2, 2)  # 4 images, global batch 4: one step per epoch
    assert not [k for k in saved["model"]["sd"] if k.startswith("module.")]
    torch.manual_seed(0)
    initial = models.make(saved["config"]["model"]).state_dict()
    changed = 0
    for key, value in replicas[0].items():
        assert torch.equal(value, replicas[1][key]), key
        assert torch.equal(value, saved["model"]["sd"][key]), key
        changed += not torch.equal(value, initial[key])
    assert changed > len(initial) // 2
    assert saved["best_psnr"] is not None and math.isfinite(saved["best_psnr"])


def test_init_from_starts_a_new_run_from_a_checkpoints_weights(image_dir, straight_run, tmp_path):
    source = models.load_checkpoint(straight_run / "last.pth")
    trainer, _ = trainer_and_batch(image_dir, tmp_path / "run", f"init_from={straight_run / 'last.pth'}")
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, source["model"]["sd"][key]), key
    assert (trainer.epoch, trainer.step, trainer.best_psnr) == (0, 0, None)  # a new run, not a resume
    fresh, _ = trainer_and_batch(image_dir, tmp_path / "fresh")
    assert not all(torch.equal(v, fresh.model.state_dict()[k]) for k, v in trainer.model.state_dict().items())


def test_time_limit_saves_the_step_reached_and_resumes(image_dir, tmp_path):
    """A limit that has passed after the first step: last.pth holds step 1 (mid-epoch), exit 0, and --resume goes
    on from that batch to the end."""
    out = tmp_path / "run"
    run(out, image_dir, "--time-limit", "1e-6")
    stopped = models.load_checkpoint(out / "last.pth")
    assert (stopped["step"], stopped["batch_in_epoch"], stopped["epoch"]) == (1, 1, 0)
    assert "stopped at the time limit at epoch 1, batch 1, step 1;" in (out / "log.txt").read_text()
    run(out, image_dir, resume=out / "last.pth")
    assert "resumed at epoch 1, batch 1, step 1" in (out / "log.txt").read_text()  # the epoch the stop named
    finished = models.load_checkpoint(out / "last.pth")
    assert finished["epoch"] == load_yaml(TINY)["epoch_max"] and finished["step"] > 1


def test_resuming_a_finished_run_says_there_is_nothing_left_to_do(straight_run, tmp_path, capsys):
    last = straight_run / "last.pth"
    before = {p.name: p.read_bytes() for p in straight_run.iterdir() if p.is_file()}
    assert train.main(["--resume", str(last)]) is None  # nothing trained
    captured = capsys.readouterr()
    assert reported_lines(captured.err) == [] and captured.out.strip().splitlines() == [
        f"train.py: nothing left to do: {last} has finished all 2 epochs (raise epoch_max with --set to train on)"]
    assert {p.name: p.read_bytes() for p in straight_run.iterdir() if p.is_file()} == before  # nothing written


@pytest.mark.parametrize("argv, message", [(["--bogus"], "unrecognized arguments: --bogus"),
                                           (["--time-limit", "soon"], "--time-limit: invalid float value")])
def test_argument_errors_are_one_line_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        train.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith("train.py: error: ") and message in err[0]


@pytest.mark.parametrize("limit", ["0", "-3", "nan", "inf"])
def test_a_bad_time_limit_is_refused_before_any_work(image_dir, tmp_path, capsys, limit):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        run(out, image_dir, f"--time-limit={limit}")
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--time-limit must be a positive number" in err[0] and not out.exists()


@pytest.mark.slow
def test_init_from_validates_the_initial_weights_first(image_dir, straight_run, tmp_path):
    """Epoch 0 is the starting point of the curve, and best.pth the initial weights until training beats them."""
    out = tmp_path / "run"
    run(out, image_dir, "--val-path", str(image_dir), "--set", "val_dataset.scales=[2]", "--set", "epoch_max=1",
        "--set", f"init_from={straight_run / 'last.pth'}", "--set", "optimizer.args.lr=0.05")
    log = (out / "log.txt").read_text()
    assert "epoch 0 (the weights of" in log and "val PSNR x2" in log.split("epoch 0")[1]
    best = models.load_checkpoint(out / "best.pth")
    source = models.load_checkpoint(straight_run / "last.pth")
    # lr 0.05 wrecks the weights in one epoch: best.pth must still be the initial weights (epoch 0)
    assert best["best_epoch"] == 0
    for key, value in best["model"]["sd"].items():
        assert torch.equal(value, source["model"]["sd"][key]), key


def test_init_from_a_missing_checkpoint_is_refused_before_any_work(image_dir, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        run(out, image_dir, "--set", f"init_from={tmp_path / 'missing.pth'}")
    assert stop.value.code == 2
    assert "init_from" in capsys.readouterr().err and not out.exists()
