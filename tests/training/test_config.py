"""Training configs: defaults, spec replacement, `--set` overrides, checks, atomic saving."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from training.config import DEFAULTS, ConfigError, apply_overrides, complete, load_yaml, merge, save_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"
MINIMAL = {"train_dataset": {"dataset": {"name": "image-folder", "args": {"root_path": "x"}},
                             "wrapper": {"name": "sr-implicit-downsampled"}},
           "model": {"name": "continuous-gaussian"}}


def test_defaults_fill_what_a_config_leaves_out():
    cfg = complete(MINIMAL)
    assert cfg["optimizer"] == {"name": "adam", "args": {"lr": 1.0e-4}}
    assert cfg["lr_scheduler"] == {"name": "step_lr", "args": {"step_size": 100, "gamma": 0.5}}
    assert cfg["epoch_max"] == 1000 and cfg["train_dataset"]["batch_size"] == 16 and cfg["val_dataset"] is None
    assert set(cfg) == set(DEFAULTS)


def test_a_spec_replaces_the_default_spec_whole():
    cfg = complete({**MINIMAL, "lr_scheduler": {"name": "multi_step_lr", "args": {"milestones": [2]}}})
    assert cfg["lr_scheduler"] == {"name": "multi_step_lr", "args": {"milestones": [2]}}
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_set_parses_yaml_values_and_creates_keys():
    cfg = apply_overrides(MINIMAL, ["train_dataset.batch_size=8", "grad_clip=0.5", "bf16=true",
                                    "val_dataset.scales=[2, 3.5]", "model.args.encoder_spec.name=rdn",
                                    "optimizer.args.lr=1e-3",
                                    "train_dataset.dataset.args.root_path=\"a: b\""])
    assert cfg["train_dataset"]["batch_size"] == 8 and cfg["grad_clip"] == 0.5 and cfg["bf16"] is True
    assert cfg["optimizer"]["args"]["lr"] == 1e-3  # YAML 1.2 float, not the string PyYAML makes of it
    assert cfg["val_dataset"] == {"scales": [2, 3.5]} and cfg["model"]["args"]["encoder_spec"] == {"name": "rdn"}
    assert cfg["train_dataset"]["dataset"]["args"]["root_path"] == "a: b"
    assert MINIMAL["train_dataset"].get("batch_size") is None  # the input is not changed


@pytest.mark.parametrize("assignment, message", [("epoch_max", "key.sub=value"), ("model.name.x=1", "not a mapping"),
                                                 ("a..b=1", "bad config key")])
def test_bad_set_is_a_clear_error(assignment, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(MINIMAL, [assignment])


@pytest.mark.parametrize("change, message", [
    ({"epochs": 3}, "unknown config key"),
    ({"train_dataset": {"batchsize": 3}}, "unknown train_dataset key"),
    ({"model": None}, "config needs model"),
    ({"epoch_max": 0}, "epoch_max must be a positive integer"),
    ({"epoch_save": -1}, "epoch_save must be a non-negative"),
    ({"grad_clip": 0}, "grad_clip"),
    ({"warmup_steps": -1}, "warmup_steps must be a non-negative integer"),
    ({"warmup_steps": 1.5}, "warmup_steps must be a non-negative integer"),
    ({"ema_decay": 1}, "ema_decay must be a number in \\(0, 1\\)"),
    ({"ema_decay": 0}, "ema_decay"),
    ({"ema_decay": "0.999"}, "ema_decay"),
    ({"ema_decay": True}, "ema_decay"),
    ({"bf16": "yes"}, "bf16"),
    ({"val_dataset": {"scales": [4]}}, "val_dataset needs a dataset"),
    ({"val_dataset": {"dataset": {"name": "image-folder"}, "scales": []}}, "val_dataset.scales"),
    ({"val_dataset": {"dataset": {"name": "image-folder"}, "size": 3}}, "unknown val_dataset key"),
])
def test_bad_configs_are_clear_errors(change, message):
    with pytest.raises(ConfigError, match=message):
        complete(merge(MINIMAL, change) if "model" not in change else {**MINIMAL, **change})


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_are_complete(name):
    cfg = complete(load_yaml(CONFIGS / f"{name}.yaml"))
    assert cfg["model"]["args"]["encoder_spec"]["name"] in ("edsr-baseline", "swinir", "hat")


def test_paper_recipes_follow_the_design():
    for name in ("paper-swinir", "paper-hat"):
        cfg = complete(load_yaml(CONFIGS / f"{name}.yaml"))
        assert cfg["train_dataset"]["wrapper"]["args"] == {"inp_size": 256, "scale_min": 4, "scale_max": 8,
                                                          "augment": True}
        assert cfg["train_dataset"]["batch_size"] == 128 and cfg["epoch_max"] == 1000
        assert cfg["optimizer"] == {"name": "adam", "args": {"lr": 1.0e-4}}
        assert cfg["lr_scheduler"] == {"name": "step_lr", "args": {"step_size": 100, "gamma": 0.5}}


def test_load_errors_and_atomic_save(tmp_path):
    with pytest.raises(ConfigError, match="config not found"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(tmp_path / "list.yaml")
    cfg = complete(MINIMAL)
    save_config(cfg, tmp_path / "out" / "config.yaml")
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text()) == cfg
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["config.yaml"]
