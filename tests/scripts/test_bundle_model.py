"""scripts/bundle_model.py: fp16 weights when lossless on the val split, the test split's table, the card,
clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import models
from conftest import smooth_image, smooth_rgb, write_rgb
from evaluation.data import build_dataset
from evaluation.loading import BICUBIC_MODEL, load_model
from evaluation.loop import evaluate
from evaluation.schema import validate_config
from scripts.bundle_model import split_config, main


@pytest.fixture
def heldout(tmp_path):
    """photos/test (two images) and photos/val (one), as scripts/prepare_photos.py lays them out."""
    folder = tmp_path / "photos" / "test"
    for i, size in enumerate(((48, 40), (36, 52))):
        write_rgb(folder / f"p{i}.png", smooth_rgb(*size, seed=i))
    write_rgb(folder.parent / "val" / "v0.png", smooth_rgb(40, 44, seed=5))
    (folder.parent / "MANIFEST.json").write_text(json.dumps([
        {"file": "test/p0.png", "split": "test", "package": "test", "id": "p0", "licence": "CC0"}]))
    return folder


@pytest.mark.slow
def test_bundles_weights_table_and_card(tiny_checkpoint, heldout, tmp_path, capsys):
    out = tmp_path / "weights" / "bundled.pth"
    assert main(["--checkpoint", str(tiny_checkpoint), "--test", str(heldout), "--out", str(out),
                 "--scales", "2,4", "--note", "trained in a test", "--device", "cpu"]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    stored = torch.load(out, weights_only=True)["model"]
    assert record["dtype"] == "fp16" and list(record["psnr_changes"]) == ["fp16"]
    assert record["psnr_changes"]["fp16"] < 0.01
    assert all(v.dtype == torch.float16 for v in stored["sd"].values() if v.is_floating_point())
    for scale in (2, 4):
        config = split_config(heldout, scale)
        protocol = validate_config(config)
        for row, model in (("model", models.model_from_checkpoint(tiny_checkpoint).eval()),
                           ("bicubic", load_model(BICUBIC_MODEL, torch.device("cpu")))):
            expected = evaluate(model, build_dataset(config), protocol, progress=False).mean("psnr", scale)
            assert record["psnr"][row][str(scale)] == pytest.approx(expected, abs=1e-9)
    card = (out.parent / "MODEL_CARD.md").read_text()
    assert "| bicubic |" in card and "| model |" in card and "trained in a test" in card and "CC0" in card
    assert " lr " in card
    bundled = models.model_from_checkpoint(out).eval()
    original = models.model_from_checkpoint(tiny_checkpoint).eval()
    inp = smooth_image(12, 10)[None]
    with torch.no_grad():
        assert np.allclose(bundled(inp, torch.tensor([[3.0, 3.0]])), original(inp, torch.tensor([[3.0, 3.0]])),
                           atol=1e-2)


def test_the_card_of_a_fine_tune_names_the_model_it_started_from(tmp_path):
    from scripts.bundle_model import model_card

    payload = {"name": "continuous-gaussian", "args": {"encoder_spec": {"name": "edsr-baseline"}},
               "sd": {"w": torch.zeros(3)}}
    table = {"model": {4.0: 30.0}, "bicubic": {4.0: 29.0}}
    config = {"optimizer": {"name": "adam", "args": {"lr": 3e-5}}, "init_from": "weights/old.pth"}
    card = model_card(payload, {"epoch": 3, "step": 741, "config": config}, table, "fp16", {"fp16": 0.0}, None, "",
                      tmp_path / "w.pth")
    assert "epochs 3, steps 741" in card and "- fine-tuned from weights/old.pth:" in card
    del config["init_from"]
    card = model_card(payload, {"epoch": 3, "step": 741, "config": config}, table, "fp16", {"fp16": 0.0}, None, "",
                      tmp_path / "w.pth")
    assert "fine-tuned" not in card and "| gain | +1.00 |" in card


def test_the_card_names_a_start_outside_the_repository_by_its_role(tmp_path):
    from scripts.bundle_model import init_source
    from utils import REPOSITORY as ROOT

    outside = tmp_path / "runs" / "epoch4-best.pth"
    assert init_source(str(outside)) == "a checkpoint kept outside the repository (epoch4-best.pth)"
    assert init_source("../runs/epoch4-best.pth") == "a checkpoint kept outside the repository (epoch4-best.pth)"
    assert init_source(str(ROOT / "weights" / "old.pth")) == "weights/old.pth"
    assert init_source("weights/../weights/old.pth") == "weights/old.pth"
    assert init_source(str(outside), "the fourth epoch of the previous run") == "the fourth epoch of the previous run"


def test_the_card_delimits_each_storage_it_tried(tmp_path):
    """A storage's name holds a comma ("fp16, encoder fp32"): the card quotes each name and separates the tries."""
    from scripts.bundle_model import STORAGES, model_card

    payload = {"name": "continuous-gaussian", "args": {"encoder_spec": {"name": "edsr-baseline"}},
               "sd": {"w": torch.zeros(3)}}
    (first, _), (second, _) = STORAGES
    card = model_card(payload, {"config": {}}, {"model": {4.0: 30.0}, "bicubic": {4.0: 29.0}}, second,
                      {first: 0.0129, second: 0.009}, None, "", tmp_path / "w.pth")
    assert f"stored in `{second}`;" in card and f"`{first}` 0.0129 dB; `{second}` 0.0090 dB)." in card


