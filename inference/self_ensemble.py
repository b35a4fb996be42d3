"""Geometric self-ensemble (the "+" models of EDSR, Lim et al. 2017, §4.4): the mean of the model's outputs over
the eight flips and transposes of the input, each mapped back.

Each transformed LR image is encoded (eight encodes: eight times the model's cost) and rendered at the
transformed output size: a transpose swaps (H, W), so an anisotropic scale (s_h, s_w) is rendered as (s_w, s_h)
and every output pixel samples the same LR position as without the transform. The eight renders are mapped
back and averaged. The mean is equivariant by construction: the ensemble of a flipped input is the flipped
ensemble, and a model that is already equivariant is left unchanged.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch

from gaussian import output_size


class Transform(NamedTuple):
    """A symmetry of the pixel grid: optional transpose (applied first), then optional flips of rows / columns."""

    transpose: bool
    flip_rows: bool
    flip_cols: bool

    def _flip(self, image: torch.Tensor) -> torch.Tensor:
        """The flips alone (each is its own inverse)."""
        dims = [d for d, flip in ((-2, self.flip_rows), (-1, self.flip_cols)) if flip]
        return image.flip(dims) if dims else image

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """(…, h, w) → the transformed (…, h, w), or (…, w, h) with a transpose."""
        return self._flip(image.transpose(-2, -1) if self.transpose else image)

    def invert(self, image: torch.Tensor) -> torch.Tensor:
        """The inverse of `apply`: flips first, then the transpose."""
        image = self._flip(image)
        return image.transpose(-2, -1) if self.transpose else image

    def size(self, size: tuple[int, int]) -> tuple[int, int]:
        """An (H, W) size after the transform."""
        return (size[1], size[0]) if self.transpose else size


# The dihedral group of the square: the identity first.
TRANSFORMS = tuple(Transform(*bits) for bits in itertools.product((False, True), repeat=3))
# The --self-ensemble option's help, shared by test.py, scripts/eval_all.py and demo.py.
OPTION_HELP = (f"average the outputs over the {len(TRANSFORMS)} flips and transposes of the input "
               f"({len(TRANSFORMS)}x the time)")


@dataclass
class EnsembleField:
    """One field per transform, each encoded from the transformed image (`fields[i]` belongs to TRANSFORMS[i])."""

    fields: list[Any]
    lr_size: tuple[int, int]

    def check_finite(self) -> "EnsembleField":
        """The ensemble itself, or utils.NonFiniteError if any member field is not finite."""
        for member in self.fields:
            member.check_finite()
        return self


class SelfEnsemble(torch.nn.Module):
    """A model with the encode/render interface, averaged over TRANSFORMS.

    `encode` (default: the model's) turns an LR batch (B, C, h, w) into whatever the model's `render` takes, e.g.
    demo.py's tiled encode. `render` accepts `size` (H, W) or `scale` like the model's and returns (B, C, H, W).
    """

    def __init__(self, model: torch.nn.Module, encode: Callable[[torch.Tensor], Any] | None = None):
        super().__init__()
        self.model = model
        self._encode = encode if encode is not None else model.encode

    def encode(self, inp: torch.Tensor) -> EnsembleField:
        """(B, C, h, w) → the fields of the eight transformed images."""
        return EnsembleField([self._encode(t.apply(inp)) for t in TRANSFORMS], tuple(inp.shape[-2:]))

    def render(self, ensemble: EnsembleField, scale=None, size: tuple[int, int] | None = None,
               backend: str = "auto") -> torch.Tensor:
        """The mean of the members' renders at the (transformed) output size, each mapped back."""
        size = output_size(ensemble.lr_size, scale, size)
        renders = (t.invert(self.model.render(member, size=t.size(size), backend=backend))
                   for t, member in zip(TRANSFORMS, ensemble.fields))
        return sum(renders) / len(TRANSFORMS)
