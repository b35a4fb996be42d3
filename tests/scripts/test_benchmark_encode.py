"""scripts/benchmark_encode.py: the photo it makes, and FLOPs that count the head once and the encoder per tile."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

import gaussian
from conftest import random_rgb, write_rgb
from inference import tiling

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_encode", ROOT / "scripts" / "benchmark_encode.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_photo_is_resized_and_cropped_to_the_size(tmp_path):
    source = write_rgb(tmp_path / "wide.png", random_rgb(50, 120))
    load_script().prepare_photo(source, tmp_path / "photo.png", (30, 40))
    with Image.open(tmp_path / "photo.png") as photo:
        assert (photo.height, photo.width, photo.mode) == (30, 40, "RGB")


def head_flops_per_cell(model: torch.nn.Module) -> int:
    """The head's multiply-adds per lattice cell, x2: conv1, both MLPs, the padded dictionary's logits and mixture."""
    def mlp_macs(mlp: torch.nn.Module) -> int:
        return sum(layer.in_features * layer.out_features for layer in mlp.layers if isinstance(layer, torch.nn.Linear))

    rows = -(-len(model.gau_dict) // gaussian.DICTIONARY_ROW_MULTIPLE) * gaussian.DICTIONARY_ROW_MULTIPLE
    conv = model.conv1.in_channels * model.conv1.out_channels * model.conv1.kernel_size[0] * model.conv1.kernel_size[1]
    mixture = model.conv1.out_channels * rows + rows * model.gau_dict.shape[1]
    return 2 * (conv + mlp_macs(model.mlp) + mlp_macs(model.mlp_offset) + mixture)


def encoder_flops(model: torch.nn.Module, size: tuple[int, int]) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.encoder(torch.rand(1, 3, *size))
    return counter.get_total_flops()


def test_flops_count_the_head_once_and_the_encoder_on_each_tiles_context(tiny_sr_model):
    """Untiled: the encoder, the dictionary's keys (once) and the head on every cell. Tiled: the same head work
    (only the cores' cells), and the encoder on each tile's context."""
    script = load_script()
    size, tile, overlap = (12, 16), 8, 3
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        tiny_sr_model.mlp_vector(tiny_sr_model.gau_dict)
    keys = counter.get_total_flops()
    cells = gaussian.LATTICE_FACTOR ** 2 * size[0] * size[1]
    untiled = script.count_flops(tiny_sr_model, size, None, overlap)
    assert untiled == encoder_flops(tiny_sr_model, size) + keys + cells * head_flops_per_cell(tiny_sr_model)
    tiles = tiling.plan_tiles(size, tile, overlap)
    contexts = sum(encoder_flops(tiny_sr_model, (t.context[2] - t.context[0], t.context[3] - t.context[1]))
                   for t in tiles)
    tiled = script.count_flops(tiny_sr_model, size, tile, overlap)
    assert tiled - untiled == contexts - encoder_flops(tiny_sr_model, size) + (len(tiles) - 1) * keys > 0


@pytest.mark.slow
def test_a_run_that_fails_in_its_child_is_the_childs_one_line_and_status(tmp_path):
    """A checkpoint that is not one fails in the measuring child: one line naming it, exit 2 (was two lines, 1)."""
    import subprocess
    import sys

    (tmp_path / "text.pth").write_text("not a checkpoint")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark_encode.py"), "--photo",
                           str(write_rgb(tmp_path / "p.png", random_rgb(12, 16))), "--size", "16x12", "--scales", "2",
                           "--matmul-seconds", "0.01", "--model", str(tmp_path / "text.pth"),
                           "--out", str(tmp_path / "r.json")], capture_output=True, text=True, cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "text.pth is not a readable checkpoint" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "text.pth"]
