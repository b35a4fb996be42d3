"""Hostile and clumsy inputs to every front end, one row each: what a user gives, and what the README promises back.

A command-line row is (front end, argv, exit status, text of the one line on stderr; None for a success). A
viewer row is (method, URL, headers, HTTP status, text of the JSON error). `{name}` in an argv or URL is one of the
`inputs` made once below (files, folders, checkpoints, configs). Every refusal must be one line on stderr (or one
JSON error), never a traceback, and must leave nothing in the output folder. A new class of input joins as a row.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import shlex
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import demo
import models
import train
import viewer
from conftest import reported_lines, smooth_image
from inference import pipeline, viewer_app
from inference.image_io import MAX_OUTPUT_PIXELS, encode_image, write_image
from rasterizer import check_backend
from test_test_cli import load_cli

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / "configs" / "test" / "test-set5-4.yaml"
TRAIN_CONFIG = ROOT / "configs" / "train" / "tiny.yaml"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
LONGEST_NAME = 255  # bytes in a file name on the usual POSIX file systems

CLI_CASES = [
    # outputs: never half-written, never refused when legal
    ("demo", "--input {good} --output {loop} --scale 2 --model {ckpt}", EXIT_USAGE, "a loop of symbolic links"),
    ("demo", "--input {good} --output {loop_folder}/sr.png --scale 2 --model {ckpt}", EXIT_USAGE,
     "a loop of symbolic links"),
    ("demo", "--input {good} --output {out}/{longest_name} --scale 2 --model {ckpt}", EXIT_OK, None),
    ("demo", "--input {good} --output {out}/{too_long_name} --scale 2 --model {ckpt}", EXIT_USAGE,
     "a name in the path is 256 bytes long"),
    ("demo", "--input {good} --output {out}/{too_deep}/sr.png --scale 2 --model {ckpt}", EXIT_USAGE,
     "bytes long, above the"),
    ("demo", "--input {out}/{too_deep}/lr.png --output {out}/sr.png --scale 2 --model {ckpt}", EXIT_USAGE,
     "bytes long, above the"),
    ("demo", "--input {loop} --output {out}/sr.png --scale 2 --model {ckpt}", EXIT_USAGE, "a loop of symbolic links"),
    ("demo", "--input {good} --output {out}/sr.jpg --size 65501x1 --model {ckpt}", EXIT_USAGE,
     "its sides are at most 65,500 pixels"),
    ("demo", "--input {good} --output {out}/sr.webp --scale 1,2000 --model {ckpt}", EXIT_USAGE,
     "its sides are at most 16,383 pixels"),
    ("demo", "--input {good} --output {out}/sr.webp --scale 600 --compare --model {ckpt}", EXIT_USAGE,
     "cannot be written as .webp"),
    ("demo", "--input {good} --output {out}/z.gif --zoom 1:2:3 --fps 0.001 --model {ckpt}", EXIT_USAGE,
     "frames per second"),
    ("demo", "--input {good} --output {out}/z.gif --zoom 1:2:3 --fps 1000 --model {ckpt}", EXIT_USAGE,
     "frames per second"),
    # non-finite results are errors, never a black image or a score
    ("test", "--config {nan_norm_config} --model {ckpt} --root {data} --workers 0 --device cpu", EXIT_USAGE,
     "data_norm.inp.div must be one finite number or three"),
    ("test", "--config {overflowing_norm_config} --model {ckpt} --root {data} --workers 0 --device cpu",
     EXIT_FAILURE, "non-finite values"),
    # training: checks that cost nothing however long the run
    ("train", "--config {train_config} --path {images} --out {out}/run --set epoch_max=1000000000000000 "
              "--set lr_scheduler.args.gamma=2", EXIT_USAGE, "the lr would be inf after epoch"),
    # configs: every key checked where it is trusted, before anything is built or written
    ("train", "--config {train_config} --path {images} --out {out}/run --set optimizer=null", EXIT_USAGE,
     "config needs optimizer as a spec with a 'name'"),
    ("train", "--config {train_config} --path {images} --out {out}/run --set optimizer=adam", EXIT_USAGE,
     "config needs optimizer as a spec with a 'name'"),
    ("train", "--config {train_config} --path {images} --out {out}/run --set lr_scheduler=3", EXIT_USAGE,
     "config needs lr_scheduler as a spec with a 'name'"),
    ("train", "--config {train_config} --path {images} --out {out}/run --set val_dataset.dataset=4", EXIT_USAGE,
     "config needs val_dataset.dataset as a spec with a 'name'"),
    ("train", "--config {train_config} --path {images} --out {out}/run --set model.args=3", EXIT_USAGE,
     "model.args must be a mapping"),
    ("train", "--config {train_config} --path {images} --out {out}/run --set seed=99999999999999999999", EXIT_USAGE,
     "seed must be at most 4294967295"),
    ("train", "--config {train_config} --path {images} --out {out}/run --set init_from=3", EXIT_USAGE,
     "init_from must be a checkpoint's path or null, got 3"),
    ("train", "--config {train_config} --path {images} --out {out}/run --set \"init_from=''\"", EXIT_USAGE,
     "init_from must be a checkpoint's path or null"),
    ("train", "--config {train_config} --path {images} --out {out}/run --set train_dataset.num_workers=100000",
     EXIT_USAGE, "train_dataset.num_workers 100000 is more than 8 per CPU"),
    ("train", "--config {int_keys_config} --path {images} --out {out}/run", EXIT_USAGE, "unknown config key(s) 1"),
    ("train", "--config {duplicate_keys_config} --path {images} --out {out}/run", EXIT_USAGE,
     "found the key 'epoch_max' twice"),
    ("train", "--config {deep_config} --path {images} --out {out}/run", EXIT_USAGE, "nested too deeply"),
    ("train", "--config {utf16_config} --path {images} --out {out}/run", EXIT_USAGE,
     "as a YAML config: 'utf-8' codec can't decode"),
    ("train", "--config {train_config} --path {images} --out {out}/{too_long_name}", EXIT_USAGE,
     "a name in the path is 256 bytes long"),
    ("train", "--config {train_config} --path {images} --out {loop_folder}/run", EXIT_USAGE,
     "a loop of symbolic links"),
    # model sizes: refused before anything is allocated, from a config or a checkpoint
    ("train", "--config {train_config} --path {images} --out {out}/run --set model.args.encoder_spec.args.n_feats=0",
     EXIT_USAGE, "gives 0-channel features"),
    ("train", "--config {train_config} --path {images} --out {out}/run --set "
              "'model.args.encoder_spec={{name: rdn, args: {{G0: 0, scale: 4}}}}'", EXIT_USAGE, "a size argument is 0"),
    ("train", "--config {train_config} --path {images} --out {out}/run --set "
              "'model.args.encoder_spec={{name: swinir, args: {{embed_dim: 0}}}}'", EXIT_USAGE,
     "cannot be built with these arguments: ZeroDivisionError"),
    ("train", "--config {train_config} --path {images} --out {out}/run --set model.args.encoder_spec.args.n_feats=-3",
     EXIT_USAGE, "cannot be built with these arguments"),
    ("train", "--config {train_config} --path {images} --out {out}/run "
              "--set model.args.encoder_spec.args.n_feats=100000000", EXIT_USAGE, "more than this machine's"),
    ("train", "--config {train_config} --path {images} --out {out}/run --set "
              "'model.args.encoder_spec={{name: swinir, args: {{embed_dim: 1000000}}}}'", EXIT_USAGE,
     "weights of more than this machine's"),
    ("train", "--config {train_config} --path {images} --out {out}/run --set "
              "'model.args.encoder_spec={{name: hat, args: {{embed_dim: 3000, depths: [1000000000], num_heads: [6]}}}}'",
     EXIT_USAGE, "weights of more than this machine's"),
    ("demo", "--input {good} --output {out}/sr.png --scale 2 --model {huge_ckpt}", EXIT_USAGE,
     "more than this machine's"),
    ("test", "--config {no_root_config} --model {ckpt} --root {data} --workers 0 --device cpu", EXIT_USAGE,
     "missing key 'root_path' in test_dataset.dataset.args"),
    ("test", "--config {list_name_config} --model {ckpt} --root {data} --workers 0 --device cpu", EXIT_USAGE,
     "unknown dataset ['image-folder'] in test_dataset.dataset"),
    ("test", "--config {test_config} --model {ckpt} --root {data} --save-dir {good}/sr --workers 0", EXIT_USAGE,
     "good.png is not a folder"),
    ("test", "--config {null_root_config} --model {ckpt} --root {data} --workers 0 --device cpu", EXIT_USAGE,
     "test_dataset.dataset.args.root_path must be a folder path, got None"),
    ("test", "--config {huge_repeat_config} --model {ckpt} --root {data} --workers 0 --device cpu", EXIT_USAGE,
     "repeat must be 1 at test time"),
    # empty values: never silently the current folder or the default
    ("demo", "--input {good} --output {out}/sr.png --scale 2 --model ''", EXIT_USAGE, "argument --model: expected a"),
    ("test", "--config {nan_norm_config} --model '' --root {data}", EXIT_USAGE, "argument --model: expected a"),
    ("test", "--config {nan_norm_config} --save-dir '' --root {data}", EXIT_USAGE, "argument --save-dir: expected"),
    ("train", "--config {train_config} --path {images} --out ''", EXIT_USAGE, "argument --out: expected a value"),
    ("viewer", "--model ''", EXIT_USAGE, "argument --model: expected a value"),
    ("viewer", "--max-upload-mb 1e308", EXIT_USAGE, "--max-upload-mb: expected a size in MiB"),
    ("viewer", "--max-cache-mb nan", EXIT_USAGE, "--max-cache-mb: expected a size in MiB"),
]
# Each needs a trained run's checkpoint to resume from: a few seconds of training first.
RESUME_CASES = [
    ("train", "--resume {resume_epoch_text}", EXIT_USAGE, "its training state is malformed: 'epoch' must be"),
    ("train", "--resume {resume_rng_junk}", EXIT_USAGE, "its training state is malformed: 'rng' must be"),
    ("train", "--resume {resume_optimizer_null}", EXIT_USAGE, "its training state is malformed: 'optimizer'"),
    ("train", "--resume {resume_scheduler_junk}", EXIT_USAGE, "malformed: 'lr_scheduler.last_epoch' must be"),
    ("train", "--resume {resume_step_huge}", EXIT_USAGE, "'step' must be a whole number from 0 to 2**63 - 1"),
    ("train", "--resume {resume_moment_shape}", EXIT_USAGE, "'optimizer.state[0].exp_avg' has shape [3]"),
    ("train", "--resume {resume_batch_beyond}", EXIT_USAGE, "it stopped after batch 1000000000 of an epoch"),
    ("train", "--resume {resume_epoch_beyond}", EXIT_USAGE, "stopped after epoch 2, beyond epoch_max 1: set"),
]
VIEW = "/api/images/{id}/view?method={method}&out_width=8&out_height=8&"
VIEWER_CASES = [
    ("GET", VIEW + "top=0&left=0&height=1e308&width=1e308", {}, 400, "outside x0.001 to x10000"),
    ("GET", VIEW + "top=0&left=0&height=5e-324&width=5e-324", {}, 400, "outside x0.001 to x10000"),
    ("GET", VIEW + "top=1e308&left=-1e308&height=4&width=4", {}, 400, "lies outside the 16x12 image"),
    ("GET", VIEW + "top=inf&left=0&height=4&width=4", {}, 400, "the window must be finite"),
    ("GET", VIEW + "top=0&left=0&height=4&width=4&out_width=0", {}, 400, "the view must be at least 1x1"),
    ("GET", "/api/images/{id}", {"Host": "rebound.example.com"}, 400, "is not this viewer's address"),
    ("GET", "/api/images/{id}", {"Host": "[::2]:8000"}, 400, "is not this viewer's address"),
    ("GET", "/api/images/{id}/full?scale=1e-320", {}, 413, "makes an empty output"),
    ("PUT", "/api/images", {}, 405, "Method Not Allowed"),
    ("GET", "/no/such/page", {}, 404, "Not Found"),
]


def _case_id(case) -> str:
    """A row's name: its front end (or HTTP method) and what is given."""
    head, given = case[0], case[1].removeprefix(VIEW)
    headers = " ".join(f"{k}: {v}" for k, v in case[2].items()) if isinstance(case[2], dict) else ""
    return " ".join(part for part in (head, given, headers) if part)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_checkpoint) -> dict[str, str]:
    """Every `{name}` of the tables, made once."""
    folder = tmp_path_factory.mktemp("hostile")
    write_image(folder / "good.png", smooth_image(12, 16))
    (folder / "loop.png").symlink_to("loop2.png")
    (folder / "loop2.png").symlink_to("loop.png")
    (folder / "loop_folder").symlink_to("loop_folder")
    data = folder / "load" / "benchmark" / "Set5" / "HR"
    for i in range(2):
        write_image(data / f"img{i}.png", smooth_image(24, 32, seed=i))
    images = folder / "images"
    for i in range(4):
        write_image(images / f"img{i}.png", smooth_image(24, 28, seed=i))
    made = {"good": folder / "good.png", "ckpt": tiny_checkpoint, "loop": folder / "loop.png",
            "loop_folder": folder / "loop_folder", "data": folder / "load", "images": images,
            "train_config": TRAIN_CONFIG, "test_config": TEST_CONFIG, "longest_name": "n" * (LONGEST_NAME - len(".png")) + ".png",
            "too_long_name": "n" * (LONGEST_NAME + 1 - len(".png")) + ".png", "too_deep": "/".join(["d"] * 3000)}
    for name, text in (("int_keys_config", "1: 2\n"), ("duplicate_keys_config", "epoch_max: 1\nepoch_max: 2\n"),
                       ("deep_config", "a: " + "[" * 10**4 + "]" * 10**4 + "\n")):
        made[name] = folder / f"{name}.yaml"
        made[name].write_text(TRAIN_CONFIG.read_text() + text)
    made["utf16_config"] = folder / "utf16_config.yaml"
    made["utf16_config"].write_text(TRAIN_CONFIG.read_text(), encoding="utf-16")
    config = yaml.safe_load(TEST_CONFIG.read_text())
    for name, div in (("nan_norm_config", math.nan), ("overflowing_norm_config", 1e-40)):
        changed = copy.deepcopy(config)
        changed["data_norm"]["inp"]["div"] = [div]  # 1e-40: the input times 1e40 overflows float32 in the encoder
        made[name] = folder / f"{name}.yaml"
        made[name].write_text(yaml.safe_dump(changed))
    for name, key, value in (("list_name_config", "name", ["image-folder"]),
                             ("null_root_config", "args", {"root_path": None}),
                             ("huge_repeat_config", "args", {"root_path": "benchmark/Set5/HR", "repeat": 10**12})):
        changed = copy.deepcopy(config)
        changed["test_dataset"]["dataset"][key] = value
        made[name] = folder / f"{name}.yaml"
        made[name].write_text(yaml.safe_dump(changed))
    no_root = copy.deepcopy(config)
    del no_root["test_dataset"]["dataset"]["args"]["root_path"]
    made["no_root_config"] = folder / "no_root_config.yaml"
    made["no_root_config"].write_text(yaml.safe_dump(no_root))
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["model"]["args"]["encoder_spec"]["args"]["n_feats"] = 10**8  # 3.6e17 bytes of weights in its first conv
    made["huge_ckpt"] = folder / "huge.pth"
    models.save_checkpoint(ckpt, made["huge_ckpt"])
    return {key: str(value) for key, value in made.items()}


