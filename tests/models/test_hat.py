"""HAT encoder: official state-dict layout, output shapes, padding/cropping, batch independence, loading."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from models import make
from models.hat import HAT, overlapping_relative_position_index

TINY = dict(embed_dim=12, depths=[1, 1], num_heads=[2, 2], window_size=4, img_size=16, compress_ratio=3,
            squeeze_factor=4, mlp_ratio=2, upscale=4, upsampler="pixelshuffle")


def tiny(seed: int = 0, **overrides) -> HAT:
    torch.manual_seed(seed)
    return HAT(**{**TINY, **overrides}).eval()


@pytest.mark.slow
def test_official_layout_hat_srx4(reference_layout):
    entry = reference_layout["hat-srx4"]
    with torch.no_grad():
        model = make(entry["spec"])
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == entry["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == entry["num_params"]
    assert (model.out_dim, model.feature_scale) == (64, 4)


def test_default_arguments_build_the_original_default():
    model = HAT()
    assert model.embed_dim == 96 and len(model.layers) == 4 and model.window_size == 7
    assert model.upsampler == "" and not hasattr(model, "conv_last")
    assert (model.out_dim, model.feature_scale) == (96, 1)


@pytest.mark.parametrize("size", [(13, 10), (8, 8), (3, 2)])
def test_pixelshuffle_output_shape(size):
    h, w = size
    with torch.no_grad():
        out = tiny()(torch.rand(2, 3, h, w))
    assert out.shape == (2, 64, 4 * h, 4 * w)


def test_body_features_without_upsampler():
    model = tiny(upsampler="")
    assert not any(hasattr(model, n) for n in ("conv_before_upsample", "upsample", "conv_last"))
    assert (model.out_dim, model.feature_scale) == (12, 1)
    with torch.no_grad():
        assert model(torch.rand(2, 3, 13, 10)).shape == (2, 12, 13, 10)


def test_odd_overlap_window():
    # window 7 with overlap 0.5 gives a 10x10 overlapping window (odd difference): the original fails here.
    with torch.no_grad():
        out = tiny(window_size=7)(torch.rand(1, 3, 9, 15))
    assert out.shape == (1, 64, 36, 60)


def test_forward_skips_conv_last():
    model, x = tiny(), torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        before = model(x)
        model.conv_last.weight.add_(1.0)
        assert torch.equal(model(x), before)


def test_padding_then_crop():
    """A size off the window grid gives the crop of the reflect-padded input's features."""
    model, x = tiny(), torch.rand(1, 3, 13, 10)
    with torch.no_grad():
        padded = model(F.pad(x, (0, 2, 0, 3), mode="reflect"))
        assert torch.allclose(model(x), padded[..., :52, :40], atol=1e-6)


def test_batch_independence():
    model, x = tiny(), torch.rand(2, 3, 13, 10)
    with torch.no_grad():
        assert torch.allclose(model(x[:1]), model(x)[:1], atol=1e-5)


def test_state_dict_round_trip():
    source, target = tiny(seed=0), tiny(seed=1)
    target.load_state_dict(source.state_dict(), strict=True)
    x = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtypes(dtype):
    model, x = tiny(), torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        ref = model(x)
        out = model.to(dtype)(x.to(dtype))
    assert out.dtype == dtype
    tol = 1e-5 if dtype == torch.float64 else 0.1
    assert torch.allclose(out.float(), ref, atol=tol)


def test_overlapping_index_is_a_relative_position_code():
    """Pairs with the same (dy, dx) share a table row (after wrap-around); different ones never do."""
    ws, ows = 4, 6
    index = overlapping_relative_position_index(ws, ows) % (ws + ows - 1) ** 2
    q = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    k = torch.stack(torch.meshgrid(torch.arange(ows), torch.arange(ows), indexing="ij")).flatten(1)
    offsets = (k[:, None, :] - q[:, :, None]).permute(1, 2, 0).reshape(-1, 2)
    rows = {}
    for offset, row in zip(map(tuple, offsets.tolist()), index.flatten().tolist()):
        assert rows.setdefault(offset, row) == row
    assert len(set(rows.values())) == len(rows)


def test_unsupported_options():
    with pytest.raises(ValueError, match="upsampler"):
        HAT(**{**TINY, "upsampler": "pixelshuffledirect"})
    with pytest.raises(ValueError, match="resi_connection"):
        HAT(**{**TINY, "resi_connection": "3conv"})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model, x = tiny(), torch.rand(2, 3, 13, 10)
    # fp32 on both: cuDNN convolutions default to TF32 (a 10-bit mantissa), 1e-4 away on the H200 check of
    # 2026-12-04; matmuls are fp32 by default
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        ref = model(x)
        out = model.cuda()(x.cuda())
    assert torch.allclose(out.cpu(), ref, atol=1e-4)
