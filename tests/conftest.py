"""Shared test fixtures: Gaussian fields shaped like the head's output, built from the design's formulas."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gaussian import make_dgp_dictionary

# A copy of ../shared/reference/official_state_dict_layout.json, so that a clone alone runs every test.
REFERENCE_LAYOUT = Path(__file__).resolve().parent / "data" / "official_state_dict_layout.json"
SHARED_LAYOUT = Path(__file__).resolve().parents[2] / "shared" / "reference" / REFERENCE_LAYOUT.name


def lattice_field(batch: int, h: int, w: int, scale_h: float, scale_w: float, seed: int = 0,
                  sharpness: float = 3.0, dtype: torch.dtype = torch.float32):
    """(xy, cholesky, colour, H, W) for a random field on a 2h x 2w lattice rendered at (scale_h, scale_w).

    Covariances are softmax mixtures of the DGP dictionary, as the head makes them; `sharpness` scales the
    logits (higher → closer to single dictionary entries, i.e. more elongated Gaussians).
    """
    g = torch.Generator().manual_seed(seed)
    height, width = round(h * scale_h), round(w * scale_w)
    rows = torch.arange(2 * h, dtype=torch.float64).view(2 * h, 1)
    cols = torch.arange(2 * w, dtype=torch.float64).view(1, 2 * w)
    offset = torch.rand(batch, 2 * h, 2 * w, 2, generator=g, dtype=torch.float64) * 2 - 1
    x = cols / w - 1 + 2 * offset[..., 0] / w - 1 / width
    y = rows / h - 1 + 2 * offset[..., 1] / h - 1 / height
    dictionary = make_dgp_dictionary().double()
    logits = torch.randn(batch, 2 * h, 2 * w, dictionary.shape[0], generator=g, dtype=torch.float64) * sharpness
    l0 = torch.softmax(logits, -1) @ dictionary
    cholesky = l0 * torch.tensor([width / w, height / h, height / h], dtype=torch.float64) / 4
    colour = torch.rand(batch, 2 * h, 2 * w, 3, generator=g, dtype=torch.float64)
    return torch.stack((x, y), -1).to(dtype), cholesky.to(dtype), colour.to(dtype), height, width


@pytest.fixture(scope="session")
def reference_layout() -> dict:
    return json.loads(REFERENCE_LAYOUT.read_text())


def state_dict_layout(model: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


# The tiny model of the demo, tiling and zoom tests (encoders must give 64 channels at x4).
TINY_MODEL_SPEC = {"name": "continuous-gaussian", "args": {"encoder_spec": {
    "name": "edsr-baseline", "args": {"no_upsampling": False, "scale": 4, "n_resblocks": 1, "n_feats": 64}}}}
# A random head's colours are ~0.02, so its renders are nearly black; these make them spread over [0, 1]
# (the Gaussians' α sum to ~1.8 inside the image), so that comparing images, 8-bit ones included, means something.
TINY_COLOUR_GAIN = 15.0
TINY_COLOUR_BIAS = 0.28


def make_tiny_model(seed: int = 0) -> torch.nn.Module:
    """The tiny model with random weights and its colour layer rescaled (see TINY_COLOUR_GAIN), in eval mode."""
    import models

    torch.manual_seed(seed)
    model = models.make(TINY_MODEL_SPEC).eval()
    with torch.no_grad():
        model.mlp.layers[-1].weight.mul_(TINY_COLOUR_GAIN)
        model.mlp.layers[-1].bias.fill_(TINY_COLOUR_BIAS)
    return model


@pytest.fixture(scope="session")
def tiny_sr_model() -> torch.nn.Module:
    return make_tiny_model()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_sr_model) -> Path:
    """The tiny model saved as an official-format checkpoint."""
    import models

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    models.save_checkpoint({"model": models.model_payload(TINY_MODEL_SPEC, tiny_sr_model)}, path)
    return path


def smooth_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A (3, height, width) image in [0, 1] with gradients, rings and an edge (structure for an encoder)."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    rings = 0.5 + 0.5 * torch.cos(20 * ((x - 0.5) ** 2 + (y - 0.5) ** 2))
    image = torch.stack((x, rings, (x + y > 1).float() * 0.8 + 0.1))
    return (image + 0.05 * torch.rand(image.shape, generator=g)).clamp(0, 1)
