"""Package a trained checkpoint as the bundled model: weights (fp16 where that is lossless), a table of bicubic
vs the model on the test split, and a model card.

    python scripts/bundle_model.py --checkpoint save/bundled/best.pth --test data/photos/test \\
        --out weights/continuoussr-edsr-baseline.pth --note "one NVIDIA H100, 25 min"
    python scripts/bundle_model.py --rescore weights/continuoussr-edsr-baseline.pth --test data/photos/test

Steps: (1) the checkpoint's model and its fp16 round trips (STORAGES: all weights, then all but the encoder's)
are scored on the validation split (--val) at every scale; the weights are stored in the first of those that
moves no scale's mean PSNR by MAX_FP16_PSNR_CHANGE dB or more, else in fp32 (a choice, so never made on the test
split). (2) Bicubic (MATLAB-compatible, 8-bit) and the
model are scored with the benchmark protocol: LR made on the fly (PIL bicubic of the uint8 HR, HR cropped to the
LR grid), PSNR on the luma, shave = ceil(scale). (3)
The weights file (the official format, model only), MODEL_CARD.md and a JSON of the numbers are written beside
each other, atomically. The JSON keeps the model's training history, one row per run (its start point, steps,
recipe, --note's hardware and wall time, date, and the val x4 PSNR that chose it); bundling a fine-tune of the
bundled model appends its row to the history of the weights it replaces, and the card shows the whole table.
The splits' MANIFEST.json (scripts/prepare_photos.py) names the data. `--rescore`
re-measures an already bundled model's table on the test split (step 2 only), leaving its weights as they are.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import entry_point  # noqa: E402  (the standard library only: its guard is up before the heavy imports)

if __name__ == "__main__":
    entry_point.starting("bundle_model.py")

import torch  # noqa: E402

import cli  # noqa: E402
import models  # noqa: E402
from evaluation.data import build_dataset  # noqa: E402
from evaluation.loading import BICUBIC_MODEL, load_model  # noqa: E402
from evaluation.loop import evaluate  # noqa: E402
from evaluation.schema import validate_config  # noqa: E402
from utils import (DEVICE_AUTO, DEVICE_CHOICES, EXIT_OK, REPOSITORY, UsageError, atomic_path,  # noqa: E402
                   repository_path, resolve_device)

DEFAULT_SCALES = (2, 3, 4, 6, 8)
# fp16 weights are kept only if they move no scale's mean PSNR by this much (dB): storage must not change scores.
MAX_FP16_PSNR_CHANGE = 0.01
# The fp16 storages tried in order, smallest first: (name, key prefixes kept in fp32). fp16's rounding error is
# spread evenly over the weights; the encoder holds about a quarter of them and half of that error.
STORAGES = (("fp16", ()), ("fp16, encoder fp32", ("encoder.",)))
HEADLINE_SCALE = 4
TABLE_HEADING = "## The test split (never trained on, used for no choice)"
# The table headings of cards written before the three splits (their table is replaced by --rescore).
OLD_TABLE_HEADINGS = ("## Held-out photographs",)


def split_config(folder: Path, scale: float) -> dict:
    """A test config scoring `folder` at `scale` with the benchmark protocol, LR made on the fly."""
    return {"test_dataset": {"dataset": {"name": "image-folder", "args": {"root_path": str(folder)}},
                             "wrapper": {"name": "sr-implicit-downsampled", "args": {"scale_min": scale}},
                             "batch_size": 1},
            "eval_type": f"benchmark-{scale:g}"}


def score(model: torch.nn.Module, folder: Path, scales, device: torch.device) -> dict[float, float]:
    """Mean PSNR (dB) per scale over the folder."""
    means = {}
    for scale in scales:
        config = split_config(folder, scale)
        protocol = validate_config(config)
        result = evaluate(model, build_dataset(config), protocol, device=device, progress=False)
        means[scale] = result.mean("psnr", protocol.scale)
    return means


def score_table(model: torch.nn.Module, test: Path, scales, device: torch.device) -> dict[str, dict[float, float]]:
    """The card's numbers: mean PSNR per scale of the model and of bicubic on the test split."""
    return {"model": score(model, test, scales, device),
            "bicubic": score(load_model(BICUBIC_MODEL, device), test, scales, device)}


