"""scripts/prepare_photos.py's readers: Qt resource bundles (GCompris keeps its photographs in them) and the
README entries that credit each photograph."""
from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import prepare_photos  # noqa: E402


def qt_bundle(version: int, tree: list[tuple], payloads: list[bytes]) -> bytes:
    """A Qt resource bundle as Qt lays it out. tree: (name, flags, first child, child count) for directories,
    (name, flags, payload index) for files, index 0 the root; payloads are stored as given."""
    names, name_at = b"", {}
    for entry in tree[1:]:
        name_at[entry[0]] = len(names)
        encoded = entry[0].encode("utf-16-be")
        names += struct.pack(">HI", len(entry[0]), 0) + encoded
    data, data_at = b"", []
    for payload in payloads:
        data_at.append(len(data))
        data += struct.pack(">I", len(payload)) + payload
    entries = b""
    for index, entry in enumerate(tree):
        name_offset = name_at[entry[0]] if index else 0
        if entry[1] & prepare_photos.RCC_DIRECTORY:
            body = struct.pack(">IHII", name_offset, entry[1], entry[3], entry[2])
        else:
            body = struct.pack(">IHHHI", name_offset, entry[1], 0, 0, data_at[entry[2]])
        entries += body + (struct.pack(">Q", 0) if version >= 2 else b"")
    header_size = 20 if version < 3 else 24
    tree_at = header_size
    data_start = tree_at + len(entries)
    names_at = data_start + len(data)
    header = prepare_photos.RCC_MAGIC + struct.pack(">IIII", version, tree_at, data_start, names_at)
    header += struct.pack(">I", 0) if version >= 3 else b""
    return header + entries + data + names


@pytest.mark.parametrize("version", [1, 2, 3])
def test_qt_resources_are_read_with_their_paths(tmp_path, version):
    picture, notes = bytes(range(256)) * 4, b"Files: x.webp\n"
    compressed = struct.pack(">I", len(picture)) + zlib.compress(picture)
    directory, zlib_flag = prepare_photos.RCC_DIRECTORY, prepare_photos.RCC_ZLIB
    tree = [("", directory, 1, 2), ("images", directory, 3, 2), ("README", 0, 1),
            ("x.webp", zlib_flag, 0), ("y.txt", 0, 1)]
    bundle = tmp_path / "activity.rcc"
    bundle.write_bytes(qt_bundle(version, tree, [compressed, notes]))
    assert prepare_photos.read_qt_resources(bundle) == {"images/x.webp": picture, "images/y.txt": notes,
                                                        "README": notes}


def test_qt_resources_refuse_what_they_cannot_read(tmp_path):
    not_a_bundle = tmp_path / "image.png"
    not_a_bundle.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="not a Qt resource bundle"):
        prepare_photos.read_qt_resources(not_a_bundle)
    zstd = tmp_path / "zstd.rcc"
    zstd.write_bytes(qt_bundle(3, [("", prepare_photos.RCC_DIRECTORY, 1, 1), ("x.webp", prepare_photos.RCC_ZSTD, 0)],
                               [b"\x28\xb5\x2f\xfd"]))
    with pytest.raises(ValueError, match="zstd"):
        prepare_photos.read_qt_resources(zstd)


def test_readme_entries_credit_each_file():
    text = ("Copyright: Timothee Giet, 2018\nLicense: CC-BY-SA 4.0\nFiles:\nkey.svg\negypt/egypt.svg\n\n"
            "Copyright: Daniel Schwen\nLicense: CC-BY-SA 4.0\n"
            "Source: https://commons.wikimedia.org/wiki/File:Chichen_Itza_3.jpg\nFiles:\nwonders/chichenItza.webp\n\n"
            "Copyright: aussiegall\nSource: https://commons.wikimedia.org/wiki/File:Pollinationn.jpg\n"
            "License: CC-BY-2.0\nComments: cropping, sharpening\nFiles: bee.webp calf.webp\n")
    entries = prepare_photos.readme_entries(text)
    assert set(entries) == {"key.svg", "egypt/egypt.svg", "wonders/chichenItza.webp", "bee.webp", "calf.webp"}
    assert entries["wonders/chichenItza.webp"] == {
        "author": "Daniel Schwen", "licence": "CC-BY-SA 4.0",
        "source": "https://commons.wikimedia.org/wiki/File:Chichen_Itza_3.jpg"}
    assert entries["calf.webp"]["licence"] == "CC-BY-2.0" and entries["bee.webp"]["author"] == "aussiegall"
    assert entries["key.svg"]["source"] == ""


def test_new_sources_go_to_train_only():
    """The photographs added after the first model keep val and test as they were."""
    ids = ([f"gcompris/{activity}/{Path(name).stem}" for activity, (_, names) in
            prepare_photos.GCOMPRIS_PHOTOS.items() for name in names]
           + [f"tuxpaint/{Path(n).stem}" for n in prepare_photos.TUXPAINT_PHOTOS]
           + [f"lxqt/{Path(n).stem}" for n in prepare_photos.LXQT_PHOTOS])
    assert len(ids) == len(set(ids)) and {prepare_photos.split_of(i) for i in ids} == {"train"}


@pytest.mark.parametrize("where", ["file", "bundle"])
def test_photos_are_loaded_upright(tmp_path, where):
    """A photo shown 24x20 but stored 20x24 with EXIF orientation 6 (turned a quarter) loads as shown, from a file
    or from inside a resource bundle."""
    import io

    import numpy as np
    from PIL import Image

    shown = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[274] = 6  # EXIF orientation: stored turned a quarter anticlockwise
    buffer = io.BytesIO()
    Image.fromarray(np.rot90(shown, k=1).copy()).save(buffer, "PNG", exif=exif.tobytes())
    (tmp_path / "photo.png").write_bytes(buffer.getvalue())
    source = ({"package": "p", "path": str(tmp_path / "photo.png")} if where == "file"
              else {"package": "p", "path": "bundle.rcc:photo.png", "data": buffer.getvalue()})
    assert np.array_equal(np.asarray(prepare_photos.load(source)), shown)
