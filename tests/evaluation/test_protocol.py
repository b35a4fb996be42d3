"""evaluation/protocol.py: config checks, data roots, paired folder order, and scores held against an independent
computation (PIL LR, the official forward, numpy/scikit-image metrics) on a generated 3-image benchmark."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import models
import rasterizer
from conftest import BENCHMARK_HR_SIZES, write_rgb
from evaluation.imresize import imresize
from evaluation.metrics import EvalProtocol
from evaluation.protocol import (build_dataset, evaluate, format_report, item_names, load_config,
                                 load_model, parse_scales, resolve_data_paths, validate_config)
from utils import UsageError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "test"
BENCHMARKS = ("set5", "set14", "b100", "urban100", "manga109", "div2k")
ON_THE_FLY_SCALES = (2, 3, 4, 6, 8, 12, 16, 18, 24, 30)
PAIRED_SCALES = (2, 3, 4)


def shipped(name: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / name).read_text())


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint, torch.device("cpu"))


def prepared(name: str, root: Path, **overrides) -> tuple[dict, EvalProtocol, object]:
    config = shipped(name)
    config.update(overrides)
    config = resolve_data_paths(config, root)
    protocol = validate_config(config)
    return config, protocol, build_dataset(config)


def independent_scores(model, lr: np.ndarray, gt: np.ndarray, scale: float, kind: str, data_norm=None):
    """PSNR and SSIM of one image computed without evaluation/protocol.py or evaluation/metrics.py: the official
    forward signature, EDSR's luma weights written out, scikit-image for the rest."""
    sub_in, div_in, sub_gt, div_gt = 0.0, 1.0, 0.0, 1.0
    if data_norm:
        (sub_in,), (div_in,) = data_norm["inp"]["sub"], data_norm["inp"]["div"]
        (sub_gt,), (div_gt,) = data_norm["gt"]["sub"], data_norm["gt"]["div"]
    inp = torch.from_numpy(lr.transpose(2, 0, 1).copy())[None].float() / 255
    with torch.no_grad():
        out = model((inp - sub_in) / div_in, torch.tensor([[float(scale), float(scale)]])) * div_gt + sub_gt
    sr = out.clamp(0, 1)[0].permute(1, 2, 0).double().numpy()
    ref = gt.astype(np.float64) / 255
    assert sr.shape == ref.shape
    shave = math.ceil(scale) + (6 if kind == "div2k" else 0)
    inner = (slice(shave, -shave), slice(shave, -shave))
    if kind == "benchmark":
        diff = (sr - ref)[inner] @ np.array([65.738, 129.057, 25.064]) / 256
        psnr = -10 * math.log10(np.mean(diff ** 2))
    else:
        psnr = peak_signal_noise_ratio(ref[inner], sr[inner], data_range=1.0)
    ssim = structural_similarity(rgb2ycbcr(ref)[..., 0][inner], rgb2ycbcr(sr)[..., 0][inner], gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False, data_range=255)
    return psnr, ssim


