"""scripts/eval_all.py: the Markdown and JSON tables (benchmark × scale) on a generated 3-image benchmark."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evaluation.data import build_dataset, resolve_data_paths
from evaluation.loading import load_model
from evaluation.loop import evaluate
from evaluation.schema import load_config, validate_config
from scripts.eval_all import main, row_label

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "test"


@pytest.mark.parametrize("name, scale, label", [("test-set5-4.yaml", 4, "set5"),
                                                ("test-div2k-12.yaml", 12, "div2k"),
                                                ("test-urban100-2-paired.yaml", 2, "urban100-paired")])
def test_row_labels(name, scale, label):
    assert row_label(Path(name), scale) == label


@pytest.mark.slow
def test_tables_hold_the_evaluation_of_every_config(benchmark_root, tiny_checkpoint, tmp_path, capsys):
    names = ["test-set5-4.yaml", "test-set5-4-paired.yaml", "test-set5-2-paired.yaml"]
    out = tmp_path / "results" / "tiny"
    code = main([*(str(CONFIGS / n) for n in names), "--model", str(tiny_checkpoint), "--root", str(benchmark_root),
                 "--out", str(out), "--workers", "0", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    payload = json.loads(out.with_suffix(".json").read_text())
    records = {(r["benchmark"], r["scale"]): r for r in payload["results"]}
    assert set(records) == {("set5", 4.0), ("set5-paired", 4.0), ("set5-paired", 2.0)}
    model = load_model(tiny_checkpoint, torch.device("cpu"))
    for name in names:
        config = resolve_data_paths(load_config(CONFIGS / name), benchmark_root)
        protocol = validate_config(config)
        expected = evaluate(model, build_dataset(config), protocol, progress=False)
        record = next(r for r in payload["results"] if r["config"].endswith(name))
        assert record["images"] == 3 and record["eval_type"] == f"benchmark-{protocol.scale:g}"
        assert record["psnr"] == pytest.approx(expected.mean("psnr", protocol.scale), abs=1e-9)
        assert record["ssim"] == pytest.approx(expected.mean("ssim", protocol.scale), abs=1e-12)
        assert [img["name"] for img in record["per_image"]] == ["img0", "img1", "img2"]
        assert record["seconds_per_image"] > 0
    markdown = out.with_suffix(".md").read_text()
    assert "| benchmark | x2 | x4 |" in markdown
    for label in ("set5", "set5-paired"):
        cells = [f"{records[(label, s)]['psnr']:.2f} / {records[(label, s)]['ssim']:.4f}" if (label, s) in records
                 else "" for s in (2.0, 4.0)]
        assert f"| {label} | {cells[0]} | {cells[1]} |" in markdown
    assert markdown.count(f"| set5-paired | {records[('set5-paired', 2.0)]['seconds_per_image']:.3f} |") == 1


@pytest.mark.slow
def test_self_ensemble_is_scored_and_labelled(benchmark_root, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "ens"
    code = main([str(CONFIGS / "test-set5-4.yaml"), "--model", str(tiny_checkpoint), "--root", str(benchmark_root),
                 "--out", str(out), "--workers", "0", "--device", "cpu", "--self-ensemble"])
    assert code == 0, capsys.readouterr().err
    payload = json.loads(out.with_suffix(".json").read_text())
    config = resolve_data_paths(load_config(CONFIGS / "test-set5-4.yaml"), benchmark_root)
    protocol = validate_config(config)
    scores = {flag: evaluate(load_model(tiny_checkpoint, torch.device("cpu"), flag), build_dataset(config), protocol,
                             progress=False).mean("psnr", 4.0) for flag in (True, False)}
    assert payload["self_ensemble"] is True and abs(scores[True] - scores[False]) > 1e-3
    assert payload["results"][0]["psnr"] == pytest.approx(scores[True], abs=1e-9)
    assert "(self-ensemble" in out.with_suffix(".md").read_text().splitlines()[0]


def test_a_missing_folder_stops_before_any_work(benchmark_root, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "tiny"
    code = main([str(CONFIGS / "test-set5-4.yaml"), str(CONFIGS / "test-b100-4.yaml"), "--model",
                 str(tiny_checkpoint), "--root", str(benchmark_root), "--out", str(out), "--workers", "0"])
    captured = capsys.readouterr()
    assert code == 2 and "test-set5-4: PSNR" not in captured.out
    assert captured.err.strip().splitlines() == [
        f"eval_all.py: error: {CONFIGS / 'test-b100-4.yaml'}: image folder not found: "
        f"{benchmark_root / 'benchmark' / 'B100' / 'HR'}"]
    assert not out.with_suffix(".md").exists() and not out.with_suffix(".json").exists()


@pytest.mark.parametrize("case, message", [
    ("negative workers", "eval_all.py: error: --workers must be 0 or more, got -1"),
    ("out under a file", "eval_all.py: error: cannot write {out}.md: {config} is not a folder"),
    ("image too small", "eval_all.py: error: {config}: tiny: at x4 the 16x16 image less the 4-pixel shave is smaller "
                        "than SSIM's 11x11 window; it cannot be scored"),
])
def test_bad_input_stops_before_any_work_with_one_line(case, message, benchmark_root, tiny_checkpoint, tmp_path,
                                                       capsys):
    from conftest import smooth_rgb, write_rgb

    out, config = tmp_path / "tiny", CONFIGS / "test-set5-4.yaml"
    out = config / "tiny" if case == "out under a file" else out
    workers = "-1" if case == "negative workers" else "0"
    if case == "image too small":
        write_rgb(benchmark_root / "benchmark" / "Set5" / "HR" / "tiny.png", smooth_rgb(16, 16))
    code = main([str(config), "--model", str(tiny_checkpoint), "--root", str(benchmark_root), "--out", str(out),
                 "--workers", workers])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.strip().splitlines() == [message.format(config=config, out=out)]
    assert not out.with_suffix(".md").exists() and not out.with_suffix(".json").exists()
