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
- photographs shipped inside scikit-image (public domain or CC0, as its docstrings say);
- Debian `gcompris-qt-data` (the educational suite's photographs, mostly from Wikimedia Commons, inside its Qt
  resource bundles: author and licence from the README entry beside each image; lossy WebP, several of them
  sharpened, so halved before use), `tuxpaint-data` (its photographic templates; GPL-2+), `lxqt-themes` (its
  photographic wallpapers without large defocused areas; CC-BY-SA-3.0), `sddm-theme-maldives` (CC-BY-3.0) and
  `digikam-data` (one photograph; GPL-2+). These went to train only (val and test are unchanged).
Never used, in any way: Debian's lomiri-wallpapers* (kept for independent evaluation). ukui-wallpapers,
gnome-backgrounds and sway-backgrounds were looked at and hold no photographs; docs/PHOTO_SOURCES.md lists
every source surveyed and why some were left out.

    apt-get install plasma-workspace-wallpapers mate-backgrounds palapeli-data opencv-doc gcompris-qt-data \
        tuxpaint-data lxqt-themes sddm-theme-maldives digikam-data
    python scripts/prepare_photos.py --out data/photos   # → data/photos/{train,val,test}/*.png + MANIFEST.json

Three splits, fixed by name (two photographs of one scene always share a split):
- train: what the model learns from;
- val: chooses best.pth and every recipe choice;
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
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cli  # noqa: E402
from inference.image_io import (  # noqa: E402
    ImageError, decode_image_with_alpha, read_image, to_uint8, write_image)

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
GCOMPRIS_RCC = Path("/usr/share/gcompris-qt/rcc")
# activity → (the folder under its resource/ that holds the README and the photographs, the photographs there)
GCOMPRIS_PHOTOS = {
    "clickgame": ("", tuple(f"sea{k}.webp" for k in range(1, 7))),
    "erase": ("", tuple(f"{n}.webp" for n in (
        "alpaca", "bee", "butterfly", "calf", "camels", "caterpillar", "chamaeleon", "cheetah", "crab", "dolphin",
        "flying_fox", "gibbon", "giraffe", "goat", "gorilla", "gosling", "heron", "horse", "kingfisher", "kitten",
        "long_nosed_monkey", "macaque", "meerkats", "northern_harrier", "nubian_ibex", "penguin", "pika",
        "red_panda", "rhinoceros", "spoonbills", "squirrel", "swans", "toucan"))),
    "explore_farm_animals": ("animals", tuple(f"{n}.webp" for n in (
        "cat", "chicken", "cow", "dog", "duck", "horse", "owl", "pig", "sheep"))),
    "explore_monuments": ("", tuple(f"{n}.webp" for n in (
        "egypt/bentPyramid", "egypt/greatPyramidOfGiza", "egypt/meidumPyramid", "egypt/redPyramid",
        "france/arlesAmphitheater", "france/chateaudeChambord", "france/chateaudeChenonceau",
        "france/citedeCarcassonne", "france/eiffelTower", "france/montStMichel", "france/palaisdesPapes",
        "france/pontduGard", "france/reimsCathedral", "france/rocamadour", "germany/aulaPalatina",
        "germany/berlinCathedral", "germany/brandenburgGate", "germany/neuschwansteinCastle",
        "germany/schwerinPalace", "germany/trierImperialBaths", "germany/wormsCathedral", "india/ajantaCave",
        "india/charminar", "india/gatewayofIndia", "india/goldenTemple", "india/greatStupa", "india/hawaMahal",
        "india/konarkSunTemple", "india/mysorePalace", "india/qutubMinar", "india/rangGhar",
        "india/victoriaMemorial", "usa/canyondeChelly", "usa/castillodeSanMarcos", "usa/fortSumter",
        "usa/georgeWashingtonBirthplace", "usa/lincolnMemorial", "usa/mountRushmore", "usa/navajo",
        "usa/statueofLiberty", "wonders/chichenItza", "wonders/christTheRedeemer", "wonders/colosseum",
        "wonders/greatWallofChina", "wonders/machuPicchu", "wonders/petra", "wonders/tajMahal"))),
    "explore_world_animals": ("animals", tuple(f"{n}.webp" for n in (
        "bison", "chameleon", "crocodile", "dragon", "giraffe", "hedgehog", "jaguar", "kangaroo", "koala", "lemur",
        "moose", "narwhal", "panda", "polar_bear", "scarlet_macaw"))),
    "explore_world_music": ("music", tuple(f"{n}.webp" for n in (
        "africa", "america", "australia", "ireland", "italy", "japan", "mexico", "middleeast", "orchestra"))),
}
# Photographs that a README credits under another name (a typo in explore_monuments' README).
GCOMPRIS_CREDITED_AS = {"germany/aulaPalatina.webp": "germany/audaPalatina.webp"}
# Lossy, partly sharpened sources are halved before use: detail at the pixel level is then the scene's, not the
# codec's or the filter's.
LOSSY_DOWNSCALE = 2
TUXPAINT_ROOT = Path("/usr/share/tuxpaint/templates")
TUXPAINT_PHOTOS = tuple(f"{n}.jpg" for n in (
    "burnt_bark", "cliff", "corn_maze", "jellyfish", "lighthouse", "mossy_bark", "mossy_log", "mudstone",
    "ocean_splash", "ocean_waves", "redwoods_above", "rocks", "sheep", "spiders_web", "sun_behind_clouds",
    "sun_behind_leaves", "trees_above", "trees_at_dusk", "wool_mill_machine"))
