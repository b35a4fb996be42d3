"""What SwinIR and HAT share as ContinuousSR encoders: the image goes in unnormalised, as in the official code."""
from __future__ import annotations

import pytest
import torch

from models.hat import HAT
from models.swinir import SwinIR
from models.window_blocks import pad_to_multiple

TINY = {
    "swinir": (SwinIR, dict(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4)),
    "hat": (HAT, dict(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, squeeze_factor=4,
                      mlp_ratio=2, upscale=4, upsampler="pixelshuffle")),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_uses_the_raw_image_no_mean_and_no_img_range(name):
    cls, args = TINY[name]
    torch.manual_seed(0)
    model = cls(**args, img_range=255.0).eval()
    x = torch.rand(2, 3, 9, 7)
    with torch.no_grad():
        shallow = model.conv_first(pad_to_multiple(x, 4))
        deep = model.conv_after_body(model.forward_features(shallow)) + shallow
        expected = model.upsample(model.conv_before_upsample(deep))[..., :36, :28]
        assert torch.allclose(model(x), expected, atol=1e-6)
