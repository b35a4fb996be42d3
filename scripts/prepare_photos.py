"""Build the HR photo folders for the bundled model, reproducibly, from packages this machine can install.

Sources (photographs only; illustrations, renders and abstract art left out by hand):
- Debian `plasma-workspace-wallpapers` (KDE wallpapers: licence from each wallpaper's metadata, and the
  package's debian/copyright),
- Debian `mate-backgrounds` (nature photographs; GPL-2+ per debian/copyright),
- photographs shipped inside scikit-image (public domain or CC0, as its docstrings say).

    apt-get install plasma-workspace-wallpapers mate-backgrounds
    python scripts/prepare_photos.py --out data/photos          # → data/photos/{train,heldout}/*.png + MANIFEST.json

Each image is converted to RGB and, when its long side exceeds --max-side (default 1024), downscaled with a
Lanczos filter, which also averages away JPEG noise. 1024 rather than DIV2K's 2K: a 96-pixel training crop
then holds more texture than bokeh, and scoring the held-out photographs at x2-x8 takes minutes on a CPU.
The held-out photographs are never trained on; the bundled model's PSNR table is measured on them.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inference.image_io import ImageError, read_image, write_image  # noqa: E402

PLASMA_ROOT = Path("/usr/share/wallpapers")
MATE_ROOT = Path("/usr/share/backgrounds/mate/nature")
PLASMA_PHOTOS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
                 "Kite", "OneStandsOut", "Path", "summer_1am")
MATE_PHOTOS = ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm",
               "TwoWings", "Wood", "YellowFlower")
SKIMAGE_PHOTOS = {  # name → licence, from scikit-image's own docstrings
    "astronaut": "public domain (NASA)", "coffee": "CC0 (Rachel Michetti)", "chelsea": "CC0 (Stefan van der Walt)",
    "rocket": "public domain (SpaceX)", "hubble_deep_field": "public domain (NASA)",
}
HELD_OUT = {"plasma/EveningGlow", "plasma/Grey", "mate/Dune", "mate/LadyBird", "skimage/coffee", "skimage/chelsea"}
DEFAULT_MAX_SIDE = 1024


def plasma_source(name: str) -> dict:
    folder = PLASMA_ROOT / name
    images = sorted((folder / "contents" / "images").glob("*"), key=lambda p: int(p.stem.split("x")[0]))
    if not images:
        raise FileNotFoundError(f"{folder} has no images: install plasma-workspace-wallpapers")
    meta = json.loads((folder / "metadata.json").read_text()).get("KPlugin", {})
    authors = ", ".join(a.get("Name", "?") for a in meta.get("Authors", []))
    return {"id": f"plasma/{name}", "path": str(images[-1]), "package": "plasma-workspace-wallpapers",
            "author": authors, "licence": f"{meta.get('License', '?')} (metadata); GPL-2+ (debian/copyright)"}


def mate_source(name: str) -> dict:
    path = MATE_ROOT / f"{name}.jpg"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: install mate-backgrounds")
    return {"id": f"mate/{name}", "path": str(path), "package": "mate-backgrounds", "author": "see debian/copyright",
            "licence": "GPL-2+ (debian/copyright)"}


def load(source: dict) -> Image.Image:
    if source["package"] == "scikit-image":
        import skimage.data

        return Image.fromarray(getattr(skimage.data, source["id"].split("/")[1])()).convert("RGB")
    rgb = read_image(source["path"])
    return Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (train/, heldout/ and MANIFEST.json)")
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, help="downscale longer sides to this")
    args = parser.parse_args()
    try:
        sources = ([plasma_source(n) for n in PLASMA_PHOTOS] + [mate_source(n) for n in MATE_PHOTOS]
                   + [{"id": f"skimage/{n}", "path": f"skimage.data.{n}()", "package": "scikit-image",
                       "author": "", "licence": lic} for n, lic in SKIMAGE_PHOTOS.items()])
    except FileNotFoundError as exc:
        print(f"prepare_photos: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    manifest = []
    for source in sources:
        try:
            image = load(source)
        except (ImageError, ImportError) as exc:
            print(f"prepare_photos: {source['id']}: {exc}", file=sys.stderr)
            return 2
        if max(image.size) > args.max_side:
            factor = args.max_side / max(image.size)
            image = image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS)
        split = "heldout" if source["id"] in HELD_OUT else "train"
        target = out / split / (source["id"].replace("/", "_") + ".png")
        write_image(target, torch.from_numpy(np.asarray(image).transpose(2, 0, 1) / 255.0))
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        manifest.append({**source, "split": split, "file": str(target.relative_to(out)), "size": list(image.size),
                         "sha256": digest})
        print(f"{split:8s} {target.name:32s} {image.width}x{image.height}  {source['licence']}")
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(manifest)} images and {out / 'MANIFEST.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