LXQT_ROOT = Path("/usr/share/lxqt/wallpapers")
LXQT_PHOTOS = ("fog.jpg", "after-the-rain.jpg", "Valendas.png", "this-is-not-windows.jpg")
SINGLE_PHOTOS = (  # (folder, file, id prefix, package, author, licence)
    (Path("/usr/share/sddm/themes/maldives"), "background.jpg", "sddm-maldives", "sddm-theme-maldives",
     "Nevit Dilmen (Wikimedia Commons)", "CC-BY-3.0 (debian/copyright)"),
    (Path("/usr/share/digikam/about/images"), "body-background.jpg", "digikam", "digikam-data",
     "see debian/copyright", "GPL-2+ (debian/copyright)"),
)
DEFAULT_MAX_SIDE = 1024
# Qt resource bundle (.rcc) layout: a 'qres' header, a tree of 14-byte (format 1) or 22-byte (format ≥ 2, with a
# modification time) entries, UTF-16 names, and data blocks; a file entry's flags say zlib (1) or zstd (4).
RCC_MAGIC = b"qres"
RCC_DIRECTORY, RCC_ZLIB, RCC_ZSTD = 2, 1, 4


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


def read_qt_resources(path: Path) -> dict[str, bytes]:
    """Every file of a Qt resource bundle, by its path inside the bundle ('a/b/c.png'), decompressed."""
    blob = path.read_bytes()
    if blob[:4] != RCC_MAGIC:
        raise ValueError(f"{path} is not a Qt resource bundle")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    entry_size = 14 if version < 2 else 22

    def name(offset: int) -> str:
        length = struct.unpack(">H", blob[names + offset:names + offset + 2])[0]
        return blob[names + offset + 6:names + offset + 6 + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}

    def walk(index: int, prefix: str) -> None:
        at = tree + index * entry_size
        name_offset, flags = struct.unpack(">IH", blob[at:at + 6])
        path_here = f"{prefix}/{name(name_offset)}".lstrip("/") if index else ""
        if flags & RCC_DIRECTORY:
            count, first = struct.unpack(">II", blob[at + 6:at + 14])
            for child in range(first, first + count):
                walk(child, path_here)
            return
        offset = struct.unpack(">I", blob[at + 10:at + 14])[0]
        size = struct.unpack(">I", blob[data + offset:data + offset + 4])[0]
        payload = blob[data + offset + 4:data + offset + 4 + size]
        if flags & RCC_ZSTD:
            raise ValueError(f"{path}: {path_here} is zstd-compressed, which this reader does not decode")
        files[path_here] = zlib.decompress(payload[4:]) if flags & RCC_ZLIB else payload

    walk(0, "")
    return files


def readme_entries(text: str) -> dict[str, dict[str, str]]:
    """A GCompris resource README (blocks of 'Key: value' lines, 'Files:' followed by names on its line or the
    next ones, up to the next key) → {file name: {'author', 'licence', 'source'}}."""
    entries: dict[str, dict[str, str]] = {}
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        names: list[str] = []
        in_files = False
        for line in (line.strip() for line in block.splitlines()):
            key, sep, value = line.partition(":")
            if sep and key.isalpha() and key[:1].isupper():  # a key (Copyright, License, Source, Comments, ...)
                in_files = key == "Files"
                if in_files:
                    names += value.split()
                else:
                    fields[key] = value.strip()
            elif in_files and line:
                names += line.split()
        for file_name in names:
            entries[file_name] = {"author": fields.get("Copyright", "?"), "licence": fields.get("License", "?"),
                                  "source": fields.get("Source", "")}
    return entries


