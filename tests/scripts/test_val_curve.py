"""scripts/val_curve.py: the table and the flattening epoch from a run's TensorBoard scalars."""
from __future__ import annotations

import json

import pytest

from scripts.val_curve import flattening_epoch, main


@pytest.mark.parametrize("curve, flat", [
    ([(1, 27.0), (2, 28.0), (3, 28.5), (4, 28.52), (5, 28.51)], 3),  # +0.02 after epoch 3: flat from 3
    ([(1, 27.0), (2, 27.01), (3, 27.5)], 3),                         # a late jump moves it
    ([(1, 27.0), (2, 26.0), (3, 26.5)], 1),                          # never better than the first
    ([(1, 27.0)], None),
])
def test_flattening_epoch(curve, flat):
    assert flattening_epoch(curve, 0.05) == flat


def test_reads_a_runs_scalars(tmp_path, capsys):
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "run" / "tensorboard"))
    for epoch, (x2, x4) in enumerate([(30.0, 26.0), (31.0, 27.0), (31.02, 27.0)], start=1):
        writer.add_scalar("val/psnr_x2", x2, epoch)
        writer.add_scalar("val/psnr_x4", x4, epoch)
        writer.add_scalar("val/psnr", (x2 + x4) / 2, epoch)
    writer.close()
    assert main([str(tmp_path / "run"), "--json", str(tmp_path / "curve.json")]) == 0
    out = capsys.readouterr().out
    assert "| 2 | 29.00 | 31.00 | 27.00 | 29.00 |" in out and "flattens from epoch 2" in out
    saved = json.loads((tmp_path / "curve.json").read_text())
    assert [r["epoch"] for r in saved["rows"]] == [1, 2, 3] and saved["flattens_at"] == 2


def test_not_a_run_exits_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "not a train.py run folder" in capsys.readouterr().err
