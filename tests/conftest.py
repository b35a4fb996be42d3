"""Shared test fixtures: Gaussian fields shaped like the head's output, built from the design's formulas."""
from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

if not torch.cuda.is_available():
    # Lets the Triton backend's tests run its kernels on the CPU; must be set before triton is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from gaussian import make_dgp_dictionary

# The official code's state-dict layout for each named spec: keys, shapes and parameter counts (tests/data/).
REFERENCE_LAYOUT = Path(__file__).resolve().parent / "data" / "official_state_dict_layout.json"


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


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A (height, width, 3) uint8 image of uniform noise."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_rgb(path: Path, array: np.ndarray) -> Path:
    """Save an (H, W, 3) uint8 array (format from the suffix), creating folders as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


# HR test images (height, width) of the generated benchmark folder: sizes divisible by 4, and one that is not.
BENCHMARK_HR_SIZES = ((48, 48), (52, 44), (41, 58))


def smooth_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A (height, width, 3) uint8 image of smooth waves and an edge (more image-like than noise)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.stack((128 + 100 * np.sin(x / 5 + seed), 128 + 90 * np.cos(y / 7 - seed),
                      np.where(x + 2 * y > width, 200.0, 40.0)), -1)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


@pytest.fixture
def benchmark_root(tmp_path) -> Path:
    """A data root laid out as configs/test expect: benchmark/Set5/HR with three images, and their MATLAB-bicubic
    LR_bicubic/X2 and X4 (modcrop, then imresize), named like the benchmark packages (img0x4.png)."""
    from evaluation.imresize import imresize

    hr_dir = tmp_path / "load" / "benchmark" / "Set5" / "HR"
    for i, (height, width) in enumerate(BENCHMARK_HR_SIZES):
        hr = write_rgb(hr_dir / f"img{i}.png", smooth_rgb(height, width, seed=i))
        array = np.asarray(Image.open(hr))
        for scale in (2, 4):
            crop = array[:height - height % scale, :width - width % scale]
            lr = imresize(crop, size=(crop.shape[0] // scale, crop.shape[1] // scale))
            write_rgb(hr_dir.parent / "LR_bicubic" / f"X{scale}" / f"img{i}x{scale}.png", lr)
    return tmp_path / "load"


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


def screen_lines(stream: str) -> list[str]:
    """The non-empty lines a terminal shows of `stream`: progress bars redraw a line after a carriage return,
    so only the text after a line's last '\\r' remains on screen."""
    shown = (line.rsplit("\r", 1)[-1].strip() for line in stream.split("\n"))
    return [line for line in shown if line]


# A tqdm progress bar's time field: "[00:03<00:04, ..." or "[00:00, ?img/s]".
PROGRESS_BAR = re.compile(r"\[\d+:\d\d(?:<|,|\])")


def reported_lines(stream: str) -> list[str]:
    """`screen_lines` less progress bars: what a program reports (errors, warnings), which must be one line."""
    return [line for line in screen_lines(stream) if not PROGRESS_BAR.search(line)]


def default_sigint() -> None:
    """`preexec_fn` for a child that a test stops with SIGINT: a shell's background job (`cmd &`, e.g. CI started
    that way) begins with SIGINT ignored, the child would inherit that, and Python then never raises
    KeyboardInterrupt. The test is of the program's handling, not of how the suite was started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def viewer_settings(**changes):
    """The pipeline settings the viewer's tests serve with: the CPU, the torch rasterizer, untiled unless asked,
    1 Mpx downloads, no progress bars; `changes` replace fields."""
    from inference.pipeline import Settings

    values = dict(device=torch.device("cpu"), backend="torch", tile=None, overlap=None, max_pixels=1 << 20,
                  progress=False)
    values.update(changes)
    return Settings(**values)
