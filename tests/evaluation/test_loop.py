"""evaluation/loop.py and report.py: scores held against an independent computation on a generated 3-image
benchmark, several scales from one encode, window encoders, the warm-up and the progress bar."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import models
from conftest import BENCHMARK_HR_SIZES, write_rgb
from evaluation.data import build_dataset, resolve_data_paths
from evaluation.imresize import imresize
from evaluation.loop import evaluate
from evaluation.metrics import EvalProtocol
from evaluation.report import format_report
from evaluation.schema import validate_config
from scoring_checks import independent_scores, model, on_the_fly_pair, prepared, shipped  # noqa: F401

@pytest.mark.parametrize("name, data_norm", [
    ("test-set5-4.yaml", None),
    ("test-set5-2.yaml", {"inp": {"sub": [0.5], "div": [0.5]}, "gt": {"sub": [0.5], "div": [0.5]}}),
    ("test-div2k-2.yaml", None),
])
@pytest.mark.slow
def test_on_the_fly_scores_match_an_independent_computation(model, benchmark_root, name, data_norm):
    config = shipped(name)
    if data_norm:
        config["data_norm"] = data_norm
    config["test_dataset"]["dataset"]["args"]["root_path"] = "benchmark/Set5/HR"  # also for the DIV2K protocol
    config = resolve_data_paths(config, benchmark_root)
    protocol = validate_config(config)
    dataset = build_dataset(config)
    result = evaluate(model, dataset, protocol, data_norm=config.get("data_norm"), progress=False)
    scale = int(protocol.scale)
    assert result.names == ["img0", "img1", "img2"]
    for i in range(3):
        lr, gt = on_the_fly_pair(benchmark_root / "benchmark/Set5/HR" / f"img{i}.png", scale)
        psnr, ssim = independent_scores(model, lr, gt, scale, protocol.kind, data_norm)
        assert result.psnr[scale][i] == pytest.approx(psnr, abs=1e-5)
        assert result.ssim[scale][i] == pytest.approx(ssim, abs=1e-6)
    assert result.mean("psnr", scale) == pytest.approx(np.mean(result.psnr[scale]))
    assert len(result.encode_seconds) == 3 and all(t > 0 for t in result.encode_seconds)


def test_the_progress_bar_reaches_every_image(model, benchmark_root, capsys):
    """Written to a pipe (not a terminal), the bar's last state counts all three images."""
    _, protocol, dataset = prepared("test-set5-4.yaml", benchmark_root)
    evaluate(model, dataset, protocol, description="bar")
    last = capsys.readouterr().err.split("\r")[-1]
    assert "bar: 100%" in last and "3/3" in last, last


def test_paired_scores_match_an_independent_computation(model, benchmark_root):
    _, protocol, dataset = prepared("test-set5-4-paired.yaml", benchmark_root)
    result = evaluate(model, dataset, protocol, progress=False)
    for i, (height, width) in enumerate(BENCHMARK_HR_SIZES):
        lr = np.asarray(Image.open(benchmark_root / "benchmark/Set5/LR_bicubic/X4" / f"img{i}x4.png"))
        gt = np.asarray(Image.open(benchmark_root / "benchmark/Set5/HR" / f"img{i}.png"))
        gt = gt[:lr.shape[0] * 4, :lr.shape[1] * 4]
        psnr, ssim = independent_scores(model, lr, gt, 4, "benchmark")
        assert result.psnr[4.0][i] == pytest.approx(psnr, abs=1e-5)
        assert result.ssim[4.0][i] == pytest.approx(ssim, abs=1e-6)


class CountingModel(torch.nn.Module):
    """The model, counting encodes and renders."""

    def __init__(self, model):
        super().__init__()
        self.model, self.encodes, self.renders = model, 0, []

    def encode(self, inp):
        self.encodes += 1
        return self.model.encode(inp)

    def render(self, field, **kwargs):
        self.renders.append(kwargs.get("size"))
        return self.model.render(field, **kwargs)


