"""demo.py end to end on small generated images with the tiny model, through main(argv) and as a program."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import demo
import gaussian
from conftest import reported_lines, smooth_image
from inference import pipeline, tiling
from inference.image_io import read_image, to_uint8, write_image
from inference.self_ensemble import SelfEnsemble

ROOT = Path(__file__).resolve().parents[1]
LR_H, LR_W = 12, 16
BT601_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights


@pytest.fixture
def lr_png(tmp_path) -> Path:
    path = tmp_path / "lr.png"
    write_image(path, smooth_image(LR_H, LR_W))
    return path


def run(capsys, *argv) -> tuple[int, str]:
    code = demo.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image).astype(np.int16)


def expected_sr(model, path: Path, size: tuple[int, int]) -> np.ndarray:
    """The library's own pipeline: read, encode, render at `size`, clamp, 8-bit."""
    with torch.no_grad():
        out = model.render(model.encode(read_image(path)[None]), size=size)[0]
    return to_uint8(out).astype(np.int16)


def test_scale_pairs_are_height_then_width_as_the_official_demo(capsys, tmp_path, lr_png, tiny_checkpoint,
                                                                  tiny_sr_model):
    """`--scale 4,2` (the official demo's form) makes the image 4x taller and 2x wider: the model's render at
    scale=(4, 2), i.e. (s_h, s_w)."""
    out = tmp_path / "sr.png"
    code, _ = run(capsys, "--input", lr_png, "--output", out, "--scale", "4,2", "--model", tiny_checkpoint)
    assert code == 0
    assert Image.open(out).size == (LR_W * 2, LR_H * 4)  # PIL sizes are (width, height)
    assert np.abs(pixels(out) - expected_sr(tiny_sr_model, lr_png, (LR_H * 4, LR_W * 2))).max() <= 1


def test_size_is_width_then_height(capsys, tmp_path, lr_png, tiny_checkpoint):
    out = tmp_path / "sr.png"
    assert run(capsys, "--input", lr_png, "--output", out, "--size", "40x30", "--model", tiny_checkpoint)[0] == 0
    assert Image.open(out).size == (40, 30)


def test_gpu_flag_without_cuda_is_one_line_and_device_cpu_overrides_it(capsys, tmp_path, lr_png, tiny_checkpoint):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "sr.png"
    code, err = run(capsys, "-q", "--input", lr_png, "--output", out, "--scale", "2", "--gpu", "0",
                    "--model", tiny_checkpoint)
    assert code == 2 and len(lines(err)) == 1 and "--gpu 0: CUDA is not available" in err and not out.exists()
    code, _ = run(capsys, "-q", "--input", lr_png, "--output", out, "--scale", "2", "--gpu", "0", "--device", "cpu",
                  "--model", tiny_checkpoint)
    assert code == 0 and out.exists()


def test_gpu_flag_means_cuda_device_n(capsys, tmp_path, lr_png, monkeypatch):
    """--gpu N reaches the run as cuda:N (checked with CUDA faked present; the run stops at the missing model)."""
    seen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(demo, "run_file", lambda args, settings: seen.append(settings.device) or 0)
    assert run(capsys, "-q", "--input", lr_png, "--output", tmp_path / "sr.png", "--scale", "2", "--gpu", "1",
               "--backend", "torch")[0] == 0
    assert seen == [torch.device("cuda", 1)]
    code, err = run(capsys, "-q", "--input", lr_png, "--output", tmp_path / "sr.png", "--scale", "2", "--gpu", "1",
                    "--device", "cuda:0")
    assert code == 2 and "different CUDA devices" in err


@pytest.mark.parametrize("scale,size", [("2.5", (30, 40)), ("3.5,2.25", (42, 36)), ("1.3", (16, 21))])
def test_output_is_the_model_render(capsys, tmp_path, lr_png, tiny_checkpoint, tiny_sr_model, scale, size):
    out = tmp_path / "sr.png"
    code, err = run(capsys, "--input", lr_png, "--output", out, "--scale", scale, "--model", tiny_checkpoint)
    assert code == 0 and f"wrote {out}" in err
    result = pixels(out)
    assert result.shape == (*size, 3)
    assert np.abs(result - expected_sr(tiny_sr_model, lr_png, size)).max() <= 1
    assert result.std() > 10  # the tiny model's renders have structure


