"""Make the README's picture: the same crop of an image upscaled by bicubic and by ContinuousSR, side by side.

    python scripts/readme_figure.py                      # assets/example.png x4, bundled model -> assets/
    python scripts/readme_figure.py --input IMG --model CKPT --scale 4 --crop 40,30,64,48 --out fig.png

The whole image is encoded once and rendered at --scale; the crop (X,Y,W,H in input pixels) of that render and
of the bicubic upscale are enlarged with nearest neighbour by --magnify, so that one output pixel shows as a
block, and labelled above each panel.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import entry_point  # noqa: E402  (the standard library only: its guard is up before the heavy imports)

if __name__ == "__main__":
    entry_point.starting("readme_figure.py")

import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

import cli  # noqa: E402
import models  # noqa: E402
from inference.image_io import MAX_OUTPUT_PIXELS, read_image, to_uint8  # noqa: E402
from inference.pipeline import target_size  # noqa: E402
from inference.resize import resize_bicubic  # noqa: E402
from utils import EXIT_OK, REPOSITORY, UsageError, atomic_path  # noqa: E402

DEFAULT_INPUT = REPOSITORY / "assets" / "example.png"
DEFAULT_MODEL = REPOSITORY / "weights" / "continuoussr-edsr-baseline.pth"
DEFAULT_OUT = REPOSITORY / "assets" / "bicubic-vs-continuoussr-x4.png"
DEFAULT_CROP = "62,30,116,100"  # X,Y,W,H in input pixels: the eyes, nose and whiskers of assets/example.png
LABEL_HEIGHT = 22  # pixels of the band above each panel that holds its label
GAP = 6  # pixels between the two panels
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


def crop_box(text: str, width: int, height: int) -> tuple[int, int, int, int]:
    """X,Y,W,H in input pixels, checked against the image (width x height)."""
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--crop wants X,Y,W,H (integers), got {text!r}") from None
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise UsageError(f"--crop {text} does not lie within the {width}x{height} input")
    return x, y, w, h


def check_sizes(lr_size: tuple[int, int], box: tuple[int, int, int, int], scale: int, magnify: int) -> None:
    """UsageError, before the model loads, if the render or the figure would exceed MAX_OUTPUT_PIXELS."""
    target_size(lr_size, (scale, scale), None, MAX_OUTPUT_PIXELS)
    _, _, w, h = box
    width, height = 2 * w * scale * magnify + GAP, h * scale * magnify + LABEL_HEIGHT
    if width * height > MAX_OUTPUT_PIXELS:
        raise UsageError(f"a {width}x{height} figure has {width * height:,} pixels, above {MAX_OUTPUT_PIXELS:,}: "
                         "use a smaller --crop, --scale or --magnify")


def labelled_panel(image: Image.Image, label: str) -> Image.Image:
    """`image` with `label` written in a band above it."""
    panel = Image.new("RGB", (image.width, image.height + LABEL_HEIGHT), BACKGROUND)
    panel.paste(image, (0, LABEL_HEIGHT))
    ImageDraw.Draw(panel).text((4, 4), label, fill=INK)
    return panel


def figure(rgb: torch.Tensor, sr: torch.Tensor, box: tuple[int, int, int, int], scale: int, magnify: int,
           ) -> Image.Image:
    """The labelled bicubic and ContinuousSR panels of `box` (input pixels) at `scale`, side by side."""
    x, y, w, h = box
    height, width = sr.shape[-2:]
    bicubic = resize_bicubic(rgb, (height, width))
    window = (slice(None), slice(y * scale, (y + h) * scale), slice(x * scale, (x + w) * scale))
    size = (w * scale * magnify, h * scale * magnify)
    panels = [labelled_panel(Image.fromarray(to_uint8(image[window])).resize(size, Image.NEAREST), label)
              for image, label in ((bicubic, f"bicubic x{scale}"), (sr.clamp(0, 1), f"ContinuousSR x{scale}"))]
    out = Image.new("RGB", (2 * panels[0].width + GAP, panels[0].height), BACKGROUND)
    out.paste(panels[0], (0, 0))
    out.paste(panels[1], (panels[0].width + GAP, 0))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = cli.OneLineParser(prog="readme_figure.py", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="the low-resolution image")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a ContinuousSR checkpoint")
    parser.add_argument("--scale", type=int, default=4, help="integer scale (default 4)")
    parser.add_argument("--crop", default=DEFAULT_CROP, help=f"X,Y,W,H in input pixels (default {DEFAULT_CROP})")
    parser.add_argument("--magnify", type=int, default=1, help="nearest-neighbour enlargement of the crops")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the PNG to write")
    args = cli.parse(parser, argv)
    return args if isinstance(args, int) else cli.run("readme_figure.py", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    try:
        if args.scale < 1 or args.magnify < 1:
            raise UsageError("--scale and --magnify must be at least 1")
        if args.out.suffix.lower() != ".png":
            raise UsageError(f"--out {args.out}: the figure is a PNG; name it .png")
        rgb = read_image(args.input)
        box = crop_box(args.crop, rgb.shape[-1], rgb.shape[-2])
        check_sizes(tuple(rgb.shape[-2:]), box, args.scale, args.magnify)
        model = models.sr_model_from_checkpoint(args.model)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    with torch.no_grad():
        sr = model.render(model.encode(rgb[None]), scale=args.scale)[0]
    with atomic_path(args.out) as tmp:
        figure(rgb, sr, box, args.scale, args.magnify).save(tmp, format="PNG")
    print(f"wrote {args.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
