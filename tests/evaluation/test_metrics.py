"""PSNR, SSIM, the Y conversion and the shave, held against scikit-image and hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from evaluation.metrics import EvalProtocol, psnr, rgb_to_y, shave, ssim


def image_pair(seed: int = 0, height: int = 40, width: int = 52) -> tuple[np.ndarray, np.ndarray]:
    """(hr, sr) float64 HxWx3 in [0, 1]: a smooth image and a noisy, clipped estimate of it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    hr = np.stack((x, 0.5 + 0.4 * np.sin(9 * x * y), (x + y) / 2), -1)
    sr = np.clip(hr + rng.normal(0, 0.05, hr.shape), 0, 1)
    return hr, sr


def to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.transpose(2, 0, 1).copy())[None]


def test_rgb_to_y_matches_scikit_image_bt601():
    hr, _ = image_pair()
    expected = rgb2ycbcr(hr)[..., 0]
    y = rgb_to_y(to_tensor(hr))
    assert y.shape == (1, 1, *hr.shape[:2])
    np.testing.assert_allclose(y[0, 0].numpy(), expected, rtol=0, atol=1e-10)
    assert rgb_to_y(torch.zeros(3, 2, 2)).unique().item() == pytest.approx(16.0)
    assert rgb_to_y(torch.ones(3, 2, 2)).unique().item() == pytest.approx(235.0)


def test_shave_crops_each_side():
    image = torch.arange(5 * 7).view(1, 1, 5, 7)
    assert torch.equal(shave(image, 2), image[..., 2:3, 2:5])
    assert torch.equal(shave(image, 0), image)
    with pytest.raises(ValueError, match="nothing left"):
        shave(image, 3)


@pytest.mark.parametrize("pixels", [0, 3, 10])
def test_rgb_psnr_matches_scikit_image(pixels):
    hr, sr = image_pair()
    crop = (slice(pixels, hr.shape[0] - pixels), slice(pixels, hr.shape[1] - pixels))
    expected = peak_signal_noise_ratio(hr[crop], sr[crop], data_range=1.0)
    assert psnr(to_tensor(sr), to_tensor(hr), pixels).item() == pytest.approx(expected, abs=1e-9)


def test_y_psnr_is_the_edsr_luma_of_the_difference():
    hr, sr = image_pair(seed=1)
    pixels = 4
    crop = (slice(pixels, -pixels), slice(pixels, -pixels))
    diff_y = (sr - hr)[crop] @ np.array([65.738, 129.057, 25.064]) / 256
    expected = -10 * math.log10(np.mean(diff_y ** 2))
    got = psnr(to_tensor(sr), to_tensor(hr), pixels, y_channel=True).item()
    assert got == pytest.approx(expected, abs=1e-9)
    # The EDSR weights are BT.601's rescaled by 256/255 (to 3 decimals): the score agrees with PSNR on the
    # BT.601 luma in [16, 235] with a 255 range to a few 1e-5 dB.
    y_sr, y_hr = rgb2ycbcr(sr)[..., 0][crop], rgb2ycbcr(hr)[..., 0][crop]
    assert got == pytest.approx(peak_signal_noise_ratio(y_hr, y_sr, data_range=255), abs=1e-3)


def test_psnr_of_a_uniform_error_is_known():
    hr = torch.full((2, 3, 16, 16), 0.5, dtype=torch.float64)
    assert torch.allclose(psnr(hr + 0.1, hr), torch.full((2,), 20.0, dtype=torch.float64))
    luma_gain = (65.738 + 129.057 + 25.064) / 256
    expected = -20 * math.log10(0.1 * luma_gain)
    assert psnr(hr + 0.1, hr, y_channel=True)[0].item() == pytest.approx(expected, abs=1e-12)


def test_the_shave_ignores_the_border():
    hr = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    sr = hr.clone()
    sr[..., :3, :] = 0.0  # errors only in the top three rows
    assert psnr(sr, hr, 3).item() == math.inf
    assert math.isfinite(psnr(sr, hr, 2).item())
    assert ssim(sr, hr, 3).item() == pytest.approx(1.0, abs=1e-12)
    assert ssim(sr, hr, 0).item() < 1.0


@pytest.mark.parametrize("pixels", [0, 4])
def test_ssim_matches_scikit_image_gaussian_ssim(pixels):
    hr, sr = image_pair(seed=2, height=48, width=37)
    crop = (slice(pixels, hr.shape[0] - pixels), slice(pixels, hr.shape[1] - pixels))
    y_hr, y_sr = rgb2ycbcr(hr)[..., 0][crop], rgb2ycbcr(sr)[..., 0][crop]
    expected = structural_similarity(y_hr, y_sr, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255)
    got = ssim(to_tensor(sr), to_tensor(hr), pixels).item()
    assert got == pytest.approx(expected, abs=1e-10)
    assert 0.3 < got < 0.99  # a real, imperfect match: the comparison is not vacuous


def test_ssim_is_per_image_in_a_batch():
    pairs = [image_pair(seed) for seed in (3, 4)]
    sr = torch.cat([to_tensor(s) for _, s in pairs])
    hr = torch.cat([to_tensor(h) for h, _ in pairs])
    batch = ssim(sr, hr, 2)
    single = torch.stack([ssim(sr[i], hr[i], 2)[0] for i in range(2)])
    assert torch.allclose(batch, single, rtol=0, atol=1e-14) and batch[0] != batch[1]


def test_ssim_needs_a_full_window():
    image = torch.rand(1, 3, 20, 20)
    with pytest.raises(ValueError, match="11x11"):
        ssim(image, image, 5)


@pytest.mark.parametrize("eval_type, shave_pixels, y_channel",
                         [("benchmark-4", 4, True), ("div2k-4", 10, False), ("benchmark-2.5", 3, True),
                          ("div2k-30", 36, False)])
def test_protocol_shave_and_channel(eval_type, shave_pixels, y_channel):
    protocol = EvalProtocol.from_eval_type(eval_type)
    assert (protocol.shave, protocol.y_channel) == (shave_pixels, y_channel)


@pytest.mark.parametrize("eval_type", ["benchmark", "set5-4", "benchmark-x", "div2k-0", "-4"])
def test_protocol_rejects_bad_eval_types(eval_type):
    with pytest.raises(ValueError):
        EvalProtocol.from_eval_type(eval_type)


def test_protocol_score_clamps_the_output():
    hr = torch.rand(1, 3, 30, 30, generator=torch.Generator().manual_seed(1))
    over = hr.clone()
    over[..., 10, 10] = 5.0  # unclamped render above 1
    clamped = over.clamp(0, 1)
    protocol = EvalProtocol("benchmark", 4)
    scores = protocol.score(over, hr)
    assert scores["psnr"].item() == pytest.approx(psnr(clamped, hr, 4, y_channel=True).item(), abs=1e-12)
    assert scores["ssim"].item() == pytest.approx(ssim(clamped, hr, 4).item(), abs=1e-12)