def on_the_fly_pair(hr_path: Path, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR crop) as docs/DESIGN.md §7 says: h_lr = floor(h / s), HR cropped to h_lr·s, LR = PIL bicubic of it."""
    hr = np.asarray(Image.open(hr_path))
    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    crop = hr[:h * scale, :w * scale]
    return np.asarray(Image.fromarray(crop).resize((w, h), Image.Resampling.BICUBIC)), crop


# ---- configs -------------------------------------------------------------------------------------------------

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
    text = yaml.safe_dump(shipped("test-set5-4.yaml")) + "data_norm: {inp: {sub: [5e-1], div: [5e-1]}}\n"
    (tmp_path / "norm.yaml").write_text(text)
    assert load_config(tmp_path / "norm.yaml")["data_norm"]["inp"] == {"sub": [0.5], "div": [0.5]}


def test_data_root_resolution(tmp_path):
    config = shipped("test-set5-2-paired.yaml")
    assert resolve_data_paths(config)["test_dataset"]["dataset"]["args"]["root_path_2"] == str(
        Path("load/benchmark/Set5/HR"))
    with_root = resolve_data_paths({**config, "data_root": str(tmp_path / "a")})
    assert with_root["test_dataset"]["dataset"]["args"]["root_path_1"] == str(
        tmp_path / "a/benchmark/Set5/LR_bicubic/X2")
    overridden = resolve_data_paths({**config, "data_root": str(tmp_path / "a")}, tmp_path / "b")
    assert overridden["test_dataset"]["dataset"]["args"]["root_path_2"] == str(tmp_path / "b/benchmark/Set5/HR")
    absolute = copy.deepcopy(config)
    absolute["test_dataset"]["dataset"]["args"]["root_path_2"] = str(tmp_path / "abs")
    assert resolve_data_paths(absolute, tmp_path / "b")["test_dataset"]["dataset"]["args"]["root_path_2"] == str(
        tmp_path / "abs")
    assert config == shipped("test-set5-2-paired.yaml")  # the input is not modified


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        prepared("test-set5-4.yaml", tmp_path)
    (tmp_path / "benchmark" / "Set5" / "HR").mkdir(parents=True)
    (tmp_path / "benchmark" / "Set5" / "HR" / "readme.txt").write_text("no images")
    with pytest.raises(UsageError, match="no images"):
        prepared("test-set5-4.yaml", tmp_path)


def test_an_unreadable_image_is_an_error_not_a_skip(benchmark_root):
    (benchmark_root / "benchmark" / "Set5" / "HR" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(UsageError, match="broken.png"):
        prepared("test-set5-4.yaml", benchmark_root)


def test_paired_folders_work_in_either_order(benchmark_root):
    _, _, liif_order = prepared("test-set5-4-paired.yaml", benchmark_root)
    config = shipped("test-set5-4-paired.yaml")
    args = config["test_dataset"]["dataset"]["args"]
    args["root_path_1"], args["root_path_2"] = args["root_path_2"], args["root_path_1"]
    hr_first = build_dataset(resolve_data_paths(config, benchmark_root))
    assert len(liif_order) == len(hr_first) == 3
    for i in range(3):
        a, b = liif_order[i], hr_first[i]
        assert a["inp"].shape[-1] * 4 == a["gt"].shape[-1]
        assert torch.equal(a["inp"], b["inp"]) and torch.equal(a["gt"], b["gt"])
    assert item_names(liif_order) == ["img0", "img1", "img2"]


# ---- scores --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, data_norm", [
    ("test-set5-4.yaml", None),
    ("test-set5-2.yaml", {"inp": {"sub": [0.5], "div": [0.5]}, "gt": {"sub": [0.5], "div": [0.5]}}),
    ("test-div2k-2.yaml", None),
])
@pytest.mark.slow
def test_on_the_fly_scores_match_an_independent_computation(model, benchmark_root, name, data_norm):
    config = shipped(name)
    if data_norm:
        config["data_norm"] = data_norm
    config["test_dataset"]["dataset"]["args"]["root_path"] = "benchmark/Set5/HR"  # also for the DIV2K protocol
    config = resolve_data_paths(config, benchmark_root)
    protocol = validate_config(config)
    dataset = build_dataset(config)
    result = evaluate(model, dataset, protocol, data_norm=config.get("data_norm"), progress=False)
    scale = int(protocol.scale)
    assert result.names == ["img0", "img1", "img2"]
    for i in range(3):
        lr, gt = on_the_fly_pair(benchmark_root / "benchmark/Set5/HR" / f"img{i}.png", scale)
        psnr, ssim = independent_scores(model, lr, gt, scale, protocol.kind, data_norm)
        assert result.psnr[scale][i] == pytest.approx(psnr, abs=1e-5)
        assert result.ssim[scale][i] == pytest.approx(ssim, abs=1e-6)
    assert result.mean("psnr", scale) == pytest.approx(np.mean(result.psnr[scale]))
    assert len(result.encode_seconds) == 3 and all(t > 0 for t in result.encode_seconds)


def test_paired_scores_match_an_independent_computation(model, benchmark_root):
    _, protocol, dataset = prepared("test-set5-4-paired.yaml", benchmark_root)
    result = evaluate(model, dataset, protocol, progress=False)
    for i, (height, width) in enumerate(BENCHMARK_HR_SIZES):
        lr = np.asarray(Image.open(benchmark_root / "benchmark/Set5/LR_bicubic/X4" / f"img{i}x4.png"))
        gt = np.asarray(Image.open(benchmark_root / "benchmark/Set5/HR" / f"img{i}.png"))
        gt = gt[:lr.shape[0] * 4, :lr.shape[1] * 4]
        psnr, ssim = independent_scores(model, lr, gt, 4, "benchmark")
        assert result.psnr[4.0][i] == pytest.approx(psnr, abs=1e-5)
        assert result.ssim[4.0][i] == pytest.approx(ssim, abs=1e-6)


def test_a_paired_folder_at_another_scale_is_a_mismatch(model, benchmark_root):
    config = shipped("test-set5-4-paired.yaml")
    config["test_dataset"]["dataset"]["args"]["root_path_1"] = "benchmark/Set5/LR_bicubic/X2"
    config = resolve_data_paths(config, benchmark_root)
    protocol = validate_config(config)
    with pytest.raises(UsageError, match=r"img0: LR 24x24 → HR 48x48 is x2, but the config's eval_type is x4"):
        evaluate(model, build_dataset(config), protocol, progress=False)


class CountingModel(torch.nn.Module):
    """The model, counting encodes and renders."""

    def __init__(self, model):
        super().__init__()
        self.model, self.encodes, self.renders = model, 0, []

    def encode(self, inp):
        self.encodes += 1
        return self.model.encode(inp)

    def render(self, field, **kwargs):
        self.renders.append(kwargs.get("size"))
        return self.model.render(field, **kwargs)


@pytest.mark.slow
def test_scales_encode_once_and_render_every_scale(model, benchmark_root, tmp_path):
    _, protocol, dataset = prepared("test-set5-4.yaml", benchmark_root)
    counting = CountingModel(model)
    result = evaluate(counting, dataset, protocol, scales=[4, 2, 3, 2.5], save_dir=tmp_path / "sr", progress=False)
    assert result.scales == [2.0, 2.5, 3.0, 4.0]
    assert counting.encodes == 3 and len(counting.renders) == 3 * 4
    plain = evaluate(model, dataset, protocol, progress=False)
    assert result.psnr[4.0] == pytest.approx(plain.psnr[4.0], abs=1e-9)
    assert result.ssim[4.0] == pytest.approx(plain.ssim[4.0], abs=1e-12)
    for i in range(3):
        lr, gt = on_the_fly_pair(benchmark_root / "benchmark/Set5/HR" / f"img{i}.png", 4)
        for s in (2.0, 2.5, 3.0):
            size = (round(lr.shape[0] * s), round(lr.shape[1] * s))
            assert counting.renders[4 * i + [2.0, 2.5, 3.0].index(s)] == size
            assert np.asarray(Image.open(tmp_path / "sr" / f"x{s:g}" / f"img{i}.png")).shape[:2] == size
            ref = imresize(gt, size=size)  # the HR at the rendered size, MATLAB bicubic, 8-bit
            psnr, ssim = independent_scores(model, lr, ref, s, "benchmark")
            assert result.psnr[s][i] == pytest.approx(psnr, abs=1e-5)
            assert result.ssim[s][i] == pytest.approx(ssim, abs=1e-6)
    assert len(list((tmp_path / "sr" / "x4").glob("*.png"))) == 3
    report = format_report(result)
    assert "x2.5" in report and "result: PSNR" in report and report.count("img") == 3


def test_scales_above_the_data_scale_have_no_reference(model, benchmark_root):
    _, protocol, dataset = prepared("test-set5-2.yaml", benchmark_root)
    with pytest.raises(UsageError, match="x3 exceeds the data's x2"):
        evaluate(model, dataset, protocol, scales=[2, 3], progress=False)


@pytest.mark.parametrize("text, expected", [("2,3,4", [2.0, 3.0, 4.0]), ("4, 2.5,4", [2.5, 4.0])])
def test_parse_scales(text, expected):
    assert parse_scales(text) == expected


@pytest.mark.parametrize("text", ["", "a,2", "0", "-1,2", "inf"])
def test_parse_scales_rejects(text):
    with pytest.raises(UsageError):
        parse_scales(text)


def test_checkpoint_and_device_errors(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="not a readable checkpoint"):
        load_model(tmp_path / "bad.pth", torch.device("cpu"))
    spec = {"name": "mlp", "args": {"in_dim": 2, "out_dim": 2, "hidden_list": [4]}}
    models.save_checkpoint({"model": models.model_payload(spec, models.make(spec))}, tmp_path / "mlp.pth")
    with pytest.raises(UsageError, match=r"not a ContinuousSR model \(encode/render\)"):
        load_model(tmp_path / "mlp.pth", torch.device("cpu"))
    with pytest.raises(UsageError, match="unknown rasterizer backend"):
        rasterizer.check_backend("fast", torch.device("cpu"))


def test_window_encoders_need_no_padding_here(benchmark_root):
    """SwinIR pads to its window inside the encoder: odd-sized LR images give a field of exactly their size."""
    spec = {"name": "continuous-gaussian", "args": {"encoder_spec": {"name": "swinir", "args": {
        "upsampler": "pixelshuffle", "upscale": 4, "embed_dim": 12, "depths": [1], "num_heads": [2],
        "window_size": 8, "img_size": 16}}}}
    torch.manual_seed(0)
    swin = models.make(spec).eval()
    write_rgb(benchmark_root / "odd" / "a.png", np.asarray(Image.open(benchmark_root / "benchmark/Set5/HR/img2.png")))
    config = shipped("test-set5-4.yaml")
    config["test_dataset"]["dataset"]["args"]["root_path"] = str(benchmark_root / "odd")
    counting = CountingModel(swin)
    result = evaluate(counting, build_dataset(config), EvalProtocol("benchmark", 4), progress=False)
    lr, gt = on_the_fly_pair(benchmark_root / "odd" / "a.png", 4)
    assert lr.shape[:2] == (10, 14)  # not multiples of the window
    assert counting.renders == [gt.shape[:2]]
    assert result.psnr[4.0][0] == pytest.approx(independent_scores(swin, lr, gt, 4, "benchmark")[0], abs=1e-5)


def test_warmup_runs_once_untimed_and_unscored(model, benchmark_root):
    _, protocol, dataset = prepared("test-set5-4.yaml", benchmark_root)
    counting = CountingModel(model)
    warmed = evaluate(counting, dataset, protocol, warmup=True, progress=False)
    assert counting.encodes == 4 and len(counting.renders) == 4
    assert len(warmed.encode_seconds) == 3 and len(warmed.render_seconds[4.0]) == 3
    assert warmed.psnr == evaluate(model, dataset, protocol, warmup=False, progress=False).psnr


def test_bicubic_baseline_scores_matlab_bicubic_upscaling(benchmark_root):
    """`--model bicubic`: PSNR of the 8-bit MATLAB-bicubic upscale of each paired LR, by skimage on the luma."""
    _, protocol, dataset = prepared("test-set5-4-paired.yaml", benchmark_root)
    result = evaluate(load_model("bicubic", torch.device("cpu")), dataset, protocol, progress=False)
    for i in range(len(BENCHMARK_HR_SIZES)):
        lr = np.asarray(Image.open(benchmark_root / "benchmark/Set5/LR_bicubic/X4" / f"img{i}x4.png"))
        gt = np.asarray(Image.open(benchmark_root / "benchmark/Set5/HR" / f"img{i}.png"))
        gt = gt[:lr.shape[0] * 4, :lr.shape[1] * 4]
        up = imresize(lr, size=gt.shape[:2])
        assert up.dtype == np.uint8
        # the EDSR luma weights over 256 on [0, 1] images, shave 4: the benchmark protocol, computed with skimage
        luma = lambda a: (a.astype(np.float64) / 255) @ (np.array([65.738, 129.057, 25.064]) / 256)  # noqa: E731
        expected = peak_signal_noise_ratio(luma(gt)[4:-4, 4:-4], luma(up)[4:-4, 4:-4], data_range=1.0)
        assert result.psnr[4.0][i] == pytest.approx(expected, abs=1e-6)