def run_front_end(front_end: str, argv: list[str], capsys) -> tuple[int, list[str]]:
    """(exit status, the lines reported on stderr) of one front end run in this process."""
    main = {"demo": demo.main, "test": lambda a: load_cli().main(a), "train": train.main, "viewer": viewer.main}
    try:
        code = main[front_end](argv)
        code = EXIT_OK if front_end == "train" else code  # train.main returns its model, or exits
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return code, reported_lines(capsys.readouterr().err)


def check_row(case, inputs: dict[str, str], tmp_path: Path, capsys) -> None:
    front_end, command, status, message = case
    out = tmp_path / "out"
    argv = [part.format(out=out, **inputs) for part in shlex.split(command)]
    code, lines = run_front_end(front_end, argv, capsys)
    assert code == status, lines
    assert not any("Traceback" in line for line in lines), lines
    if message is None:
        assert out.exists() and any(out.iterdir())
    else:
        assert len(lines) == 1 and message in lines[0] and lines[0].startswith(f"{front_end}.py: error: "), lines
        assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()], list(out.rglob("*"))


@pytest.mark.parametrize("case", CLI_CASES, ids=_case_id)
def test_each_command_line_case_keeps_the_promise(case, inputs, tmp_path, capsys):
    check_row(case, inputs, tmp_path, capsys)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, inputs) -> dict[str, str]:
    """Checkpoints of a one-epoch run, each with one part of its training state broken."""
    out = tmp_path_factory.mktemp("trained") / "run"
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        train.main(["--config", inputs["train_config"], "--path", inputs["images"], "--out", str(out),
                    "--set", "epoch_max=1"])
    good = torch.load(out / "last.pth", weights_only=False)
    moments = {**good["optimizer"], "state": {0: {**good["optimizer"]["state"][0], "exp_avg": torch.zeros(3)}}}
    breaks = {"resume_epoch_text": ("epoch", "one"), "resume_rng_junk": ("rng", [1, 2, 3]),
              "resume_optimizer_null": ("optimizer", None), "resume_step_huge": ("step", 10**30),
              "resume_moment_shape": ("optimizer", moments), "resume_batch_beyond": ("batch_in_epoch", 10**9),
              "resume_epoch_beyond": ("epoch", 2)}
    made = {}
    for name, (key, value) in breaks.items():
        made[name] = out.parent / f"{name}.pth"
        models.save_checkpoint({**good, key: value}, made[name])
    made["resume_scheduler_junk"] = out.parent / "resume_scheduler_junk.pth"
    models.save_checkpoint({**good, "lr_scheduler": {**good["lr_scheduler"], "last_epoch": "x"}},
                           made["resume_scheduler_junk"])
    return {**inputs, **{k: str(v) for k, v in made.items()}}


