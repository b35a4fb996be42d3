"""Image reading (modes, bit depths, broken files) and atomic writing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference.image_io import (IMAGE_SUFFIXES, ImageError, decode_image_with_alpha, encode_image, read_image,
                                read_image_with_alpha, write_image)

ROOT = Path(__file__).resolve().parents[2]
SHORT_BY = 100  # bytes a simulated full disk withholds from the end of a file


def test_rgb_round_trip_is_exact_for_8bit_values(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.shape == (3, 7, 9) and image.dtype == torch.float32
    assert torch.equal((image * 255).round().to(torch.uint8), torch.from_numpy(array).permute(2, 0, 1))
    write_image(tmp_path / "b.png", image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), array)


def test_grayscale_is_replicated(tmp_path):
    Image.fromarray(np.full((4, 5), 51, np.uint8), "L").save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.shape == (3, 4, 5) and torch.allclose(image, torch.full_like(image, 0.2))


def test_16bit_grayscale_uses_the_full_range(tmp_path):
    array = np.array([[0, 65535], [32768, 257]], np.uint16)
    Image.fromarray(array).save(tmp_path / "g16.png")
    image = read_image(tmp_path / "g16.png")
    assert torch.allclose(image[0], torch.from_numpy(array / 65535.0).float())


def test_alpha_is_separate(tmp_path):
    array = np.zeros((3, 4, 4), np.uint8)
    array[..., 0] = 255
    array[..., 3] = 128
    Image.fromarray(array, "RGBA").save(tmp_path / "a.png")
    rgb, alpha = read_image_with_alpha(tmp_path / "a.png")
    assert rgb.shape == (3, 3, 4) and torch.all(rgb[0] == 1) and torch.all(rgb[1:] == 0)
    assert torch.allclose(alpha, torch.full((1, 3, 4), 128 / 255))
    assert read_image(tmp_path / "a.png").shape == (3, 3, 4)


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (3, 2))
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.info["transparency"] = 1
    image.putpixel((0, 0), 1)
    image.save(tmp_path / "p.png", transparency=1)
    rgb, alpha = read_image_with_alpha(tmp_path / "p.png")
    assert alpha is not None and alpha[0, 0, 0] == 0 and alpha[0, 1, 1] == 1
    assert rgb[0, 1, 1] == 1


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif", ".webp"])
def test_every_format_reads_back(tmp_path, suffix):
    image = torch.rand(3, 16, 16)
    write_image(tmp_path / f"x{suffix}", image)
    assert read_image(tmp_path / f"x{suffix}").shape == (3, 16, 16)


def test_broken_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageError, match="not an image"):
        read_image(tmp_path / "text.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "f.png")
    data = (tmp_path / "f.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot read"):
        read_image(tmp_path / "t.png")


def test_write_failures_leave_no_file(tmp_path, monkeypatch):
    with pytest.raises(ImageError, match="unsupported output format"):
        write_image(tmp_path / "x.xyz", torch.rand(3, 2, 2))

    def failing_save(self, fp, format=None, **params):
        fp.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(ImageError, match="No space left"):
        write_image(tmp_path / "out.png", torch.rand(3, 2, 2))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix,alpha", [(".png", True), (".webp", True), (".jpg", False), (".tif", False)])
def test_bytes_in_and_out_are_the_files(tmp_path, suffix, alpha):
    """decode_image_with_alpha(bytes) reads as read_image_with_alpha(file); encode_image gives write_image's bytes."""
    g = torch.Generator().manual_seed(3)
    rgb, a = torch.rand(3, 9, 13, generator=g), torch.rand(1, 9, 13, generator=g) if alpha else None
    path = tmp_path / f"im{suffix}"
    write_image(path, rgb, a)
    data = path.read_bytes()
    assert encode_image(rgb, a, suffix) == data
    from_file, from_bytes = read_image_with_alpha(path), decode_image_with_alpha(data, "upload")
    assert torch.equal(from_file[0], from_bytes[0])
    assert (from_file[1] is None) == (from_bytes[1] is None) == (not alpha)
    if alpha:
        assert torch.equal(from_file[1], from_bytes[1])


def test_decoding_bytes_checks_the_size_first_and_names_the_upload():
    data = encode_image(torch.zeros(3, 10, 20))
    assert decode_image_with_alpha(data, "x", max_pixels=200)[0].shape == (3, 10, 20)
    with pytest.raises(ImageError, match=r"^big.png is 20x10 \(200 pixels\), above the limit of 199$"):
        decode_image_with_alpha(data, "big.png", max_pixels=199)
    with pytest.raises(ImageError, match="^not an image .*: junk.bin$"):
        decode_image_with_alpha(b"junk", "junk.bin")


