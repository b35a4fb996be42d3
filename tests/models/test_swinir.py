"""SwinIR encoder: official state-dict layout, feature shapes, batch independence and shifted-window masks."""
from __future__ import annotations


import pytest
import torch

import models
from models.swinir import SwinIR

TINY = dict(img_size=16, embed_dim=12, depths=[2, 2], num_heads=[2, 2], window_size=4)


def tiny(**overrides: object) -> SwinIR:
    """A seeded, eval-mode tiny SwinIR (window 4, two groups of two blocks) with `overrides` applied."""
    torch.manual_seed(0)
    return SwinIR(**{**TINY, **overrides}).eval()


@pytest.fixture(scope="module")
def layout(reference_layout) -> dict:
    return reference_layout["swinir"]


@pytest.fixture(scope="module")
def default_model() -> SwinIR:
    with torch.no_grad():
        return SwinIR()


def test_state_dict_matches_official_layout(layout, default_model):
    sd = default_model.state_dict()
    assert list(sd) == list(layout["state_dict"])
    assert {k: list(v.shape) for k, v in sd.items()} == layout["state_dict"]
    assert sum(p.numel() for p in default_model.parameters()) == layout["num_params"]


def test_registry_builds_the_spec(layout):
    model = models.make({"name": "swinir", "args": {**layout["spec"]["args"], **TINY}})
    assert isinstance(model, SwinIR)


def test_load_state_dict_strict_round_trip(layout, default_model):
    own = default_model.state_dict()
    torch.manual_seed(1)
    sd = {k: torch.randn(shape) if own[k].is_floating_point() else own[k].clone()
          for k, shape in layout["state_dict"].items()}
    with torch.no_grad():
        other = SwinIR()
    other.load_state_dict(sd, strict=True)
    reloaded = other.state_dict()
    assert all(torch.equal(reloaded[k], sd[k]) for k in sd)


@pytest.mark.parametrize("hw", [(13, 10), (16, 16), (3, 5)])
def test_pixelshuffle_features_shape(hw):
    model = tiny()
    assert (model.out_dim, model.feature_scale) == (64, 4)
    with torch.no_grad():
        out = model(torch.rand(2, 3, *hw))
    assert out.shape == (2, 64, 4 * hw[0], 4 * hw[1])


def test_no_upsampler_gives_body_features():
    model = tiny(upsampler="")
    assert (model.out_dim, model.feature_scale) == (12, 1)
    assert not any(k.startswith(("conv_before_upsample", "upsample", "conv_last")) for k in model.state_dict())
    with torch.no_grad():
        out = model(torch.rand(2, 3, 13, 10))
    assert out.shape == (2, 12, 13, 10)


def test_upscale_two_and_3conv():
    model = tiny(upscale=2, resi_connection="3conv")
    keys = model.state_dict()
    assert {"layers.0.conv.4.weight", "conv_after_body.4.weight", "upsample.0.weight"} <= set(keys)
    assert "upsample.2.weight" not in keys
    with torch.no_grad():
        assert model(torch.rand(1, 3, 9, 7)).shape == (1, 64, 18, 14)


@pytest.mark.parametrize("upsampler", ["pixelshuffledirect", "nearest+conv", "bogus"])
def test_unsupported_upsampler_raises(upsampler):
    with pytest.raises(ValueError, match="upsampler"):
        tiny(upsampler=upsampler)


def test_batch_independence():
    model = tiny()
    x = torch.rand(2, 3, 13, 10)
    with torch.no_grad():
        torch.testing.assert_close(model(x[:1]), model(x)[:1], atol=1e-5, rtol=0)


def test_mask_computed_for_other_sizes_equals_stored_mask():
    """A model built for 8x8 must compute on the fly the mask that a 16x16 model stores."""
    stored = tiny()
    computed = tiny(img_size=8)
    sd = {k: v for k, v in stored.state_dict().items() if not k.endswith("attn_mask")}
    computed.load_state_dict(sd, strict=False)
    assert stored.layers[0].residual_group.blocks[1].attn_mask.shape == (16, 16, 16)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(computed(x), stored(x), atol=1e-6, rtol=0)


def test_stored_mask_used_only_at_img_size():
    model = tiny()
    x_same, x_other = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 12, 20)
    with torch.no_grad():
        before = model(x_same), model(x_other)
        for name, buf in model.named_buffers():
            if name.endswith("attn_mask"):
                buf.zero_()
        after = model(x_same), model(x_other)
    assert not torch.allclose(before[0], after[0])
    torch.testing.assert_close(before[1], after[1], atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes(dtype):
    model = tiny().to(dtype)
    with torch.no_grad():
        out = model(torch.rand(2, 3, 13, 10, dtype=dtype))
    assert out.dtype == dtype and out.shape == (2, 64, 52, 40)
    assert torch.isfinite(out).all()


def test_training_step_backpropagates():
    model = tiny(drop_path_rate=0.5, drop_rate=0.1, attn_drop_rate=0.1).train()
    model(torch.rand(2, 3, 13, 10)).square().mean().backward()
    assert model.conv_first.weight.grad is not None
    assert model.layers[0].residual_group.blocks[1].attn.relative_position_bias_table.grad.abs().sum() > 0
    assert model.conv_last.weight.grad is None  # conv_last is not part of the encoder forward
