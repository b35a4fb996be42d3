"""evaluation/loading.py: checkpoint errors, and the bicubic baseline held to MATLAB bicubic scored by scikit-image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

import models
import rasterizer
from conftest import BENCHMARK_HR_SIZES
from evaluation.imresize import imresize
from evaluation.loading import load_model
from evaluation.loop import evaluate
from scoring_checks import prepared
from utils import UsageError

def test_checkpoint_and_device_errors(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="not a readable checkpoint"):
        load_model(tmp_path / "bad.pth", torch.device("cpu"))
    spec = {"name": "mlp", "args": {"in_dim": 2, "out_dim": 2, "hidden_list": [4]}}
    models.save_checkpoint({"model": models.model_payload(spec, models.make(spec))}, tmp_path / "mlp.pth")
    with pytest.raises(UsageError, match=r"not a ContinuousSR model \(encode/render\)"):
        load_model(tmp_path / "mlp.pth", torch.device("cpu"))
    with pytest.raises(UsageError, match="unknown rasterizer backend"):
        rasterizer.check_backend("fast", torch.device("cpu"))


def test_bicubic_baseline_scores_matlab_bicubic_upscaling(benchmark_root):
    """`--model bicubic`: PSNR of the 8-bit MATLAB-bicubic upscale of each paired LR, by skimage on the luma."""
    _, protocol, dataset = prepared("test-set5-4-paired.yaml", benchmark_root)
    result = evaluate(load_model("bicubic", torch.device("cpu")), dataset, protocol, progress=False)
    for i in range(len(BENCHMARK_HR_SIZES)):
        lr = np.asarray(Image.open(benchmark_root / "benchmark/Set5/LR_bicubic/X4" / f"img{i}x4.png"))
        gt = np.asarray(Image.open(benchmark_root / "benchmark/Set5/HR" / f"img{i}.png"))
        gt = gt[:lr.shape[0] * 4, :lr.shape[1] * 4]
        up = imresize(lr, size=gt.shape[:2])
        assert up.dtype == np.uint8
        # the EDSR luma weights over 256 on [0, 1] images, shave 4: the benchmark protocol, computed with skimage
        luma = lambda a: (a.astype(np.float64) / 255) @ (np.array([65.738, 129.057, 25.064]) / 256)  # noqa: E731
        expected = peak_signal_noise_ratio(luma(gt)[4:-4, 4:-4], luma(up)[4:-4, 4:-4], data_range=1.0)
        assert result.psnr[4.0][i] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("self_ensemble", [False, True])
def test_the_model_encodes_at_the_precision_asked_for_beneath_the_self_ensemble(tiny_checkpoint, monkeypatch,
                                                                                self_ensemble):
    """test.py --precision: every encode of the loaded model (all eight under --self-ensemble) runs at it."""
    import gaussian

    used = []
    chosen = gaussian.encode_precision
    monkeypatch.setattr(gaussian, "encode_precision", lambda name, device: used.append(name) or chosen(name, device))
    model = load_model(tiny_checkpoint, torch.device("cpu"), self_ensemble, precision="tf32")
    used.clear()  # the checkpoint's dry run at load
    with torch.no_grad():
        model.encode(torch.rand(1, 3, 6, 8))
    assert used == ["tf32"] * (8 if self_ensemble else 1)
