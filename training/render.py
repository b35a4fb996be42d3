"""The training forward: encode and render as one module call, so that DistributedDataParallel wraps it."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from gaussian import GaussianField


class RenderAtTarget(nn.Module):
    """`model.render(model.encode(inp), size=size)` as one forward, so that DDP wraps a real forward call.

    With bf16 the encoder and head run under bf16 autocast on the input's device; the field is float32 before
    rasterizing.
    """

    def __init__(self, model: nn.Module, bf16: bool, backend: str):
        super().__init__()
        self.model, self.bf16, self.backend = model, bf16, backend

    def encode(self, inp: torch.Tensor) -> GaussianField:
        """The float32 field of `inp`, the encoder and head under bf16 autocast when configured (any device)."""
        return self.model.encode(inp, precision="bf16" if self.bf16 else "fp32").to(torch.float32)

    def render(self, field: GaussianField, size: Sequence[int]) -> torch.Tensor:
        return self.model.render(field, size=tuple(size), backend=self.backend)

    def forward(self, inp: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return self.render(self.encode(inp), size)
