"""What SwinIR and HAT share as ContinuousSR encoders (models/window_blocks.py: WindowSREncoder), checked by
behaviour: the image goes in unnormalised, as in the official code (no mean subtraction, no `img_range`
scaling, unlike the authors' SR models), and any size gives the features of exactly that image."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.hat import HAT
from models.swinir import SwinIR

WINDOW = 4
TINY = {
    "swinir": (SwinIR, dict(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=WINDOW)),
    "hat": (HAT, dict(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=WINDOW, squeeze_factor=4,
                      mlp_ratio=2, upscale=4, upsampler="pixelshuffle")),
}


def build(name: str, **changes) -> torch.nn.Module:
    cls, args = TINY[name]
    torch.manual_seed(0)
    return cls(**{**args, **changes}).eval()


@pytest.mark.parametrize("name", sorted(TINY))
def test_img_range_changes_nothing(name):
    """The authors' models multiply the input by img_range; here it is accepted for the specs' sake only."""
    plain, scaled = build(name), build(name, img_range=255.0)
    scaled.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 9, 7)
    with torch.no_grad():
        assert torch.equal(plain(x), scaled(x))


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_first_layer_sees_the_image_itself(name):
    """No mean is subtracted: the first convolution receives the image's own values (then its reflect padding
    to the window)."""
    model = build(name)
    seen = []
    model.conv_first.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        model(x)
    assert len(seen) == 1 and tuple(seen[0].shape[-2:]) == (12, 8)  # 9 x 7 padded to multiples of 4
    assert torch.equal(seen[0][..., :9, :7], x)


@pytest.mark.parametrize("name", sorted(TINY))
def test_any_size_gives_the_features_of_exactly_that_image(name):
    """Off the window grid, the features are 4h x 4w: those of the reflect-padded image, cropped back."""
    model = build(name)
    x = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        out = model(x)
        padded = model(F.pad(x, (0, 1, 0, 3), mode="reflect"))
    assert out.shape == (1, model.out_dim, 36, 28)
    assert torch.allclose(out, padded[..., :36, :28], atol=1e-6)
