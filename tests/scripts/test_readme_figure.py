"""scripts/readme_figure.py: the two labelled crops side by side, at the right places of the right images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from scripts import readme_figure
from utils import UsageError


def test_crop_box_is_checked_against_the_image():
    assert readme_figure.crop_box("1,2,3,4", 10, 10) == (1, 2, 3, 4)
    for bad in ("1,2,3", "a,b,c,d", "8,0,3,3", "0,0,0,2", "-1,0,2,2"):
        with pytest.raises(UsageError):
            readme_figure.crop_box(bad, 10, 10)


def test_the_figure_shows_the_crop_of_bicubic_left_and_of_the_render_right():
    torch.manual_seed(0)
    rgb = torch.rand(3, 6, 8)
    sr = torch.rand(3, 12, 16)  # a stand-in for the model's x2 render
    box, scale, magnify = (2, 1, 3, 4), 2, 3
    image = np.asarray(readme_figure.figure(rgb, sr, box, scale, magnify))
    panel_w, panel_h = box[2] * scale * magnify, box[3] * scale * magnify
    assert image.shape == (readme_figure.LABEL_HEIGHT + panel_h, 2 * panel_w + readme_figure.GAP, 3)
    right = image[readme_figure.LABEL_HEIGHT:, panel_w + readme_figure.GAP:][::magnify, ::magnify]
    expected = sr[:, 2:10, 4:10].permute(1, 2, 0).mul(255).round().numpy()
    assert np.abs(right.astype(float) - expected).max() <= 1
    left = image[readme_figure.LABEL_HEIGHT:, :panel_w][::magnify, ::magnify]
    bicubic = torch.nn.functional.interpolate(rgb[None], size=(12, 16), mode="bicubic", align_corners=False)[0]
    expected = bicubic.clamp(0, 1)[:, 2:10, 4:10].permute(1, 2, 0).mul(255).round().numpy()
    assert np.abs(left.astype(float) - expected).max() <= 1
    assert (image[:readme_figure.LABEL_HEIGHT] < 128).any()  # the labels are drawn


@pytest.mark.parametrize("scale, magnify, message", [(100000, 1, "above --max-pixels"),
                                                     (4, 100000, "figure has"), (1, 1, "name it .png")])
def test_a_figure_too_large_or_not_a_png_is_refused_before_the_model_loads(tmp_path, capsys, scale, magnify,
                                                                          message):
    from conftest import random_rgb, write_rgb

    write_rgb(tmp_path / "lr.png", random_rgb(12, 16))
    out = tmp_path / ("f.txt" if message == "name it .png" else "f.png")
    code = readme_figure.main(["--input", str(tmp_path / "lr.png"), "--model", str(tmp_path / "absent.pth"),
                               "--scale", str(scale), "--magnify", str(magnify), "--crop", "0,0,4,4",
                               "--out", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not out.exists()
