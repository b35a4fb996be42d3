"""scripts/pack_device_data.py: the pack holds every photo upright (its EXIF orientation applied, as every reader
of images here applies it) and its val split losslessly."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from scripts.pack_device_data import main

EXIF_ORIENTATION = 274  # the EXIF tag
TURNED_A_QUARTER = 6  # stored turned a quarter anticlockwise: shown rotated 90° clockwise


def test_photos_are_packed_as_shown(tmp_path, capsys):
    rng = np.random.default_rng(0)
    shown = {split: rng.integers(0, 256, (20, 24, 3), dtype=np.uint8) for split in ("train", "val")}
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = TURNED_A_QUARTER
    for split, pixels in shown.items():
        (tmp_path / "photos" / split).mkdir(parents=True)
        stored = np.rot90(pixels, k=1).copy()  # 24x20 on disk; turned back by the orientation
        Image.fromarray(stored).save(tmp_path / "photos" / split / "a.png", exif=exif.tobytes())
    assert main(["--photos", str(tmp_path / "photos"), "--out", str(tmp_path / "pack")]) == 0
    summary = json.loads((tmp_path / "pack" / "PACK.json").read_text())
    for split, records in summary["files"].items():
        with Image.open(tmp_path / "pack" / records[0]["file"]) as packed:
            assert packed.size == (24, 20)
            if split == "val":
                assert np.array_equal(np.asarray(packed.convert("RGB")), shown[split])