def half_payload(payload: dict, keep_fp32: tuple[str, ...] = ()) -> dict:
    """The same model entry with its floating-point weights in fp16, but those whose key starts with one of
    `keep_fp32`."""
    state = {k: v.half() if v.is_floating_point() and not k.startswith(keep_fp32) else v
             for k, v in payload["sd"].items()}
    return {**payload, "sd": state}


def choose_storage(payload: dict, fp32_val: dict[float, float], score_payload) -> tuple[str, dict, dict[str, float]]:
    """The first of STORAGES whose weights move no val scale's mean PSNR (`score_payload(payload)` → {scale:
    dB}) by MAX_FP16_PSNR_CHANGE from `fp32_val`, else fp32: (name, stored payload, {storage tried: change})."""
    changes = {}
    for name, keep_fp32 in STORAGES:
        candidate = half_payload(payload, keep_fp32)
        scored = score_payload(candidate)
        changes[name] = max(abs(scored[s] - fp32_val[s]) for s in fp32_val)
        if changes[name] < MAX_FP16_PSNR_CHANGE:
            return name, candidate, changes
    return "fp32", payload, changes


def init_source(init_from: str, described: str = "") -> str:
    """How the card names the checkpoint a fine-tune started from: `described` if given, else its path within the
    repository (a relative path is taken from the repository's root, where train.py runs), else its role. A path
    outside the repository means nothing to the card's readers, so only its file name is kept."""
    if described:
        return described
    path = Path(init_from)
    return repository_path(REPOSITORY / path) or f"a checkpoint kept outside the repository ({path.name})"


def recipe_summary(config: dict) -> str:
    """A training config in a few words: crop, batch, scales, optimizer and lr, schedule, bf16."""
    wrapper = (config.get("train_dataset") or {}).get("wrapper", {}).get("args", {})
    optimizer = config.get("optimizer") or {}
    batch = (config.get("train_dataset") or {}).get("batch_size", "?")
    return (f"crops {wrapper.get('inp_size', '?')}, batch {batch}, "
            f"s ~ U({wrapper.get('scale_min', '?')}, {wrapper.get('scale_max', '?')}), "
            f"{optimizer.get('name', '?')} lr {(optimizer.get('args') or {}).get('lr', '?')}, "
            f"{(config.get('lr_scheduler') or {}).get('name', 'constant lr')}"
            f"{', bf16 autocast' if config.get('bf16') else ''}")


def history_row(ckpt: dict, run: int, note: str, fine_tuned_from: str = "") -> dict:
    """The history's row for the run that wrote `ckpt`: `run` is its number, `note` its hardware and wall time."""
    config = ckpt.get("config") or {}
    start = init_source(config["init_from"], fine_tuned_from) if config.get("init_from") else "random weights"
    return {"run": run, "start": start, "steps": ckpt.get("step"), "recipe": recipe_summary(config),
            "hardware": note, "date": datetime.date.today().isoformat(), "val_x4": ckpt.get("best_psnr")}