def test_sizes_come_from_the_header_and_oversized_images_are_refused_before_decoding(tmp_path):
    import hostile
    from inference.image_io import MAX_INPUT_PIXELS, image_size

    assert image_size(hostile.png_header_only(tmp_path / "h.png", 30, 20)) == (20, 30)
    for path in (hostile.png_header_only(tmp_path / "bomb.png", 100_000, 100_000),
                 hostile.png_truncated(tmp_path / "trunc.png", 40_000, 40_000),
                 hostile.png_valid_bilevel(tmp_path / "huge.png", 20_000, 20_000)):
        for read in (image_size, read_image_with_alpha):
            with pytest.raises(ImageError, match="pixels"):
                read(path)
    assert 20_000 * 20_000 > MAX_INPUT_PIXELS


SHORT_WRITE_SCRIPT = """
import os, resource, signal, sys
import torch
from inference.image_io import ImageError, write_image

folder = sys.argv[1]
image = torch.rand(3, 120, 160, generator=torch.Generator().manual_seed(0))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write is cut short, then fails with EFBIG
for name, limit in zip(sys.argv[2::2], sys.argv[3::2]):
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), resource.RLIM_INFINITY))
    try:
        write_image(os.path.join(folder, name), image)
        print(name, "written")
    except ImageError as exc:
        print(name, "refused:", exc)
"""


def test_a_write_cut_short_by_a_full_disk_never_replaces_the_file(tmp_path):
    """A file-size limit just below each file's size cuts the encoder's last write short, as a full disk does:
    PIL's own writes ignore that (a truncated BMP, TIFF or JPEG was renamed into place); every format must fail
    and keep the old file."""
    image = torch.rand(3, 120, 160, generator=torch.Generator().manual_seed(0))
    names = [f"x{suffix}" for suffix in IMAGE_SUFFIXES]
    sizes = {}
    for name in names:
        write_image(tmp_path / name, image)
        sizes[name] = (tmp_path / name).stat().st_size
        (tmp_path / name).write_bytes(b"old")
    limits = [str(part) for name in names for part in (name, sizes[name] - SHORT_BY)]
    done = subprocess.run([sys.executable, "-c", SHORT_WRITE_SCRIPT, str(tmp_path), *limits],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted(f"{n} refused: cannot write {tmp_path / n}: File too large"
                                                      for n in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert all((tmp_path / n).read_bytes() == b"old" for n in names)


def _with_orientation(path: Path, array: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[274] = orientation
    Image.fromarray(array).save(path, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_image_viewers_do(tmp_path, suffix, orientation):
    """A photo stored sideways (a phone's 24x20 shown 20x24) is read and sized upright: the pixels PIL's own
    exif_transpose gives, for each of the eight orientations, and its header size says the same before decoding."""
    from PIL import ImageOps

    from inference.image_io import image_size

    array = np.random.default_rng(orientation).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    path = _with_orientation(tmp_path / f"photo{suffix}", array, orientation)
    with Image.open(path) as stored:
        stored.load()  # (exif_transpose of a TIFF not yet loaded turns it twice in recent PIL)
        expected = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"), dtype=np.float32) / 255
    rgb, _ = read_image_with_alpha(path)
    assert rgb.shape[1:] == expected.shape[:2] == image_size(path)
    assert torch.equal(rgb, torch.from_numpy(expected.transpose(2, 0, 1).copy()))
    assert torch.equal(decode_image_with_alpha(path.read_bytes(), "upload")[0], rgb)
    if orientation >= 5:
        assert image_size(path) == (24, 20)


def test_an_alpha_channel_turns_with_its_image(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (4, 6, 4), dtype=np.uint8)
    path = _with_orientation(tmp_path / "a.png", rgba, 6)  # stored turned: shown rotated 90° clockwise
    rgb, alpha = read_image_with_alpha(path)
    upright = np.rot90(rgba, k=-1)
    assert torch.equal(alpha[0], torch.from_numpy(upright[..., 3].astype(np.float32) / 255))
    assert torch.equal(rgb, torch.from_numpy(upright[..., :3].transpose(2, 0, 1).astype(np.float32) / 255))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_float_image_with_non_finite_pixels_is_refused_as_input(tmp_path, bad):
    """NaN or infinity in a float TIFF is the file's fault (a usage error), never a non-finite render later."""
    array = np.full((4, 5), 0.5, np.float32)
    array[1, 2] = bad
    Image.fromarray(array, "F").save(tmp_path / "f.tif")
    with pytest.raises(ImageError, match="holds 1 non-finite pixels"):
        read_image(tmp_path / "f.tif")


@pytest.mark.parametrize("suffix, side", [(".jpg", 65501), (".webp", 16384)])
def test_a_side_beyond_the_format_is_one_image_error_and_no_file(tmp_path, suffix, side):
    """JPEG and WebP store shorter sides than an output may have: an ImageError, never the encoder's ValueError or
    a half-written file."""
    with pytest.raises(ImageError, match=f"cannot be written as {suffix}"):
        write_image(tmp_path / f"wide{suffix}", torch.zeros(3, 1, side))
    assert list(tmp_path.iterdir()) == []
