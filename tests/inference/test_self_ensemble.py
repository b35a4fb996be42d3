"""Self-ensemble: the eight transforms form the dihedral group, and the mean over them is equivariant."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import smooth_image
from inference.self_ensemble import TRANSFORMS, SelfEnsemble


class BilinearModel(torch.nn.Module):
    """An upscaler that commutes with every flip and transpose: encode keeps the image, render is bilinear."""

    def encode(self, inp: torch.Tensor) -> torch.Tensor:
        return inp

    def render(self, lr: torch.Tensor, size: tuple[int, int], backend: str = "auto") -> torch.Tensor:
        return F.interpolate(lr, size=size, mode="bilinear", align_corners=False)


def test_the_transforms_are_the_eight_symmetries_of_the_grid_and_each_is_undone():
    image = torch.arange(12.0).view(1, 1, 3, 4)  # no symmetry of its own: eight transforms, eight images
    images = [t.apply(image) for t in TRANSFORMS]
    assert len({tuple(x.shape) + tuple(x.flatten().tolist()) for x in images}) == len(TRANSFORMS) == 8
    for t, x in zip(TRANSFORMS, images):
        assert tuple(x.shape[-2:]) == t.size((3, 4))
        assert torch.equal(t.invert(x), image)
    for t in TRANSFORMS:  # closed: a transform of a transform is one of the eight (what equivariance rests on)
        for u in TRANSFORMS:
            assert any(torch.equal(u.apply(t.apply(image)), x) for x in images)


def test_an_equivariant_model_is_unchanged():
    lr = smooth_image(7, 10)[None]
    model = BilinearModel()
    expected = model.render(lr, size=(15, 33))
    assert torch.allclose(SelfEnsemble(model).render(SelfEnsemble(model).encode(lr), size=(15, 33)), expected,
                          atol=1e-6)


def test_the_ensemble_of_a_transformed_image_is_the_transformed_ensemble(tiny_sr_model):
    """For the tiny model (random weights: far from equivariant), at anisotropic sizes, for every transform g:
    ensemble(g(lr)) at g's size == g(ensemble(lr)). A wrong inverse or a missing size swap breaks this."""
    ensemble = SelfEnsemble(tiny_sr_model)
    lr, size = smooth_image(7, 10)[None], (17, 30)  # x2.43 high, x3 wide
    with torch.no_grad():
        reference = ensemble.render(ensemble.encode(lr), size=size)
        plain = tiny_sr_model.render(tiny_sr_model.encode(lr), size=size)
        assert reference.shape == (1, 3, *size)
        assert (reference - plain).abs().max() > 1e-2  # the model is not equivariant: the test means something
        for g in TRANSFORMS:
            out = ensemble.render(ensemble.encode(g.apply(lr)), size=g.size(size))
            assert torch.allclose(out, g.apply(reference), atol=1e-5), g


def test_render_takes_a_scale_like_the_model(tiny_sr_model):
    ensemble = SelfEnsemble(tiny_sr_model)
    lr = smooth_image(6, 9)[None]
    with torch.no_grad():
        fields = ensemble.encode(lr).check_finite()
        by_scale = ensemble.render(fields, scale=(2.5, 3))
        assert torch.equal(by_scale, ensemble.render(fields, size=(15, 27)))


def test_a_given_encode_is_used_for_every_member(tiny_sr_model):
    seen = []

    def encode(lr: torch.Tensor):
        seen.append(tuple(lr.shape[-2:]))
        return tiny_sr_model.encode(lr)

    with torch.no_grad():
        SelfEnsemble(tiny_sr_model, encode).encode(smooth_image(5, 8)[None])
    assert sorted(seen) == sorted([(5, 8)] * 4 + [(8, 5)] * 4)
