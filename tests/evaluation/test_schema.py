"""evaluation/schema.py: the shipped test configs, config checks with the problem named, and --scales."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evaluation.schema import load_config, parse_scales, validate_config
from scoring_checks import CONFIG_DIR, shipped
from utils import UsageError

BENCHMARKS = ("set5", "set14", "b100", "urban100", "manga109", "div2k")
ON_THE_FLY_SCALES = (2, 3, 4, 6, 8, 12, 16, 18, 24, 30)
PAIRED_SCALES = (2, 3, 4)

def test_every_benchmark_and_scale_has_a_valid_config():
    for bench in BENCHMARKS:
        kind = "div2k" if bench == "div2k" else "benchmark"
        for scale in ON_THE_FLY_SCALES:
            config = load_config(CONFIG_DIR / f"test-{bench}-{scale}.yaml")
            assert config["eval_type"] == f"{kind}-{scale}"
            assert config["test_dataset"]["wrapper"]["name"] == "sr-implicit-downsampled"
        for scale in PAIRED_SCALES:
            config = load_config(CONFIG_DIR / f"test-{bench}-{scale}-paired.yaml")
            assert config["eval_type"] == f"{kind}-{scale}"
            args = config["test_dataset"]["dataset"]["args"]
            assert args["root_path_1"].endswith(f"X{scale}") and "HR" in args["root_path_2"]
    for path in CONFIG_DIR.glob("*.yaml"):
        args = load_config(path)["test_dataset"]["dataset"]["args"]
        assert all(not Path(v).is_absolute() for k, v in args.items() if k.startswith("root_path")), path
    assert len(list(CONFIG_DIR.glob("*.yaml"))) == len(BENCHMARKS) * (len(ON_THE_FLY_SCALES) + len(PAIRED_SCALES))


def _set(path: str, value):
    def change(config):
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[last] = value
    return change


@pytest.mark.parametrize("change, message", [
    (_set("eval_bsize", 30000), "unknown key 'eval_bsize' in the config"),
    (_set("test_dataset.sampler", "x"), "unknown key 'sampler' in test_dataset"),
    (_set("test_dataset.dataset.args.colour", True), "unknown key 'colour' in test_dataset.dataset.args"),
    (_set("test_dataset.wrapper.args.sample_q", 2304), "unknown key 'sample_q' in test_dataset.wrapper.args"),
    (_set("test_dataset.wrapper.args.inp_size", 48), "inp_size must be unset"),
    (_set("test_dataset.dataset.name", "image-foldr"), "unknown dataset 'image-foldr'"),
    (_set("test_dataset.batch_size", 4), "batch_size must be 1"),
    (_set("eval_type", "set5-4"), "unknown evaluation kind 'set5'"),
    (_set("eval_type", "benchmark"), "eval_type must look like"),
    (_set("eval_type", "benchmark-3"), "does not match eval_type benchmark-3"),
    (_set("data_norm.inp", {"sub": [0], "mul": [1]}), "unknown key 'mul' in data_norm.inp"),
    (_set("data_norm.gt", {"div": [0]}), "must not be 0"),
    (_set("data_root", ["load"]), "data_root must be a folder path"),
    (lambda config: config.pop("eval_type"), "missing key 'eval_type'"),
])
def test_bad_configs_name_the_problem(change, message):
    config = shipped("test-set5-4.yaml")
    change(config)
    with pytest.raises(UsageError, match=message):
        validate_config(config)


def test_load_config_errors(tmp_path):
    with pytest.raises(UsageError, match="config not found"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("test_dataset: [unclosed")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump({**shipped("test-set5-4.yaml"), "window": 8}))
    with pytest.raises(UsageError, match=r"extra\.yaml: unknown key 'window'"):
        load_config(tmp_path / "extra.yaml")


def test_load_config_reads_exponents_without_a_dot_as_numbers(tmp_path):
    """The one YAML loader (utils.load_yaml) reads `1e-1` as a float, where plain PyYAML reads a string that
    data_norm would refuse."""
    config = {k: v for k, v in shipped("test-set5-4.yaml").items() if k != "data_norm"}
    text = yaml.safe_dump(config) + "data_norm: {inp: {sub: [5e-1], div: [5e-1]}}\n"
    (tmp_path / "norm.yaml").write_text(text)
    assert load_config(tmp_path / "norm.yaml")["data_norm"]["inp"] == {"sub": [0.5], "div": [0.5]}


@pytest.mark.parametrize("text, expected", [("2,3,4", [2.0, 3.0, 4.0]), ("4, 2.5,4", [2.5, 4.0])])
def test_parse_scales(text, expected):
    assert parse_scales(text) == expected


@pytest.mark.parametrize("text", ["", "a,2", "0", "-1,2", "inf"])
def test_parse_scales_rejects(text):
    with pytest.raises(UsageError):
        parse_scales(text)
