"""inference/pipeline.py: output sizes and their limit, the bundled model as the default, grayscale detection and
luma, and the comparison's labels."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference import pipeline
from utils import REPOSITORY, UsageError


def test_target_sizes_round_like_the_official_code_and_respect_the_limit():
    assert pipeline.target_size((10, 20), (2.5, 1.25), None, 10_000) == (25, 25)
    assert pipeline.target_size((10, 20), None, (30, 40), 10_000) == (30, 40)
    with pytest.raises(UsageError, match="above --max-pixels"):
        pipeline.target_size((100, 100), (4.0, 4.0), None, 10_000)


def test_the_bundled_model_is_the_default_and_a_missing_one_says_so(monkeypatch):
    assert pipeline.model_path(None) == REPOSITORY / "weights" / "continuoussr-edsr-baseline.pth"
    assert pipeline.model_path("mine.pth") == Path("mine.pth")
    monkeypatch.setattr(pipeline, "DEFAULT_MODEL", Path("weights") / "not-there.pth")
    with pytest.raises(UsageError, match="missing: pass --model"):
        pipeline.model_path(None)


def test_a_gray_image_is_one_whose_channels_are_equal_and_its_luma_is_itself():
    gray = torch.rand(1, 5, 7).expand(3, 5, 7)
    assert pipeline.is_gray(gray) and not pipeline.is_gray(gray + torch.tensor([0.0, 0.0, 1e-3])[:, None, None])
    assert torch.allclose(pipeline.luma(gray), gray[:1], atol=1e-6)
    red = torch.zeros(3, 1, 1)
    red[0] = 1.0
    assert pipeline.luma(red).item() == pytest.approx(0.299)  # BT.601's weight of red


@pytest.mark.parametrize("channels", [1, 3])
def test_a_label_changes_only_its_corner(channels):
    image = torch.full((channels, 40, 120), 128 / 255)  # on the 8-bit grid the label is drawn in
    labelled = pipeline.labelled(image, "bicubic", 1.0)
    changed = (labelled != image).any(0)
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert changed.any() and rows.max() < 20 and cols.max() < 70  # a small box in the top-left corner
    assert (labelled == 1.0).any() and (labelled < 0.25).any()  # dark text on a white box