@pytest.mark.slow
@pytest.mark.parametrize("case", RESUME_CASES, ids=_case_id)
def test_each_resume_case_keeps_the_promise(case, trained, tmp_path, capsys):
    check_row(case, trained, tmp_path, capsys)


@pytest.fixture(scope="module")
def client(tiny_sr_model):
    """A viewer guarded as `viewer.py` on a loopback address is, with one 16x12 image encoded."""
    from fastapi.testclient import TestClient

    device = torch.device("cpu")
    settings = pipeline.Settings(device, check_backend("auto", device), None, None, MAX_OUTPUT_PIXELS,
                                 progress=False)
    app = viewer_app.create_app(tiny_sr_model, settings, allowed_hosts=viewer.LOOPBACK_HOSTS)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        posted = client.post("/api/images", content=encode_image(smooth_image(12, 16)), headers={"X-Filename": "a"})
        entry_id = posted.json()["id"]
        while client.get(f"/api/images/{entry_id}").json()["state"] == viewer_app.ENCODING:
            time.sleep(0.05)
        yield client, entry_id


@pytest.mark.parametrize("method", [viewer_app.SR, viewer_app.BICUBIC])
@pytest.mark.parametrize("case", VIEWER_CASES, ids=_case_id)
def test_each_viewer_request_is_answered_with_one_line_of_json(case, method, client):
    verb, url, headers, status, message = case
    client, entry_id = client
    response = client.request(verb, url.format(id=entry_id, method=method), headers=headers)
    assert response.status_code == status and response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert message in error and "\n" not in error, error


def test_a_photo_stored_sideways_is_upscaled_upright(inputs, tmp_path, capsys):
    """A phone's photo shown 16x12 but stored 12x16 with EXIF orientation 6: the output is 32x24, as shown."""
    shown = (smooth_image(12, 16).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    exif = Image.Exif()
    exif[274] = 6  # stored turned a quarter anticlockwise: shown rotated 90° clockwise
    Image.fromarray(np.rot90(shown, k=1).copy()).save(tmp_path / "photo.jpg", exif=exif.tobytes(), quality=95)
    code, lines = run_front_end("demo", ["-q", "--input", str(tmp_path / "photo.jpg"), "--output",
                                         str(tmp_path / "sr.png"), "--scale", "2", "--model", inputs["ckpt"]], capsys)
    assert code == EXIT_OK, lines
    with Image.open(tmp_path / "sr.png") as sr:
        assert sr.size == (32, 24)
