"""The model a test scores: a checkpoint's ContinuousSR model, or the bicubic baseline (test.py --model bicubic),
optionally as a self-ensemble."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import models
from evaluation.imresize import imresize
from inference.image_io import MAX_8BIT, to_uint8
from inference.self_ensemble import SelfEnsemble
from utils import UsageError

# test.py --model bicubic scores the bicubic baseline.
BICUBIC_MODEL = "bicubic"


class BicubicBaseline(torch.nn.Module):
    """The 'Bicubic' row of SR tables, behind the encode/render interface `evaluate` uses: the 8-bit LR image
    upscaled with MATLAB-compatible bicubic (`imresize`) and kept 8-bit, as the literature computes it."""

    def encode(self, inp: torch.Tensor) -> torch.Tensor:
        return inp

    def render(self, lr: torch.Tensor, size: tuple[int, int], backend: str = "auto") -> torch.Tensor:
        upscaled = [imresize(to_uint8(image), size=size).transpose(2, 0, 1) for image in lr]
        return torch.from_numpy(np.stack(upscaled)).to(lr) / MAX_8BIT


def load_model(path: str | Path, device: torch.device, self_ensemble: bool = False,
               precision: str = "fp32") -> torch.nn.Module:
    """A checkpoint's model on `device`, in eval mode; it must produce a Gaussian field (encode/render).
    `path` = BICUBIC_MODEL gives the bicubic baseline instead. `self_ensemble` wraps it in SelfEnsemble (the
    mean over the eight flips and transposes of the input: test.py and eval_all.py --self-ensemble). The model
    encodes at `precision` (gaussian.PRECISIONS); the baseline has no arithmetic to choose."""
    if str(path) == BICUBIC_MODEL:
        model = BicubicBaseline()
    else:
        try:
            model = models.sr_model_from_checkpoint(path, device)
        except models.CheckpointError as exc:
            raise UsageError(str(exc)) from None
        model.precision = precision
    return SelfEnsemble(model) if self_ensemble else model
