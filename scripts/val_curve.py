"""Tabulate a run's validation curve and say where it flattens.

    python scripts/val_curve.py save/bundled                 # a table on stdout
    python scripts/val_curve.py save/bundled --json curve.json

Reads the run's TensorBoard scalars (val/psnr and val/psnr_x<s> per epoch, train/lr). The curve is said to
flatten at the first epoch after which no later validation gains more than --flat dB over the best so far.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import entry_point  # noqa: E402  (the standard library only: its guard is up before the heavy imports)

if __name__ == "__main__":
    entry_point.starting("val_curve.py")

import cli  # noqa: E402
from training.events import read_scalars  # noqa: E402
from utils import UsageError, atomic_path  # noqa: E402

DEFAULT_FLAT_DB = 0.05
MEAN_TAG = "val/psnr"


def flattening_epoch(curve: list[tuple[int, float]], flat_db: float) -> int | None:
    """The first epoch after which nothing gains more than `flat_db` over the best so far (None: too short)."""
    if len(curve) < 2:
        return None
    best, flat_from = -float("inf"), None
    for epoch, value in curve:
        if value > best + flat_db or flat_from is None:
            flat_from = epoch
        best = max(best, value)
    return flat_from


def curve_rows(scalars: dict[str, list[tuple[int, float]]]) -> list[dict]:
    """One row per validated epoch: its mean PSNR, the per-scale PSNRs, and the best mean so far."""
    per_scale = sorted(tag for tag in scalars if tag.startswith(MEAN_TAG + "_x"))
    by_tag = {tag: dict(scalars[tag]) for tag in per_scale}
    rows, best = [], -float("inf")
    for epoch, value in scalars.get(MEAN_TAG, []):
        best = max(best, value)
        rows.append({"epoch": epoch, "psnr": value, "best": best,
                     **{tag[len("val/"):]: by_tag[tag].get(epoch) for tag in per_scale}})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = cli.OneLineParser(prog="val_curve.py", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a train.py output folder (holding tensorboard/)")
    parser.add_argument("--flat", type=float, default=DEFAULT_FLAT_DB, help="dB a later epoch must gain")
    parser.add_argument("--json", help="also write the rows and the flattening epoch here")
    args = cli.parse(parser, argv)
    return args if isinstance(args, int) else cli.run("val_curve.py", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    """Print the curve (and write its JSON)."""
    events = Path(args.run) / "tensorboard"
    if not events.is_dir():
        raise UsageError(f"{events} not found: not a train.py run folder")
    scalars = read_scalars(events)
    rows = curve_rows(scalars)
    if not rows:
        raise UsageError(f"{args.run} holds no validation yet ({MEAN_TAG})")
    columns = [key for key in rows[0] if key not in ("epoch", "psnr", "best")]
    print("| epoch | val PSNR | " + " | ".join(columns) + (" | " if columns else "") + "best so far |")
    print("| --- " * (3 + len(columns)) + "|")
    for row in rows:
        cells = [f"{row[c]:.2f}" if row[c] is not None else "" for c in columns]
        print(f"| {row['epoch']} | {row['psnr']:.2f} | " + " | ".join(cells) + (" | " if cells else "")
              + f"{row['best']:.2f} |")
    flat = flattening_epoch([(r["epoch"], r["psnr"]) for r in rows], args.flat)
    print(f"flattens from epoch {flat} (no later gain above {args.flat:g} dB)" if flat is not None
          else "too few validations to say where it flattens")
    if args.json:
        with atomic_path(args.json) as tmp:
            Path(tmp).write_text(json.dumps({"rows": rows, "flat_db": args.flat, "flattens_at": flat}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