def history_section(history: list[dict]) -> list[str]:
    """The card's table of the runs that made the model, first to last."""
    if not history:
        return []
    lines = ["", "## Training history", "",
             "Each run starts from the one above it; val x4 is the validation split's RGB PSNR (dB) of the checkpoint "
             "the run kept, as train.py logs it.", "",
             "| run | start point | steps | recipe | hardware, wall time | date | val x4 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in history:
        steps = f"{row['steps']:,}" if isinstance(row.get("steps"), int) else "?"
        val = f"{row['val_x4']:.2f}" if isinstance(row.get("val_x4"), float) else "?"
        lines.append(f"| {row['run']} | {row['start']} | {steps} | {row['recipe']} | {row['hardware']} | "
                     f"{row['date']} | {val} |")
    return lines


def model_card(payload: dict, ckpt: dict, table: dict, dtype: str, changes: dict[str, float],
               manifest: list | None, note: str, weights: Path, fine_tuned_from: str = "",
               history: list[dict] | None = None) -> str:
    config = ckpt.get("config") or {}
    lines = [f"# {weights.name}", "",
             f"ContinuousSR `{payload['name']}` with the `{payload['args']['encoder_spec']['name']}` encoder "
             f"({sum(v.numel() for v in payload['sd'].values() if v.is_floating_point()):,} weights, stored in "
             f"`{dtype}`; on the validation split, the largest change of a scale's mean PSNR: "
             + "; ".join(f"`{name}` {change:.4f} dB" for name, change in changes.items()) + ").", "",
             "## Training", "",
             f"- the last run: epochs {ckpt.get('epoch', '?')}, steps {ckpt.get('step', '?')}; "
             f"{recipe_summary(config)}, L1"]
    if config.get("init_from"):
        lines.append(f"- fine-tuned from {init_source(config['init_from'], fine_tuned_from)}: the epochs, steps and "
                     "lr above are this run's, on top of that model's own training")
    if note and not history:
        lines.append(f"- {note}")
    lines += history_section(history or [])
    if manifest:
        lines += ["", "## Data", "", "| file | split | source | licence |", "| --- | --- | --- | --- |"]
        lines += [f"| {m['file']} | {m['split']} | {m['package']}: {m['id']} | {m['licence']} |" for m in manifest]
    return "\n".join(lines) + "\n" + table_section(table)


def table_section(table: dict, photographs: list | None = None) -> str:
    """The card's last section: bicubic vs the model on the test split, optionally naming its photographs."""
    scales = sorted(table["model"])
    lines = ["", TABLE_HEADING, "",
             "PSNR (dB) on the luma, shave = ceil(scale); LR = PIL bicubic of the HR (made on the fly). The "
             "validation split chose the checkpoint and fp16; the test photographs only make this table.", "",
             "| | " + " | ".join(f"x{s:g}" for s in scales) + " |", "| --- |" + " --- |" * len(scales)]
    for row in ("bicubic", "model"):
        lines.append(f"| {row} | " + " | ".join(f"{table[row][s]:.2f}" for s in scales) + " |")
    lines.append("| gain | " + " | ".join(f"{table['model'][s] - table['bicubic'][s]:+.2f}" for s in scales) + " |")
    if photographs:
        lines += ["", "| test photograph | source | licence |", "| --- | --- | --- |"]
        lines += [f"| {m['file']} | {m['package']}: {m['id']} | {m['licence']} |" for m in photographs]
    return "\n".join(lines) + "\n"


def read_manifest(test: Path) -> list | None:
    """The splits' MANIFEST.json beside the test folder (scripts/prepare_photos.py), if there is one."""
    path = test.parent / "MANIFEST.json"
    return json.loads(path.read_text()) if path.is_file() else None


def write_record(weights: Path, table: dict, dtype: str, changes: dict[str, float] | None,
                 history: list[dict] | None) -> None:
    """The JSON of the card's numbers, beside the weights (`changes`: val PSNR change of each storage tried;
    `history`: the runs that made the model)."""
    psnr = {row: {f"{s:g}": value for s, value in by_scale.items()} for row, by_scale in table.items()}
    record = {"weights": weights.name, "date": datetime.date.today().isoformat(), "table_split": "test",
              "dtype": dtype, "psnr_changes": changes, "psnr": psnr, "history": history or []}
    with atomic_path(weights.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


def previous_history(out: Path, ckpt: dict) -> list[dict]:
    """The history the new run continues: that of the weights at `out` when the run started from them, else none."""
    init_from = (ckpt.get("config") or {}).get("init_from")
    record = out.with_suffix(".json")
    if not init_from or not record.is_file() or (REPOSITORY / init_from).resolve() != out.resolve():
        return []
    return list(json.loads(record.read_text()).get("history") or [])


def rescore(weights: Path, test: Path, scales: list[float], device: torch.device) -> dict:
    """Re-measure a bundled model's card on the test split, weights untouched: the card keeps its training and
    data sections and gets a new table (replacing the one from its first table heading on)."""
    table = score_table(models.sr_model_from_checkpoint(weights, device), test, scales, device)
    card_path = weights.parent / "MODEL_CARD.md"
    card = card_path.read_text() if card_path.is_file() else f"# {weights.name}\n"
    cut = min((card.find(h) for h in (TABLE_HEADING, *OLD_TABLE_HEADINGS) if h in card), default=len(card))
    photographs = [m for m in read_manifest(test) or [] if m["split"] == "test"]
    with atomic_path(card_path) as tmp:
        tmp.write_text(card[:cut].rstrip("\n") + "\n" + table_section(table, photographs))
    old_record = weights.with_suffix(".json")
    old = json.loads(old_record.read_text()) if old_record.is_file() else {}
    write_record(weights, table, old.get("dtype", "?"), old.get("psnr_changes"), old.get("history"))
    return table


def headline_gain(table: dict) -> float:
    return table["model"].get(HEADLINE_SCALE, float("nan")) - table["bicubic"].get(HEADLINE_SCALE, float("nan"))


def main(argv: list[str] | None = None) -> int:
    parser = cli.OneLineParser(prog="bundle_model.py", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="the training checkpoint (e.g. save/<run>/best.pth)")
    source.add_argument("--rescore", metavar="WEIGHTS",
                        help="a bundled weights file: re-measure its card's table on --test, weights untouched")
    parser.add_argument("--test", required=True, help="the test split's HR photographs (the card's table; used for "
                                                      "nothing else)")
    parser.add_argument("--val", help="the validation split's HR photographs, which decide fp16 vs fp32 "
                                      "(default: the folder val/ beside --test)")
    parser.add_argument("--out", help="the weights file to write (.pth; with --checkpoint); the card goes beside it")
    parser.add_argument("--scales", default=",".join(map(str, DEFAULT_SCALES)), help="comma-separated scales")
    parser.add_argument("--note", default="", help="the run's hardware and wall time, for the card's history "
                                                    "(e.g. 'one NVIDIA H100, 25 min')")
    parser.add_argument("--fine-tuned-from", default="", metavar="TEXT",
                        help="the card's words for the checkpoint the run started from (its init_from; default: "
                             "its path within the repository, else 'a checkpoint kept outside the repository')")
    parser.add_argument("--device", default=DEVICE_AUTO,
                        help=f"{DEVICE_CHOICES} (default auto: CUDA if available, else the CPU)")
    args = cli.parse(parser, argv)
    if isinstance(args, int):
        return args
    return cli.run("bundle_model.py", lambda: bundle(args), usage_errors=(ValueError,))


def bundle(args: argparse.Namespace) -> int:
    """Score the checkpoint (or the bundled weights, with --rescore), then write the weights and their card."""
    scales = [float(s) for s in args.scales.split(",")]
    device = resolve_device(args.device)
    if args.rescore:
        weights = Path(args.rescore)
        table = rescore(weights, Path(args.test), scales, device)
        print((weights.parent / "MODEL_CARD.md").read_text())
        print(f"rescored {weights} on {args.test}; gain at x{HEADLINE_SCALE}: {headline_gain(table):+.2f} dB")
        return EXIT_OK
    if not args.out:
        raise UsageError("--out is required with --checkpoint")
    ckpt = models.load_checkpoint(args.checkpoint)
    payload = {key: ckpt["model"][key] for key in ("name", "args", "sd")}
    model = models.model_from_checkpoint(ckpt).to(device).eval()
    test = Path(args.test)
    val = Path(args.val) if args.val else test.parent / "val"
    table = score_table(model, test, scales, device)
    fp32_val = score(model, val, scales, device)
    dtype, stored, changes = choose_storage(
        payload, fp32_val,
        lambda p: score(models.model_from_checkpoint({"model": p}).to(device).eval(), val, scales, device))
    out = Path(args.out)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        torch.save({"model": stored}, f)
    manifest = read_manifest(test)
    history = previous_history(out, ckpt)
    history.append(history_row(ckpt, len(history) + 1, args.note, args.fine_tuned_from))
    card = model_card(payload, ckpt, table, dtype, changes, manifest, args.note, out, args.fine_tuned_from, history)
    with atomic_path(out.parent / "MODEL_CARD.md") as tmp:
        tmp.write_text(card)
    write_record(out, table, dtype, changes, history)
    print(card)
    print(f"wrote {out} ({out.stat().st_size / 2 ** 20:.1f} MiB, {dtype}); gain at x{HEADLINE_SCALE}: "
          f"{headline_gain(table):+.2f} dB")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