def gcompris_sources() -> list[dict]:
    sources = []
    for activity, (folder, photos) in GCOMPRIS_PHOTOS.items():
        bundle = GCOMPRIS_RCC / f"{activity}.rcc"
        if not bundle.is_file():
            raise FileNotFoundError(f"{bundle} not found: install gcompris-qt-data")
        resources = read_qt_resources(bundle)
        base = "/".join(part for part in ("gcompris/src/activities", activity, "resource", folder) if part)
        credits = readme_entries(resources[f"{base}/README"].decode("utf-8"))
        for photo in photos:
            credit = credits.get(GCOMPRIS_CREDITED_AS.get(photo, photo))
            if credit is None or f"{base}/{photo}" not in resources:
                raise ValueError(f"{bundle}: {photo} or its README entry is missing (another gcompris-qt-data "
                                 "version?)")
            sources.append({"id": f"gcompris/{activity}/{Path(photo).stem}", "path": f"{bundle}:{base}/{photo}",
                            "package": "gcompris-qt-data", "author": credit["author"],
                            "licence": f"{credit['licence']} ({credit['source']})" if credit["source"]
                            else credit["licence"], "data": resources[f"{base}/{photo}"],
                            "downscale": LOSSY_DOWNSCALE})
    return sources


def file_sources(root: Path, names: tuple[str, ...], prefix: str, package: str, author: str,
                 licence: str) -> list[dict]:
    sources = []
    for name in names:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: install {package}")
        sources.append({"id": f"{prefix}/{Path(name).stem}", "path": str(path), "package": package,
                        "author": author, "licence": licence})
    return sources


def split_of(source_id: str) -> str:
    return "test" if source_id in TEST else "val" if source_id in VAL else "train"


def load(source: dict) -> Image.Image:
    """The source's photo, read through inference/image_io as every image here is (upright: EXIF orientation)."""
    if source["package"] == "scikit-image":
        import skimage.data

        rgb = read_image(Path(skimage.data.data_dir) / source["path"])
    elif "data" in source:  # a file inside a resource bundle
        rgb = decode_image_with_alpha(source["data"], source["path"])[0]
    else:
        rgb = read_image(source["path"])
    return Image.fromarray(to_uint8(rgb))


def main() -> int:
    parser = cli.OneLineParser(prog="prepare_photos", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (train/, val/, test/ and MANIFEST.json)")
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE, help="downscale longer sides to this")
    args = parser.parse_args()
    try:
        sources = ([plasma_source(n) for n in PLASMA_PHOTOS] + [mate_source(n) for n in MATE_PHOTOS]
                   + [palapeli_source(n) for n in PALAPELI_PHOTOS] + [opencv_source(n) for n in OPENCV_PHOTOS]
                   + [{"id": f"skimage/{Path(n).stem}", "path": n, "package": "scikit-image",
                       "author": "", "licence": lic} for n, lic in SKIMAGE_PHOTOS.items()]
                   + gcompris_sources()
                   + file_sources(TUXPAINT_ROOT, TUXPAINT_PHOTOS, "tuxpaint", "tuxpaint-data",
                                  "Bill Kendrick (AUTHORS)", "GPL-2+ (debian/copyright)")
                   + file_sources(LXQT_ROOT, LXQT_PHOTOS, "lxqt", "lxqt-themes", "see wallpapers/License",
                                  "CC-BY-SA-3.0 (wallpapers/License)")
                   + [source for root, name, *about in SINGLE_PHOTOS
                      for source in file_sources(root, (name,), *about)])
    except (FileNotFoundError, ValueError) as exc:
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
        if source.get("downscale", 1) > 1:
            factor = source["downscale"]
            image = image.resize((round(image.width / factor), round(image.height / factor)), Image.LANCZOS)
        if max(image.size) > args.max_side:
            factor = args.max_side / max(image.size)
            image = image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS)
        split = split_of(source["id"])
        target = out / split / (source["id"].replace("/", "_") + ".png")
        write_image(target, torch.from_numpy(np.asarray(image).transpose(2, 0, 1) / 255.0))
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        source = {key: value for key, value in source.items() if key != "data"}
        manifest.append({**source, "split": split, "file": str(target.relative_to(out)), "size": list(image.size),
                         "sha256": digest})
        print(f"{split:8s} {target.name:32s} {image.width}x{image.height}  {source['licence']}")
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(manifest)} images and {out / 'MANIFEST.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
