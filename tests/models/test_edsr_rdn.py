"""EDSR and RDN encoders: feature shapes with and without upsampling, the skipped RGB conv."""
from __future__ import annotations

import pytest
import torch

import models


@pytest.mark.parametrize("spec,channels,factor", [
    ({"name": "edsr-baseline", "args": {"n_resblocks": 2}}, 64, 1),
    ({"name": "edsr-baseline", "args": {"n_resblocks": 2, "no_upsampling": False, "scale": 4}}, 64, 4),
    ({"name": "edsr-baseline", "args": {"n_resblocks": 2, "no_upsampling": False, "scale": 3}}, 64, 3),
    ({"name": "edsr-large", "args": {"n_resblocks": 1, "n_feats": 32}}, 32, 1),
    ({"name": "rdn", "args": {"RDNconfig": "A", "no_upsampling": True}}, 64, 1),
    ({"name": "rdn", "args": {"RDNconfig": "B", "scale": 4}}, 64, 4),
    ({"name": "rdn", "args": {"RDNconfig": "B", "scale": 2}}, 64, 2),
])
def test_feature_shapes(spec, channels, factor):
    model = models.make(spec)
    with torch.no_grad():
        out = model(torch.rand(2, 3, 5, 7))
    assert out.shape == (2, channels, 5 * factor, 7 * factor)
    assert (model.out_dim, model.feature_scale) == (channels, factor)


def test_final_rgb_convs_are_kept_but_skipped():
    edsr = models.make({"name": "edsr-baseline", "args": {"n_resblocks": 1, "no_upsampling": False, "scale": 4}})
    rdn = models.make({"name": "rdn", "args": {"scale": 4}})
    inp = torch.rand(1, 3, 4, 4)
    with torch.no_grad():
        before = edsr(inp), rdn(inp)
        edsr.edsr.tail[1].weight.fill_(7)
        rdn.UPNet[-1].weight.fill_(7)
        after = edsr(inp), rdn(inp)
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_mean_shift_is_frozen():
    model = models.make({"name": "edsr-baseline", "args": {"n_resblocks": 1}})
    assert not model.edsr.sub_mean.weight.requires_grad
    assert torch.allclose(model.edsr.add_mean.bias, torch.tensor([0.4488, 0.4371, 0.4040]))


@pytest.mark.parametrize("spec", [{"name": "edsr-baseline", "args": {"no_upsampling": False, "scale": 5}},
                                  {"name": "rdn", "args": {"scale": 8}}, {"name": "rdn", "args": {"RDNconfig": "C"}}])
def test_unsupported_configurations_raise(spec):
    with pytest.raises(ValueError):
        models.make(spec)
