"""Every spec of the official layout file builds a model with exactly its state-dict keys, shapes and size."""
from __future__ import annotations

import json

import pytest
import torch

import models
from conftest import REFERENCE_LAYOUT, state_dict_layout

ENTRIES = sorted(json.loads(REFERENCE_LAYOUT.read_text()))


@pytest.mark.parametrize("entry_name", ENTRIES)
def test_layout_matches_official(reference_layout, entry_name):
    entry = reference_layout[entry_name]
    model = models.make(entry["spec"])
    assert state_dict_layout(model) == entry["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == entry["num_params"]


@pytest.mark.parametrize("entry_name", ENTRIES)
def test_official_state_dict_loads_strictly(reference_layout, entry_name):
    """A state dict with exactly the official keys and shapes (random values) loads with strict=True."""
    entry = reference_layout[entry_name]
    state = {k: torch.randn(shape) if shape else torch.randn(()) for k, shape in entry["state_dict"].items()}
    models.make({**entry["spec"], "sd": state}, load_sd=True)