def test_size_is_exact_width_by_height(capsys, tmp_path, lr_png, tiny_checkpoint):
    out = tmp_path / "sr.png"
    assert run(capsys, "--input", lr_png, "--output", out, "--size", "37x23", "--model", tiny_checkpoint)[0] == 0
    assert Image.open(out).size == (37, 23)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif", ".webp"])
def test_common_formats_in_and_out(capsys, tmp_path, tiny_checkpoint, suffix):
    source, out = tmp_path / f"lr{suffix}", tmp_path / f"sr{suffix}"
    write_image(source, smooth_image(LR_H, LR_W))
    assert run(capsys, "--input", source, "--output", out, "--scale", "2", "--model", tiny_checkpoint)[0] == 0
    assert Image.open(out).size == (2 * LR_W, 2 * LR_H)


@pytest.mark.slow
def test_grayscale_and_16bit_inputs_give_grayscale_outputs(capsys, tmp_path, tiny_checkpoint, tiny_sr_model):
    """8- and 16-bit gray files come back 8-bit gray: the BT.601 luma of the model's render (whose channels
    differ)."""
    gray = (smooth_image(LR_H, LR_W)[1].numpy() * 65535).round().astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    Image.fromarray((gray // 257).astype(np.uint8), "L").save(tmp_path / "g8.png")
    for name in ("g16.png", "g8.png"):
        out = tmp_path / f"sr_{name}"
        assert run(capsys, "--input", tmp_path / name, "--output", out, "--scale", "2",
                   "--model", tiny_checkpoint)[0] == 0
        rgb = expected_sr(tiny_sr_model, tmp_path / name, (2 * LR_H, 2 * LR_W)).astype(np.float64)
        assert np.ptp(rgb, axis=-1).max() > 1  # the render itself is not gray
        with Image.open(out) as image:
            assert image.mode == "L"
        assert np.abs(pixels(out) - rgb @ np.array(BT601_LUMA)).max() <= 1.5


def test_alpha_is_resized_apart_bicubic(capsys, tmp_path, tiny_checkpoint, tiny_sr_model):
    rgb = smooth_image(LR_H, LR_W)
    alpha = torch.linspace(0, 1, LR_W).expand(1, LR_H, LR_W).clone()
    alpha[:, :4] = 0
    source, out = tmp_path / "rgba.png", tmp_path / "sr.png"
    write_image(source, rgb, alpha)
    assert run(capsys, "--input", source, "--output", out, "--scale", "2.5", "--model", tiny_checkpoint)[0] == 0
    result = pixels(out)
    assert result.shape == (30, 40, 4)
    written_alpha = torch.from_numpy(pixels(source)[..., 3] / 255.0)
    expected_alpha = F.interpolate(written_alpha[None, None].float(), size=(30, 40), mode="bicubic",
                                   align_corners=False).clamp(0, 1)[0]
    assert np.abs(result[..., 3] - to_uint8(expected_alpha)[..., 0]).max() <= 1
    assert np.abs(result[..., :3] - expected_sr(tiny_sr_model, source, (30, 40))).max() <= 1


@pytest.mark.slow
def test_tiled_output_equals_untiled(capsys, tmp_path, lr_png, tiny_checkpoint):
    untiled, tiled = tmp_path / "untiled.png", tmp_path / "tiled.png"
    common = ["--input", lr_png, "--scale", "3", "--model", tiny_checkpoint]
    assert run(capsys, *common, "--output", untiled, "--tile", "0")[0] == 0
    code, err = run(capsys, *common, "--output", tiled, "--tile", "6")
    assert code == 0 and "in 6 tiles of 6 px" in err
    assert np.abs(pixels(tiled) - pixels(untiled)).max() <= 1


def test_automatic_tiles_when_memory_is_short(capsys, tmp_path, lr_png, tiny_checkpoint, monkeypatch):
    reference, out = tmp_path / "reference.png", tmp_path / "auto.png"
    common = ["--input", lr_png, "--scale", "2", "--model", tiny_checkpoint]
    assert run(capsys, *common, "--output", reference)[0] == 0
    monkeypatch.setattr(tiling, "free_memory", lambda device: 1 << 20)  # far too little: the smallest tiles
    monkeypatch.setattr(tiling, "MIN_AUTO_TILE", 6)
    code, err = run(capsys, *common, "--output", out)
    assert code == 0 and "in 6 tiles of 6 px" in err
    assert np.abs(pixels(out) - pixels(reference)).max() <= 1


def test_folder_skips_what_is_not_an_image(capsys, tmp_path, tiny_checkpoint):
    source, target = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    write_image(source / "a.png", smooth_image(LR_H, LR_W))
    write_image(source / "b.jpg", smooth_image(8, 10, seed=1))
    (source / "notes.txt").write_text("not an image")
    (source / "broken.png").write_bytes(b"\x89PNG but not really")
    code, err = run(capsys, "--input", source, "--output", target, "--scale", "2", "--model", tiny_checkpoint)
    assert code == 0
    assert sorted(p.name for p in target.iterdir()) == ["a.png", "b.jpg"]
    assert Image.open(target / "b.jpg").size == (20, 16)
    warnings = [line for line in err.splitlines() if line.startswith("warning: skipping")]
    assert len(warnings) == 2 and any("notes.txt" in w for w in warnings) and any("broken.png" in w for w in warnings)
    assert "wrote 2 of 3 images" in err


@pytest.mark.parametrize("case", ["no images", "no readable image", "output is input", "output is a file"])
def test_folder_errors(capsys, tmp_path, tiny_checkpoint, case):
    """A folder run that writes nothing reports one line, however many files it skipped on the way."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "notes.txt").write_text("x")
    if case == "no readable image":
        (source / "broken.png").write_bytes(b"\x89PNG but not really")
        (source / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    elif case != "no images":
        write_image(source / "a.png", smooth_image(LR_H, LR_W))
    target = {"no images": tmp_path / "out", "no readable image": tmp_path / "out", "output is input": source,
              "output is a file": source / "notes.txt"}
    code, err = run(capsys, "-q", "--input", source, "--output", target[case], "--scale", "2",
                    "--model", tiny_checkpoint)
    lines = reported_lines(err)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("demo.py: error:"), lines
    if case == "no readable image":
        assert "no image in" in lines[0] and "and 2 more" in lines[0]
    inputs = {"no images": ["notes.txt"], "no readable image": ["broken.png", "notes.txt", "truncated.png"]}
    assert sorted(p.name for p in source.iterdir()) == inputs.get(case, ["a.png", "notes.txt"])
    assert not (tmp_path / "out").exists()


def label_box(label: str, size: tuple[int, int]) -> tuple[slice, slice]:
    """The rows and columns that `label` covers on an image of `size`: where drawing it on black changes pixels."""
    drawn = pipeline.labelled(torch.zeros(1, *size), label, pipeline.COMPARE_SEPARATOR_VALUE)[0]
    rows, cols = torch.nonzero(drawn, as_tuple=True)
    return slice(0, int(rows.max()) + 1), slice(0, int(cols.max()) + 1)


def test_compare_is_labelled_bicubic_then_sr(capsys, tmp_path, lr_png, tiny_checkpoint, tiny_sr_model):
    out = tmp_path / "cmp.png"
    scale = 8  # halves wide enough for their labels
    assert run(capsys, "--input", lr_png, "--output", out, "--scale", scale, "--model", tiny_checkpoint,
               "--compare")[0] == 0
    result = pixels(out)
    height, width, sep = scale * LR_H, scale * LR_W, pipeline.COMPARE_SEPARATOR_PX
    assert result.shape == (height, 2 * width + sep, 3)
    lr = read_image(lr_png)
    bicubic = to_uint8(F.interpolate(lr[None], size=(height, width), mode="bicubic", align_corners=False)
                       .clamp(0, 1)[0]).astype(np.int16)
    sr = expected_sr(tiny_sr_model, lr_png, (height, width))
    for half, expected, label in ((result[:, :width], bicubic, "bicubic"),
                                  (result[:, width + sep:], sr, "ContinuousSR")):
        rows, cols = label_box(label, (height, width))
        labelled = np.zeros((height, width), bool)
        labelled[rows, cols] = True
        assert np.abs(half - expected)[~labelled].max() <= 1  # the image, outside its label
        box = half[rows, cols]
        assert (box == 255).all(-1).sum() > box[..., 0].size / 2 and box.max(-1).min() < 128  # dark text, white box
    assert (result[:, width:width + sep] == 255).all()


def test_a_gray_input_with_alpha_gives_a_gray_and_alpha_comparison(capsys, tmp_path, tiny_checkpoint):
    gray = to_uint8(smooth_image(LR_H, LR_W)[:1])[..., 0]
    source, out = tmp_path / "gray_alpha.png", tmp_path / "cmp.png"
    Image.fromarray(np.stack([gray, np.full((LR_H, LR_W), 200, np.uint8)], -1), "LA").save(source)
    assert run(capsys, "--input", source, "--output", out, "--scale", "2", "--model", tiny_checkpoint,
               "--compare")[0] == 0
    with Image.open(out) as image:
        assert image.mode == "LA" and image.size == (4 * LR_W + pipeline.COMPARE_SEPARATOR_PX, 2 * LR_H)


def test_self_ensemble_is_the_mean_over_the_eight_transforms(capsys, tmp_path, lr_png, tiny_checkpoint,
                                                             tiny_sr_model):
    """--self-ensemble writes the library's SelfEnsemble render, each member's field made in tiles (stitched
    fields equal the untiled ones for a convolutional encoder)."""
    out = tmp_path / "sr.png"
    assert run(capsys, "--input", lr_png, "--output", out, "--scale", "3,2", "--model", tiny_checkpoint,
               "--self-ensemble", "--tile", "8")[0] == 0
    ensemble = SelfEnsemble(tiny_sr_model)
    with torch.no_grad():
        expected = ensemble.render(ensemble.encode(read_image(lr_png)[None]), size=(3 * LR_H, 2 * LR_W))[0]
    assert np.abs(pixels(out) - to_uint8(expected).astype(np.int16)).max() <= 1
    assert np.abs(pixels(out) - expected_sr(tiny_sr_model, lr_png, (3 * LR_H, 2 * LR_W))).max() > 1


@pytest.mark.parametrize("name,extra,frames,size", [("z.gif", ["--zoom", "1:3:3"], 3, (LR_W, LR_H)),
                                                    ("z.mp4", ["--zoom", "2:4:2", "--focus", "0,12"], 2, (32, 24)),
                                                    ("z.gif", ["--zoom", "1:2:2", "--size", "21x9"], 2, (21, 9))])
def test_zoom_writes_every_frame(capsys, tmp_path, lr_png, tiny_checkpoint, name, extra, frames, size):
    if name.endswith(".mp4"):
        pytest.importorskip("imageio_ffmpeg")
    import imageio.v2 as imageio

    out = tmp_path / name
    code, err = run(capsys, "--input", lr_png, "--output", out, "--model", tiny_checkpoint, *extra)
    assert code == 0 and f"{frames} frames" in err
    with imageio.get_reader(out) as reader:
        video = list(reader.iter_data())
    assert len(video) == frames and all(frame.shape[:2] == size[::-1] for frame in video)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_zoom_first_frame_is_the_still_render(capsys, tmp_path, lr_png, tiny_checkpoint):
    """At its start level a frame shows the whole image: the still render at that scale (GIF: 256 colours)."""
    still, video = tmp_path / "still.png", tmp_path / "z.gif"
    common = ["--input", lr_png, "--model", tiny_checkpoint]
    assert run(capsys, *common, "--output", still, "--scale", "2")[0] == 0
    assert run(capsys, *common, "--output", video, "--zoom", "2:6:2")[0] == 0
    import imageio.v2 as imageio

    first = np.asarray(imageio.mimread(video)[0])[..., :3].astype(np.int16)
    assert np.abs(first - pixels(still)).mean() < 3


def lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


ERROR_CASES = {
    "missing input": (["--input", "{tmp}/nope.png", "--scale", "2"], "no such file"),
    "not an image": (["--input", "{tmp}/text.png", "--scale", "2"], "not an image"),
    "truncated": (["--input", "{tmp}/truncated.png", "--scale", "2"], "cannot read"),
    "scale zero": (["--input", "{lr}", "--scale", "0"], "positive"),
    "scale negative": (["--input", "{lr}", "--scale=-1"], "positive"),
    "scale nan": (["--input", "{lr}", "--scale", "nan"], "positive"),
    "scale inf": (["--input", "{lr}", "--scale", "2,inf"], "positive"),
    "scale text": (["--input", "{lr}", "--scale", "big"], "--scale"),
    "scale three": (["--input", "{lr}", "--scale", "1,2,3"], "--scale"),
    "size zero": (["--input", "{lr}", "--size", "0x5"], "--size"),
    "size one number": (["--input", "{lr}", "--size", "12"], "--size"),
    "size fraction": (["--input", "{lr}", "--size", "1.5x2"], "--size"),
    "scale absurd": (["--input", "{lr}", "--scale", "1e6"], "--max-pixels"),
    "max pixels": (["--input", "{lr}", "--scale", "4", "--max-pixels", "100"], "--max-pixels"),
    "size above max": (["--input", "{lr}", "--size", "20000x20000"], "--max-pixels"),
    "empty output": (["--input", "{lr}", "--scale", "0.01"], "empty"),
    "no target": (["--input", "{lr}"], "--scale"),
    "scale and size": (["--input", "{lr}", "--scale", "2", "--size", "4x4"], "not allowed"),
    "bad tile": (["--input", "{lr}", "--scale", "2", "--tile", "big"], "--tile"),
    "unknown backend": (["--input", "{lr}", "--scale", "2", "--backend", "nope"], "backend"),
    "unknown device": (["--input", "{lr}", "--scale", "2", "--device", "tpu"], "device"),
    "focus without zoom": (["--input", "{lr}", "--scale", "2", "--focus", "1,1"], "--zoom"),
    "zoom with scale": (["--input", "{lr}", "--zoom", "1:2:2", "--scale", "2"], "--size"),
    "zoom bad spec": (["--input", "{lr}", "--zoom", "1:2"], "START:END:FRAMES"),
    "zoom focus outside": (["--input", "{lr}", "--zoom", "1:2:2", "--focus", "99,1", "--output", "{tmp}/z.gif"],
                           "outside"),
    "zoom odd mp4": (["--input", "{lr}", "--zoom", "1:2:2", "--size", "15x9", "--output", "{tmp}/z.mp4"], "even"),
    "zoom image output": (["--input", "{lr}", "--zoom", "1:2:2"], ".mp4 or .gif"),
    "bad checkpoint": (["--input", "{lr}", "--scale", "2", "--model", "{tmp}/bad.pth"], "not a readable checkpoint"),
    "missing checkpoint": (["--input", "{lr}", "--scale", "2", "--model", "{tmp}/none.pth"], "not found"),
    "unwritable output": (["--input", "{lr}", "--scale", "2", "--output", "{tmp}/text.png/sr.png"], "cannot write"),
    "unknown output format": (["--input", "{lr}", "--scale", "2", "--output", "{tmp}/sr.xyz"], "format"),
    "output is input": (["--input", "{lr}", "--scale", "2", "--output", "{lr}"], "input"),
}


@pytest.fixture
def error_files(tmp_path, lr_png) -> dict[str, str]:
    (tmp_path / "text.png").write_text("hello")
    write_image(tmp_path / "full.png", smooth_image(LR_H, LR_W))
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[:len(data) // 2])
    (tmp_path / "bad.pth").write_bytes(b"\x00not a checkpoint" * 10)
    return {"tmp": str(tmp_path), "lr": str(lr_png)}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_are_one_line_exit_2_and_leave_no_file(capsys, tmp_path, error_files, tiny_checkpoint, case):
    argv, fragment = ERROR_CASES[case]
    argv = [a.format(**error_files) for a in argv]
    if "--output" not in argv:
        argv += ["--output", str(tmp_path / "sr.png")]
    if "--model" not in argv:
        argv += ["--model", str(tiny_checkpoint)]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = run(capsys, "-q", *argv)
    assert code == 2
    assert len(lines(err)) == 1 and lines(err)[0].startswith("demo.py: error:") and fragment in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_cuda_without_cuda_is_a_usage_error(capsys, tmp_path, lr_png, tiny_checkpoint):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, err = run(capsys, "-q", "--input", lr_png, "--output", tmp_path / "sr.png", "--scale", "2",
                    "--device", "cuda", "--model", tiny_checkpoint)
    assert code == 2 and len(lines(err)) == 1 and "CUDA is not available" in err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_output_matches_cpu(capsys, tmp_path, lr_png, tiny_checkpoint):
    outputs = {device: tmp_path / f"{device}.png" for device in ("cpu", "cuda")}
    for device, out in outputs.items():
        assert run(capsys, "-q", "--input", lr_png, "--output", out, "--scale", "2.5", "--device", device,
                   "--tile", "5", "--model", tiny_checkpoint)[0] == 0
    assert np.abs(pixels(outputs["cuda"]) - pixels(outputs["cpu"])).max() <= 1


def test_failure_keeps_an_existing_output(capsys, tmp_path, lr_png):
    out = tmp_path / "sr.png"
    out.write_bytes(b"previous result")
    (tmp_path / "bad.pth").write_bytes(b"junk")
    code, _ = run(capsys, "-q", "--input", lr_png, "--output", out, "--scale", "2", "--model", tmp_path / "bad.pth")
    assert code == 2 and out.read_bytes() == b"previous result"


def test_the_bundled_model_is_the_default(capsys, tmp_path, lr_png, tiny_checkpoint, monkeypatch):
    out = tmp_path / "sr.png"
    monkeypatch.setattr(pipeline, "DEFAULT_MODEL", Path("weights/not-there.pth"))
    code, err = run(capsys, "-q", "--input", lr_png, "--output", out, "--scale", "2")
    assert code == 2 and len(lines(err)) == 1 and "missing" in err and "--model" in err
    assert str(ROOT / "weights" / "not-there.pth") in err and not out.exists()
    monkeypatch.setattr(pipeline, "DEFAULT_MODEL", tiny_checkpoint)
    assert run(capsys, "-q", "--input", lr_png, "--output", out, "--scale", "2")[0] == 0 and out.exists()


def test_out_of_memory_is_one_line(capsys, tmp_path, lr_png, tiny_checkpoint, monkeypatch):
    def exhausted(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(pipeline, "encode", exhausted)
    out = tmp_path / "sr.png"
    code, err = run(capsys, "-q", "--input", lr_png, "--output", out, "--scale", "2", "--model", tiny_checkpoint)
    assert code == 1 and len(lines(err)) == 1 and "out of memory" in err and "--tile" in err and not out.exists()


def test_help_states_the_conventions(capsys):
    code = demo.main(["--help"])
    text = capsys.readouterr().out
    assert code == 0 and "height first" in text and "--scale SH,SW" in text and "--size WxH" in text
    assert "--gpu N" in text and "Exit status" in text
    assert "bundled model (weights/continuoussr-edsr-baseline.pth)" in " ".join(text.split())


@pytest.mark.slow
def test_as_a_program(tmp_path, lr_png, tiny_checkpoint):
    """The installed entry point: real process, exit codes, stderr."""
    out = tmp_path / "sr.png"
    ok = subprocess.run([sys.executable, "demo.py", "-q", "--input", lr_png, "--output", out, "--scale", "1.5",
                         "--model", tiny_checkpoint], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert Image.open(out).size == (24, 18)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(lr_png.read_bytes()[:60])
    bad = subprocess.run([sys.executable, "demo.py", "--input", truncated, "--output", tmp_path / "x.png",
                          "--scale", "2", "--model", tiny_checkpoint], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and len(lines(bad.stderr)) == 1 and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_precision_is_the_arithmetic_of_every_encode(capsys, tmp_path, lr_png, tiny_checkpoint, monkeypatch,
                                                     precision):
    """--precision reaches the model's encode (the default is fp32), and an unknown one is refused in one line."""
    used = []
    chosen = gaussian.encode_precision

    def recording(name, device):
        used.append(name)
        return chosen(name, device)

    monkeypatch.setattr(gaussian, "encode_precision", recording)
    out = tmp_path / "sr.png"
    argv = ["--input", lr_png, "--output", out, "--scale", "2", "--model", tiny_checkpoint]
    assert run(capsys, *argv, *(["--precision", precision] if precision != "fp32" else []))[0] == 0
    assert len(used) == 2 and used[1] == precision  # after the checkpoint's dry run at load, the image's encode
    code, err = run(capsys, *argv, "--precision", "fp16")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--precision" in err
