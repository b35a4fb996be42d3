"""What the evaluation tests share: the shipped configs, a generated benchmark prepared as test.py prepares it, and
scores computed independently of evaluation/ (PIL LR, the official forward, numpy/scikit-image metrics)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from evaluation.data import build_dataset, resolve_data_paths
from evaluation.loading import load_model
from evaluation.metrics import EvalProtocol
from evaluation.schema import validate_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "test"


def shipped(name: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / name).read_text())


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint, torch.device("cpu"))


def prepared(name: str, root: Path, **overrides) -> tuple[dict, EvalProtocol, object]:
    config = shipped(name)
    config.update(overrides)
    config = resolve_data_paths(config, root)
    protocol = validate_config(config)
    return config, protocol, build_dataset(config)


def independent_scores(model, lr: np.ndarray, gt: np.ndarray, scale: float, kind: str, data_norm=None):
    """PSNR and SSIM of one image computed without evaluation/ (loop.py, metrics.py): the official
    forward signature, EDSR's luma weights written out, scikit-image for the rest."""
    sub_in, div_in, sub_gt, div_gt = 0.0, 1.0, 0.0, 1.0
    if data_norm:
        (sub_in,), (div_in,) = data_norm["inp"]["sub"], data_norm["inp"]["div"]
        (sub_gt,), (div_gt,) = data_norm["gt"]["sub"], data_norm["gt"]["div"]
    inp = torch.from_numpy(lr.transpose(2, 0, 1).copy())[None].float() / 255
    with torch.no_grad():
        out = model((inp - sub_in) / div_in, torch.tensor([[float(scale), float(scale)]])) * div_gt + sub_gt
    sr = out.clamp(0, 1)[0].permute(1, 2, 0).double().numpy()
    ref = gt.astype(np.float64) / 255
    assert sr.shape == ref.shape
    shave = math.ceil(scale) + (6 if kind == "div2k" else 0)
    inner = (slice(shave, -shave), slice(shave, -shave))
    if kind == "benchmark":
        diff = (sr - ref)[inner] @ np.array([65.738, 129.057, 25.064]) / 256
        psnr = -10 * math.log10(np.mean(diff ** 2))
    else:
        psnr = peak_signal_noise_ratio(ref[inner], sr[inner], data_range=1.0)
    ssim = structural_similarity(rgb2ycbcr(ref)[..., 0][inner], rgb2ycbcr(sr)[..., 0][inner], gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False, data_range=255)
    return psnr, ssim


def on_the_fly_pair(hr_path: Path, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR crop) as docs/DESIGN.md §7 says: h_lr = floor(h / s), HR cropped to h_lr·s, LR = PIL bicubic of it."""
    hr = np.asarray(Image.open(hr_path))
    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    crop = hr[:h * scale, :w * scale]
    return np.asarray(Image.fromarray(crop).resize((w, h), Image.Resampling.BICUBIC)), crop
