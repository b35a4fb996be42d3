"""Build the HR photo folders of the bundled model, reproducibly, from packages this machine can install.

Sources (photographs only; illustrations, renders, paintings, synthetic scenes, logos, grayscale and blurred
images left out by hand, after looking at every image the packages hold):
- Debian `plasma-workspace-wallpapers` (KDE wallpapers: licence from each wallpaper's metadata and the package's
  debian/copyright),
- Debian `mate-backgrounds` (nature photographs; GPL-2+ per debian/copyright),
- Debian `palapeli-data` (the jigsaw game's photographs, from Wikimedia Commons: author and licence from each
  puzzle's .desktop file),
- Debian `opencv-doc` (OpenCV's sample photographs; Apache-2.0 per debian/copyright). Left out, because they belong
  to the standard SR benchmarks (Set5, Set14, B100, Urban100, Manga109) or look like their images: baboon, lena,
  butterfly (a monarch, as in Set5/Set14);
- photographs shipped inside scikit-image (public domain or CC0, as its docstrings say).
Never used, in any way: Debian's lomiri-wallpapers* (kept for independent evaluation). ukui-wallpapers,
gnome-backgrounds and sway-backgrounds were looked at and hold no photographs; docs/PHOTO_SOURCES.md lists the
sources surveyed since (about 160 more photographs, not yet built here).

    apt-get install plasma-workspace-wallpapers mate-backgrounds palapeli-data opencv-doc
    python scripts/prepare_photos.py --out data/photos   # → data/photos/{train,val,test}/*.png + MANIFEST.json

Three splits, fixed by name (two photographs of one scene always share a split):
- train: what the model learns from;
- val: chooses best.pth and every recipe choice (it held the first bundled model's "held-out" photographs);
- test: reported on the model card and in the README, used for nothing else; only photographs that no earlier
  model, recipe or checkpoint choice has seen.
Each image is converted to RGB and, when its long side exceeds --max-side (default 1024), downscaled with a
Lanczos filter, which also averages away JPEG noise. 1024 rather than DIV2K's 2K: a 96-pixel training crop
then holds more texture than bokeh, and scoring at x2-x8 takes minutes on a CPU.
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
PALAPELI_ROOT = Path("/usr/share/palapeli/collection")
OPENCV_ROOT = Path("/usr/share/doc/opencv-doc/examples/data")
PLASMA_PHOTOS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
                 "Kite", "OneStandsOut", "Path", "summer_1am")
MATE_PHOTOS = ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops", "Storm",
               "TwoWings", "Wood", "YellowFlower")
PALAPELI_PHOTOS = ("castle-maintenon", "cincinnati-bridge", "citrus-fruits", "european-honey-bee",
                   "panther-chameleon-female")
OPENCV_PHOTOS = ("aero1.jpg", "aero3.jpg", "aloeL.jpg", "aloeR.jpg", "apple.jpg", "board.jpg", "building.jpg",
                 "chicky_512.png", "ela_original.jpg", "fruits.jpg", "graf1.png", "graf3.png", "home.jpg",
                 "left.jpg", "right.jpg", "leuvenA.jpg", "leuvenB.jpg", "messi5.jpg", "orange.jpg", "pca_test1.jpg",
                 "rubberwhale1.png", "rubberwhale2.png", "squirrel_cls.jpg", "stuff.jpg")
SKIMAGE_PHOTOS = {  # file in skimage.data.data_dir → licence, from scikit-image's own docstrings
    "astronaut.png": "public domain (NASA)", "coffee.png": "CC0 (Rachel Michetti)",
    "chelsea.png": "CC0 (Stefan van der Walt)", "rocket.jpg": "public domain (SpaceX)",
    "hubble_deep_field.jpg": "public domain (NASA)",
    "motorcycle_left.png": "CC0 (Middlebury stereo data set, per scikit-image)",
}
VAL = {"plasma/EveningGlow", "plasma/Grey", "mate/Dune", "mate/LadyBird", "skimage/coffee", "skimage/chelsea",
       "opencv/graf1", "opencv/graf3", "opencv/apple"}
TEST = {"palapeli/castle-maintenon", "palapeli/cincinnati-bridge", "palapeli/citrus-fruits",
        "palapeli/european-honey-bee", "palapeli/panther-chameleon-female", "opencv/building", "opencv/home",
        "opencv/leuvenA", "opencv/leuvenB", "opencv/messi5", "opencv/squirrel_cls", "opencv/fruits",
        "opencv/chicky_512", "skimage/motorcycle_left"}
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


def palapeli_source(name: str) -> dict:
    path, desktop = PALAPELI_ROOT / f"{name}.jpg", PALAPELI_ROOT / f"{name}.desktop"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: install palapeli-data")
    fields = dict(line.split("=", 1) for line in desktop.read_text().splitlines() if "=" in line)
    return {"id": f"palapeli/{name}", "path": str(path), "package": "palapeli-data",
            "author": fields.get("X-KDE-PluginInfo-Author", "?"),
            "licence": f"{fields.get('X-KDE-PluginInfo-License', '?')} ({fields.get('X-KDE-PluginInfo-Website', '')})"}


def opencv_source(name: str) -> dict:
    path = OPENCV_ROOT / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: install opencv-doc")
    return {"id": f"opencv/{Path(name).stem}", "path": str(path), "package": "opencv-doc",
            "author": "OpenCV samples", "licence": "Apache-2.0 (debian/copyright)"}


def split_of(source_id: str) -> str:
    return "test" if source_id in TEST else "val" if source_id in VAL else "train"


def load(source: dict) -> Image.Image:
    if source["package"] == "scikit-image":
        import skimage.data

        return Image.open(Path(skimage.data.data_dir) / source["path"]).convert("RGB")
    rgb = read_image(source["path"])
    return Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (train/, val/, test/ and MANIFEST.json)")
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, help="downscale longer sides to this")
    args = parser.parse_args()
    try:
        sources = ([plasma_source(n) for n in PLASMA_PHOTOS] + [mate_source(n) for n in MATE_PHOTOS]
                   + [palapeli_source(n) for n in PALAPELI_PHOTOS] + [opencv_source(n) for n in OPENCV_PHOTOS]
                   + [{"id": f"skimage/{Path(n).stem}", "path": n, "package": "scikit-image",
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
        split = split_of(source["id"])
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
