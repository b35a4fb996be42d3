"""Run a checkpoint over many test configs and write one Markdown and one JSON table (benchmark × scale).

    python scripts/eval_all.py --model ckpt.pth --root DATA --out results/ckpt configs/test/test-set5-*.yaml

Every config is checked, and its data folders listed, before anything runs (a missing folder stops the run
at once with exit code 2). The model is loaded once. Rows are named after the configs (test-set5-4-paired.yaml
→ set5-paired), columns are scales; cells hold mean PSNR (dB) / SSIM, and a second table the model's time per
image (one encode + one render). OUT.json adds the per-image scores. Both files are written atomically.
--self-ensemble scores the mean over the eight flips and transposes of each input (inference/self_ensemble.py;
the tables say so).
With no config given, every configs/test/*.yaml runs.
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
    entry_point.starting("eval_all.py")

import torch  # noqa: E402

import cli  # noqa: E402
from evaluation.data import build_dataset, check_scales, resolve_data_paths  # noqa: E402
from evaluation.loading import load_model  # noqa: E402
from evaluation.loop import evaluate  # noqa: E402
from evaluation.schema import check_workers, load_config, validate_config  # noqa: E402
from inference.self_ensemble import OPTION_HELP as SELF_ENSEMBLE_HELP  # noqa: E402
from rasterizer import check_backend  # noqa: E402
from utils import (  # noqa: E402
    DEVICE_AUTO, DEVICE_CHOICES, EXIT_OK, UsageError, atomic_path, check_writable, describe_device, resolve_device)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "test"
DEFAULT_WORKERS = 2


def row_label(config_path: Path, scale: float) -> str:
    """test-set5-4-paired.yaml → set5-paired: the file stem without 'test-' and the scale."""
    parts = config_path.stem.split("-")
    if parts and parts[0] == "test":
        parts = parts[1:]
    kept = [p for p in parts if p != f"{scale:g}"]
    return "-".join(kept) or config_path.stem


def markdown_table(rows: list[str], scales: list[float], cells: dict[tuple[str, float], str]) -> list[str]:
    lines = ["| benchmark | " + " | ".join(f"x{s:g}" for s in scales) + " |",
             "| --- |" + " --- |" * len(scales)]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(cells.get((row, s), "") for s in scales) + " |")
    return lines


def render_markdown(records: list[dict], model: str, device: str, date: str, self_ensemble: bool = False) -> str:
    rows = list(dict.fromkeys(r["benchmark"] for r in records))
    scales = sorted({r["scale"] for r in records})
    quality = {(r["benchmark"], r["scale"]): f"{r['psnr']:.2f} / {r['ssim']:.4f}" for r in records}
    timing = {(r["benchmark"], r["scale"]): f"{r['seconds_per_image']:.3f}" for r in records}
    ensemble = " (self-ensemble: the mean over 8 flips and transposes)" if self_ensemble else ""
    lines = [f"# Evaluation of `{model}`{ensemble}", "",
             f"{date}, device {device}. PSNR (dB) / SSIM, mean over each test set. Benchmarks: PSNR on Y, shave = "
             "scale; DIV2K: PSNR on RGB, shave = scale + 6; SSIM on Y with the same shave. `-paired` rows use the "
             "benchmark's own LR images, the others LR made on the fly.", ""]
    lines += markdown_table(rows, scales, quality)
    work = "eight encodes + eight renders" if self_ensemble else "one encode + one render"
    lines += ["", f"## Time per image (s): {work}", ""]
    lines += markdown_table(rows, scales, timing)
    return "\n".join(lines) + "\n"


def run(config_paths: list[Path], model_path: str, root: str | None, device: torch.device, backend: str,
        workers: int, progress: bool = True, self_ensemble: bool = False) -> list[dict]:
    """Evaluate every config; one record per config (see the module docstring)."""
    jobs = []
    for path in config_paths:  # check everything first: fail before hours of work, not after
        try:
            config = resolve_data_paths(load_config(path), root)
            protocol = validate_config(config)
            dataset = build_dataset(config)
            check_scales(dataset, protocol)
        except UsageError as exc:
            raise UsageError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from None
        jobs.append((path, config, protocol, dataset))
    model = load_model(model_path, device, self_ensemble)
    records = []
    for path, config, protocol, dataset in jobs:
        result = evaluate(model, dataset, protocol, data_norm=config.get("data_norm"), device=device,
                          backend=backend, workers=workers, progress=progress, description=path.stem)
        summary = result.summary()[0]
        records.append({"config": str(path), "benchmark": row_label(path, protocol.scale),
                        "eval_type": f"{protocol.kind}-{protocol.scale:g}", "scale": protocol.scale,
                        "images": len(result.names), "psnr": summary["psnr"], "ssim": summary["ssim"],
                        "seconds_per_image": summary["seconds_per_image"],
                        "per_image": result.to_dict()["per_image"]})
        print(f"{path.stem}: PSNR {summary['psnr']:.4f} dB, SSIM {summary['ssim']:.4f}, "
              f"{summary['seconds_per_image']:.4f} s/image", flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = cli.OneLineParser(prog="eval_all", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", type=Path, help="test configs (default: every configs/test/*.yaml)")
    parser.add_argument("--model", required=True, help="checkpoint in the official format")
    parser.add_argument("--root", help="data root for the configs' relative dataset paths (default ./load)")
    parser.add_argument("--out", default="results/eval", type=Path, help="writes OUT.md and OUT.json")
    parser.add_argument("--device", default=DEVICE_AUTO,
                        help=f"{DEVICE_CHOICES} (default auto: CUDA if available, else the CPU)")
    parser.add_argument("--gpu", type=int, metavar="N", help="CUDA device N (the same as --device cuda:N)")
    parser.add_argument("--backend", default="auto", help="rasterizer backend")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="data loader processes")
    parser.add_argument("--self-ensemble", action="store_true", help=SELF_ENSEMBLE_HELP)
    args = cli.parse(parser, argv)
    if isinstance(args, int):
        return args
    return cli.run("eval_all.py", lambda: evaluate_all(args), non_finite="; no score is given for a non-finite output",
                   interrupted="interrupted; no tables were written")


def evaluate_all(args: argparse.Namespace) -> int:
    """Score every config and write the tables."""
    configs = args.configs or sorted(CONFIG_DIR.glob("*.yaml"))
    try:
        check_workers(args.workers)
        device = resolve_device(args.device, args.gpu)
        check_backend(args.backend, device)
        for table in (args.out.with_name(args.out.name + suffix) for suffix in (".md", ".json")):
            check_writable(table)  # refused now, not after every config is scored
        records = run(configs, args.model, args.root, device, args.backend, args.workers,
                      self_ensemble=args.self_ensemble)
        write_tables(records, args.model, device, args.out, args.self_ensemble)
    except OSError as exc:  # the tables could not be written (a full disk, a read-only folder)
        raise cli.Failure(f"cannot write {args.out}.md/.json: {exc.strerror or exc}") from None
    return EXIT_OK


def write_tables(records: list[dict], model: str, device: torch.device, out: Path, self_ensemble: bool = False
                 ) -> None:
    """OUT.md and OUT.json, each written atomically."""
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    markdown, table = out.with_name(out.name + ".md"), out.with_name(out.name + ".json")
    with atomic_path(markdown) as tmp:
        tmp.write_text(render_markdown(records, model, describe_device(device), date, self_ensemble))
    payload = {"model": model, "self_ensemble": self_ensemble, "device": describe_device(device), "date": date,
               "results": records}
    with atomic_path(table) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"eval_all: wrote {markdown} and {table}")


if __name__ == "__main__":
    sys.exit(main())
