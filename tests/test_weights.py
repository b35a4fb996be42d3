"""The bundled model (weights/): the official checkpoint format, demo.py's default, and better than bicubic on
a photograph it never saw (the example image, one of its held-out photographs)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import demo
import models
from evaluation import metrics
from evaluation.imresize import imresize
from evaluation.loading import BicubicBaseline
from inference import pipeline
from inference.image_io import read_image, to_uint8
from scripts.bundle_model import STORAGES

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights" / "continuoussr-edsr-baseline.pth"
RECORD = WEIGHTS.with_suffix(".json")  # scripts/bundle_model.py's record: storage, test-split table
EXAMPLE = ROOT / "assets" / "example.png"
MAX_WEIGHTS_BYTES = 16 * 2 ** 20  # the bundled weights stay small enough for any Git host (16 MiB)


@pytest.fixture(scope="module")
def bundled() -> torch.nn.Module:
    return models.model_from_checkpoint(WEIGHTS).eval()


def test_the_weights_are_demo_defaults_in_the_official_format():
    assert pipeline.model_path(None).resolve() == WEIGHTS.resolve()
    assert WEIGHTS.stat().st_size <= MAX_WEIGHTS_BYTES
    checkpoint = models.load_checkpoint(WEIGHTS)
    assert set(checkpoint["model"]) == {"name", "args", "sd"}
    assert checkpoint["model"]["name"] == "continuous-gaussian"
    assert checkpoint["model"]["args"]["encoder_spec"]["name"] == "edsr-baseline"


def test_the_file_stores_the_recorded_storage_and_loads_into_float32_parameters_holding_its_values(bundled):
    """The file stores the storage its record names (fp16, the encoder perhaps in fp32: smaller than fp32); the
    model computes in float32 with exactly the stored values."""
    stored = models.load_checkpoint(WEIGHTS)["model"]["sd"]
    keep_fp32 = dict(STORAGES)[json.loads(RECORD.read_text())["dtype"]]
    floats = {name: value for name, value in stored.items() if value.is_floating_point()}
    assert {name for name, value in floats.items() if value.dtype == torch.float32} == {
        name for name in floats if name.startswith(keep_fp32)}
    assert {value.dtype for name, value in floats.items() if not name.startswith(keep_fp32)} == {torch.float16}
    for name, value in bundled.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, stored[name].float()), name


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.slow
def test_the_bundled_model_beats_bicubic_on_a_held_out_photograph(bundled, scale):
    hr = read_image(EXAMPLE)
    hr = hr[:, : hr.shape[1] // scale * scale, : hr.shape[2] // scale * scale]
    lr = torch.from_numpy(imresize(to_uint8(hr), 1 / scale).transpose(2, 0, 1) / 255.0).float()[None]
    with torch.no_grad():
        sr = bundled(lr, torch.tensor([[float(scale)] * 2])).clamp(0, 1)
    bicubic = BicubicBaseline().render(lr, size=tuple(hr.shape[-2:]))
    assert sr.shape == bicubic.shape == (1, *hr.shape)
    model_db = float(metrics.psnr(sr, hr[None], shave_pixels=scale, y_channel=True))
    bicubic_db = float(metrics.psnr(bicubic, hr[None], shave_pixels=scale, y_channel=True))
    assert model_db > bicubic_db


@pytest.mark.slow
def test_demo_upscales_the_example_with_the_bundled_model_by_default(tmp_path):
    out = tmp_path / "example_x2.png"
    assert demo.main(["-q", "--input", str(EXAMPLE), "--scale", "2", "--output", str(out)]) == 0
    with Image.open(EXAMPLE) as lr, Image.open(out) as sr:
        assert sr.size == (2 * lr.width, 2 * lr.height)