def test_bad_checkpoint_exits_2(heldout, tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"nope")
    assert main(["--checkpoint", str(bad), "--test", str(heldout), "--out", str(tmp_path / "w.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a readable checkpoint" in err[0]
    assert not (tmp_path / "w.pth").exists()


@pytest.mark.slow
def test_rescore_replaces_only_the_table(tiny_checkpoint, heldout, tmp_path, capsys):
    """--rescore: the weights file is untouched, the card keeps its training and data sections, an old held-out
    table is replaced by the test split's (with its photographs), and the JSON holds the new numbers."""
    weights = tmp_path / "weights" / "bundled.pth"
    weights.parent.mkdir()
    torch.save({"model": models.load_checkpoint(tiny_checkpoint)["model"]}, weights)
    before = weights.read_bytes()
    (weights.parent / "MODEL_CARD.md").write_text(
        "# bundled.pth\n\n## Training\n\n- trained long ago\n\n## Held-out photographs (never trained on)\n\n"
        "| | x4 |\n| --- | --- |\n| model | 99.00 |\n")
    weights.with_suffix(".json").write_text(json.dumps({"dtype": "fp16", "psnr_changes": {"fp16": 0.0001}}))
    assert main(["--rescore", str(weights), "--test", str(heldout), "--scales", "4", "--device", "cpu"]) == 0
    assert weights.read_bytes() == before
    card = (weights.parent / "MODEL_CARD.md").read_text()
    assert "- trained long ago" in card and "Held-out" not in card and "99.00" not in card
    assert card.count("## The test split") == 1 and "| test/p0.png | test: p0 | CC0 |" in card
    record = json.loads(weights.with_suffix(".json").read_text())
    config = split_config(heldout, 4)
    expected = evaluate(models.model_from_checkpoint(weights).eval(), build_dataset(config),
                        validate_config(config), progress=False).mean("psnr", 4)
    assert record["psnr"]["model"]["4"] == pytest.approx(expected, abs=1e-9)
    assert record["table_split"] == "test" and record["dtype"] == "fp16"
    assert record["psnr_changes"] == {"fp16": 0.0001}
    assert f"{record['psnr']['model']['4'] - record['psnr']['bicubic']['4']:+.2f}" in card


def test_checkpoint_needs_out(heldout, tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "x.pth"), "--test", str(heldout)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out is required" in err[0]


def _payload() -> dict:
    return {"name": "m", "args": {}, "sd": {"encoder.w": torch.full((4,), 1 / 3), "head.w": torch.full((4,), 1 / 3),
                                           "head.n": torch.tensor([7])}}


def _scorer(loss_per_fp16_weight: float):
    """A val score that falls by `loss_per_fp16_weight` dB for each fp16 weight, at scales 2 and 4."""
    def score(payload: dict) -> dict[float, float]:
        n = sum(v.numel() for v in payload["sd"].values() if v.dtype == torch.float16)
        return {2.0: 30.0 - loss_per_fp16_weight * n, 4.0: 28.0}
    return score


@pytest.mark.parametrize("loss, dtype, fp16_keys, tried", [
    (0.001, "fp16", {"encoder.w", "head.w"}, ["fp16"]),                         # 0.008 dB: all fp16
    (0.002, "fp16, encoder fp32", {"head.w"}, ["fp16", "fp16, encoder fp32"]),  # 0.016 dB, then 0.008
    (0.003, "fp32", set(), ["fp16", "fp16, encoder fp32"]),                      # 0.024, then 0.012: fp32
])
def test_storage_is_the_smallest_within_the_val_bound(loss, dtype, fp16_keys, tried):
    from scripts.bundle_model import choose_storage

    payload = _payload()
    name, stored, changes = choose_storage(payload, {2.0: 30.0, 4.0: 28.0}, _scorer(loss))
    assert name == dtype and list(changes) == tried
    assert {k for k, v in stored["sd"].items() if v.dtype == torch.float16} == fp16_keys
    assert stored["sd"]["head.n"].dtype == torch.int64
    assert changes["fp16"] == pytest.approx(8 * loss)
    for key, value in stored["sd"].items():  # fp32 where kept, fp16 rounding where not
        assert torch.equal(value.float(), payload["sd"][key].half().float() if key in fp16_keys
                           else payload["sd"][key].float())


def test_weights_stored_partly_in_fp16_load_as_fp32(tiny_checkpoint):
    from scripts.bundle_model import half_payload

    payload = models.load_checkpoint(tiny_checkpoint)["model"]
    mixed = half_payload(payload, ("encoder.",))
    dtypes = {k.startswith("encoder."): v.dtype for k, v in mixed["sd"].items() if v.is_floating_point()}
    assert dtypes == {True: torch.float32, False: torch.float16}
    loaded = models.model_from_checkpoint({"model": mixed}).eval()
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    original = models.model_from_checkpoint(tiny_checkpoint).eval()
    inp = smooth_image(12, 10)[None]
    with torch.no_grad():
        assert torch.allclose(loaded(inp, torch.tensor([[2.0, 2.0]])), original(inp, torch.tensor([[2.0, 2.0]])),
                              atol=1e-2)


def test_the_history_grows_by_one_row_when_the_bundled_model_is_fine_tuned(tmp_path):
    """A run whose init_from is the weights being replaced continues their history; any other run starts anew."""
    from scripts.bundle_model import history_row, history_section, previous_history, write_record

    out = tmp_path / "weights" / "bundled.pth"
    out.parent.mkdir()
    first = history_row({"step": 100, "best_psnr": 28.5, "config": {}}, 1, "one CPU, 1 h")
    write_record(out, {"model": {4.0: 30.0}, "bicubic": {4.0: 29.0}}, "fp16", None, [first])
    fine_tune = {"step": 50, "best_psnr": 28.75, "config": {"init_from": str(out)}}
    history = previous_history(out, fine_tune)
    history.append(history_row(fine_tune, len(history) + 1, "one GPU, 5 min"))
    assert [row["run"] for row in history] == [1, 2] and history[0]["start"] == "random weights"
    assert previous_history(out, {"config": {"init_from": str(tmp_path / "other.pth")}}) == []
    assert previous_history(out, {"config": {}}) == []
    rows = [line for line in history_section(history) if line.startswith("| 1 ") or line.startswith("| 2 ")]
    assert len(rows) == 2 and "| 100 |" in rows[0] and "| 28.50 |" in rows[0] and "| 28.75 |" in rows[1]
    assert "one GPU, 5 min" in rows[1]