@pytest.mark.slow
def test_scales_encode_once_and_render_every_scale(model, benchmark_root, tmp_path):
    _, protocol, dataset = prepared("test-set5-4.yaml", benchmark_root)
    counting = CountingModel(model)
    result = evaluate(counting, dataset, protocol, scales=[4, 2, 3, 2.5], save_dir=tmp_path / "sr", progress=False)
    assert result.scales == [2.0, 2.5, 3.0, 4.0]
    assert counting.encodes == 3 and len(counting.renders) == 3 * 4
    plain = evaluate(model, dataset, protocol, progress=False)
    assert result.psnr[4.0] == pytest.approx(plain.psnr[4.0], abs=1e-9)
    assert result.ssim[4.0] == pytest.approx(plain.ssim[4.0], abs=1e-12)
    for i in range(3):
        lr, gt = on_the_fly_pair(benchmark_root / "benchmark/Set5/HR" / f"img{i}.png", 4)
        for s in (2.0, 2.5, 3.0):
            size = (round(lr.shape[0] * s), round(lr.shape[1] * s))
            assert counting.renders[4 * i + [2.0, 2.5, 3.0].index(s)] == size
            assert np.asarray(Image.open(tmp_path / "sr" / f"x{s:g}" / f"img{i}.png")).shape[:2] == size
            ref = imresize(gt, size=size)  # the HR at the rendered size, MATLAB bicubic, 8-bit
            psnr, ssim = independent_scores(model, lr, ref, s, "benchmark")
            assert result.psnr[s][i] == pytest.approx(psnr, abs=1e-5)
            assert result.ssim[s][i] == pytest.approx(ssim, abs=1e-6)
    assert len(list((tmp_path / "sr" / "x4").glob("*.png"))) == 3
    report = format_report(result)
    assert "x2.5" in report and "result: PSNR" in report and report.count("img") == 3


def test_window_encoders_need_no_padding_here(benchmark_root):
    """SwinIR pads to its window inside the encoder: odd-sized LR images give a field of exactly their size."""
    spec = {"name": "continuous-gaussian", "args": {"encoder_spec": {"name": "swinir", "args": {
        "upsampler": "pixelshuffle", "upscale": 4, "embed_dim": 12, "depths": [1], "num_heads": [2],
        "window_size": 8, "img_size": 16}}}}
    torch.manual_seed(0)
    swin = models.make(spec).eval()
    write_rgb(benchmark_root / "odd" / "a.png", np.asarray(Image.open(benchmark_root / "benchmark/Set5/HR/img2.png")))
    config = shipped("test-set5-4.yaml")
    config["test_dataset"]["dataset"]["args"]["root_path"] = str(benchmark_root / "odd")
    counting = CountingModel(swin)
    result = evaluate(counting, build_dataset(config), EvalProtocol("benchmark", 4), progress=False)
    lr, gt = on_the_fly_pair(benchmark_root / "odd" / "a.png", 4)
    assert lr.shape[:2] == (10, 14)  # not multiples of the window
    assert counting.renders == [gt.shape[:2]]
    assert result.psnr[4.0][0] == pytest.approx(independent_scores(swin, lr, gt, 4, "benchmark")[0], abs=1e-5)


def test_warmup_runs_once_untimed_and_unscored(model, benchmark_root):
    _, protocol, dataset = prepared("test-set5-4.yaml", benchmark_root)
    counting = CountingModel(model)
    warmed = evaluate(counting, dataset, protocol, warmup=True, progress=False)
    assert counting.encodes == 4 and len(counting.renders) == 4
    assert len(warmed.encode_seconds) == 3 and len(warmed.render_seconds[4.0]) == 3
    assert warmed.psnr == evaluate(model, dataset, protocol, warmup=False, progress=False).psnr


def test_more_workers_than_images_start_no_more_processes_than_images(model, benchmark_root, monkeypatch):
    """A clumsy --workers 99999999999999999999 on three images starts three loader processes, not one per worker
    asked for (which never ended)."""
    import evaluation.loop as loop

    started = []
    monkeypatch.setattr(loop, "DataLoader", lambda dataset, **kwargs: started.append(kwargs["num_workers"]) or
                        torch.utils.data.DataLoader(dataset, **{**kwargs, "num_workers": 0}))
    _, protocol, dataset = prepared("test-set5-4.yaml", benchmark_root)
    evaluate(model, dataset, protocol, workers=99999999999999999999, progress=False)
    assert started == [len(dataset)] == [3]
