"""The plain multi-layer perceptron of the LIIF family (Linear/activation stack, `layers.N` names)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .registry import register

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


@register("mlp")
class MLP(nn.Module):
    """Linear layers with an activation between them; xavier-uniform weights and zero biases (as the official head)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_list: Sequence[int], act: str = "gelu"):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r} (known: {', '.join(ACTIVATIONS)})")
        layers: list[nn.Module] = []
        last = in_dim
        for hidden in hidden_list:
            layers += [nn.Linear(last, hidden), ACTIVATIONS[act]()]
            last = hidden
        layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim
        for m in self.layers:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
