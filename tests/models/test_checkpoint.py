"""Checkpoint I/O in the official format: round trip, weights-only loading, atomic saves, clear errors."""
from __future__ import annotations

import argparse

import pytest
import torch

import models
from models.state_dict import CheckpointError, load_state_dict_strict

SPEC = {"name": "continuous-gaussian", "args": {
    "encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": False, "scale": 4, "n_resblocks": 1}},
    "cnn_spec": None, "fc_spec": None}}


def test_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    model = models.make(SPEC).eval()
    path = tmp_path / "ckpt.pth"
    models.save_checkpoint({"model": models.model_payload(SPEC, model)}, path)
    loaded = models.model_from_checkpoint(path).eval()
    inp = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        assert torch.equal(model(inp, torch.tensor([[2.5, 3.0]])), loaded(inp, torch.tensor([[2.5, 3.0]])))


# fp16 keeps 11 significant bits: rounding to it moves a normal value by at most half a unit in the last place,
# 2^-11 of its magnitude; below fp16's smallest normal (2^-14) the step is the subnormal spacing 2^-24.
FP16_RELATIVE_ROUNDING = 2.0 ** -11
FP16_SUBNORMAL_STEP = 2.0 ** -24


def test_fp16_round_trip_loads_float32_values_within_fp16_rounding(tmp_path):
    """A checkpoint saved in fp16 (as the bundled weights are) loads into float32 parameters holding exactly the
    stored fp16 values, each within fp16 rounding of the original, and the model's output stays close."""
    torch.manual_seed(2)
    model = models.make(SPEC).eval()
    payload = models.model_payload(SPEC, model)
    payload["sd"] = {k: v.half() if v.is_floating_point() else v for k, v in payload["sd"].items()}
    path = tmp_path / "fp16.pth"
    models.save_checkpoint({"model": payload}, path)
    assert all(v.dtype == torch.float16 for v in models.load_checkpoint(path)["model"]["sd"].values()
               if v.is_floating_point())
    loaded = models.model_from_checkpoint(path).eval()
    original = model.state_dict()
    for name, value in loaded.state_dict().items():
        assert value.dtype == torch.float32, name
        assert torch.equal(value, payload["sd"][name].float()), name
        error = (value - original[name]).abs()
        bound = torch.maximum(original[name].abs() * FP16_RELATIVE_ROUNDING,
                              torch.full_like(error, FP16_SUBNORMAL_STEP / 2))
        assert bool((error <= bound).all()), name
    assert any(not torch.equal(loaded.state_dict()[k], v) for k, v in original.items())  # fp16 did round
    inp = torch.rand(1, 3, 6, 7)
    with torch.no_grad():
        expected, got = model(inp, torch.tensor([[3.0, 2.5]])), loaded(inp, torch.tensor([[3.0, 2.5]]))
    assert got.dtype == torch.float32
    assert (got - expected).abs().max() <= 1e-2 * expected.abs().max()


def test_official_layout_on_disk_loads(tmp_path):
    """What the official code writes: torch.save({'model': {'name', 'args', 'sd'}}) with extra entries."""
    model = models.make(SPEC)
    path = tmp_path / "official.pth"
    torch.save({"model": {**SPEC, "sd": model.state_dict()}, "epoch": 3}, path)
    ckpt = models.load_checkpoint(path)
    assert ckpt["epoch"] == 3
    models.model_from_checkpoint(ckpt)


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"name": "mlp", "args": {}, "sd": {}}, "hook": argparse.Namespace(cmd="rm")}, path)
    with pytest.raises(CheckpointError, match=r"holds a Python object \(argparse.Namespace\); checkpoints are loaded "
                                              "as data only"):
        models.load_checkpoint(path)


@pytest.mark.parametrize("data", [b"definitely not a checkpoint", b"junk", b"", b"PK\x03\x04" + bytes(30)])
def test_not_a_checkpoint(tmp_path, data):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(data)
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as info:
        models.load_checkpoint(garbage)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200 + len(str(garbage))
    plain = tmp_path / "plain.pth"
    torch.save({"weights": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="not a ContinuousSR checkpoint"):
        models.load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="not found"):
        models.load_checkpoint(tmp_path / "missing.pth")


def test_unknown_model_name(tmp_path):
    path = tmp_path / "unknown.pth"
    torch.save({"model": {"name": "liif", "args": {}, "sd": {}}}, path)
    with pytest.raises(CheckpointError, match="unknown model 'liif'"):
        models.model_from_checkpoint(path)


def test_mismatching_keys_are_named():
    model = models.make({"name": "mlp", "args": {"in_dim": 2, "out_dim": 2, "hidden_list": [3]}})
    state = dict(model.state_dict())
    state["extra.weight"] = state.pop("layers.0.weight")
    state["layers.2.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(model, state)
    message = str(info.value)
    assert "1 missing: layers.0.weight" in message
    assert "1 unexpected: extra.weight" in message
    assert "layers.2.bias (7,) vs (2,)" in message
    assert "\n" not in message


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    models.save_checkpoint({"model": {"name": "mlp", "args": {}, "sd": {}}, "epoch": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        models.save_checkpoint({"model": {"name": "mlp", "args": {}, "sd": {}}, "epoch": 2}, path)
    monkeypatch.undo()
    assert models.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


def test_a_dry_run_refuses_a_model_whose_parts_do_not_fit(tmp_path, tiny_checkpoint, monkeypatch):
    """sr_model_from_checkpoint encodes and renders a blank image: a model that cannot is a CheckpointError."""
    import gaussian

    def broken_encode(self, inp, precision=None):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (64x32 and 64x64)")
    monkeypatch.setattr(gaussian.ContinuousGaussian, "encode", broken_encode)
    with pytest.raises(models.CheckpointError, match="does not run .*shapes cannot be multiplied"):
        models.sr_model_from_checkpoint(tiny_checkpoint)


def test_non_finite_weights_are_refused_at_load(tmp_path, tiny_checkpoint):
    ckpt = models.load_checkpoint(tiny_checkpoint)
    key = next(k for k, v in ckpt["model"]["sd"].items() if v.is_floating_point())
    ckpt["model"]["sd"][key] = ckpt["model"]["sd"][key].clone()
    ckpt["model"]["sd"][key].view(-1)[0] = float("inf")
    bad = tmp_path / "inf.pth"
    models.save_checkpoint(ckpt, bad)
    with pytest.raises(models.CheckpointError, match=f"1 NaN or infinite values in {key}"):
        models.load_checkpoint(bad)
