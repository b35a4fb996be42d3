"""Pack the bundled model's train and val photographs small, to copy them to a remote GPU machine.

    python scripts/pack_device_data.py --photos data/photos --out data/device

The photographs as PNG are ~100 MB; packed, ~43 MiB. Train as JPEG at quality JPEG_QUALITY with full-resolution chroma
(4:4:4), ~40 % of the PNG size, each image within ~46 dB PSNR of its PNG (the pack's PACK.json lists every
file's PSNR; training pairs stay exact, since the LR is made from the decoded HR); val as lossless WebP, so that
validation there scores the very pixels it scores here. The test split is never packed: it is scored here only.
The pack is refused (exit 2, nothing written) if it exceeds --max-mib; it is written to a temporary folder and
renamed, so an interrupted pack leaves nothing half-written.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import entry_point  # noqa: E402  (the standard library only: its guard is up before the heavy imports)

if __name__ == "__main__":
    entry_point.starting("pack_device_data.py")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import cli  # noqa: E402
from evaluation import metrics  # noqa: E402
from inference.image_io import MAX_8BIT, is_image_file, read_image, to_uint8  # noqa: E402
from utils import EXIT_OK, UsageError  # noqa: E402

JPEG_QUALITY = 98
# The default bound on the pack (MiB): today's train and val splits take ~43 MiB.
DEFAULT_MAX_MIB = 46.0
PACK_NAME = "PACK.json"
SPLITS = {"train": "jpeg", "val": "webp-lossless"}


def encode(image: Image.Image, kind: str) -> tuple[bytes, str]:
    """The image's bytes in the pack's format for its split, and the file suffix."""
    buffer = io.BytesIO()
    if kind == "jpeg":
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0)
        return buffer.getvalue(), ".jpg"
    image.save(buffer, "WEBP", lossless=True, quality=100, method=6)
    return buffer.getvalue(), ".webp"


def psnr_8bit(a: np.ndarray, b: np.ndarray) -> float:
    """RGB PSNR (dB, evaluation.metrics.psnr) of two (H, W, 3) uint8 images; inf when they are identical."""
    as_unit = [torch.tensor(x).permute(2, 0, 1).double() / MAX_8BIT for x in (a, b)]
    return float(metrics.psnr(*as_unit))


def pack_split(source: Path, target: Path, kind: str) -> list[dict]:
    """Encode every image of `source` into `target`; one record per file (names, bytes, PSNR to the original)."""
    files = sorted(p for p in source.iterdir() if is_image_file(p))
    if not files:
        raise UsageError(f"no images in {source}")
    target.mkdir(parents=True)
    records = []
    for path in files:
        image = Image.fromarray(to_uint8(read_image(path)))  # upright: the EXIF orientation applied, as on reading
        data, suffix = encode(image, kind)
        packed = target / (path.stem + suffix)
        packed.write_bytes(data)
        with Image.open(io.BytesIO(data)) as decoded:
            psnr = psnr_8bit(np.asarray(image), np.asarray(decoded.convert("RGB")))
        records.append({"file": f"{target.name}/{packed.name}", "source": path.name, "bytes": len(data),
                        "psnr_db": None if math.isinf(psnr) else round(psnr, 2)})
    return records


def pack(photos: Path, out: Path, max_mib: float) -> dict:
    """Write the pack of `photos`/{train,val} to `out` (which must not exist); its summary."""
    if out.exists():
        raise UsageError(f"{out} exists: remove it first (a pack is written whole)")
    for split in SPLITS:
        if not (photos / split).is_dir():
            raise UsageError(f"{photos / split} is not a folder (make the splits with scripts/prepare_photos.py)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        records = {split: pack_split(photos / split, staging / split, kind) for split, kind in SPLITS.items()}
        total = sum(r["bytes"] for split in records.values() for r in split)
        if total > max_mib * 2 ** 20:
            raise UsageError(f"the pack would take {total / 2 ** 20:.1f} MiB, over --max-mib {max_mib:g}")
        lossy = [r["psnr_db"] for r in records["train"]]
        summary = {"photos": str(photos), "jpeg_quality": JPEG_QUALITY, "formats": SPLITS,
                   "total_mib": round(total / 2 ** 20, 2), "train_min_psnr_db": min(lossy),
                   "train_mean_psnr_db": round(sum(lossy) / len(lossy), 2), "files": records}
        (staging / PACK_NAME).write_text(json.dumps(summary, indent=1))
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = cli.OneLineParser(prog="pack_device_data.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default="data/photos", help="the splits of scripts/prepare_photos.py")
    parser.add_argument("--out", default="data/device", help="the pack's folder (must not exist)")
    parser.add_argument("--max-mib", type=float, default=DEFAULT_MAX_MIB, help="refuse a larger pack")
    args = cli.parse(parser, argv)
    return args if isinstance(args, int) else cli.run("pack_device_data.py", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    if not args.max_mib > 0:
        raise UsageError(f"--max-mib must be positive, got {args.max_mib:g}")
    summary = pack(Path(args.photos), Path(args.out), args.max_mib)
    counts = ", ".join(f"{len(v)} {k}" for k, v in summary["files"].items())
    print(f"wrote {args.out}: {counts}, {summary['total_mib']} MiB; train JPEG q{JPEG_QUALITY} within "
          f"{summary['train_min_psnr_db']} dB (mean {summary['train_mean_psnr_db']} dB) of the PNGs")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
