"""Build the decoded cache (`cache: mmap`) of a training config's images before training, so that every rank of
a torchrun finds it ready instead of waiting while the first one builds it.

    python scripts/build_cache.py --config configs/train/paper-hat.yaml --path /data/DIV2K_train_HR

It builds the very file that train.py maps with the same config, --path and --set overrides (same folder,
first_k and cache_dir; whatever `cache` the config names), or finds it current; then prints its path, size and
what it took. The cache lives beside the images (a hidden `.<folder>-<key>.decoded`) unless --set
train_dataset.dataset.args.cache_dir=DIR puts it elsewhere (datasets/decoded_cache.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import entry_point  # noqa: E402  (the standard library only: its guard is up before the heavy imports)

if __name__ == "__main__":
    entry_point.starting("build_cache.py")

import cli  # noqa: E402
import datasets  # noqa: E402
from training.config import apply_overrides, complete, load_yaml  # noqa: E402
from utils import EXIT_OK, UsageError  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train" / "edsr-baseline.yaml"
CACHED_DATASETS = ("image-folder", "paired-image-folders")
BYTES_PER_GB = 1e9


def build(config: str, path: str | None, overrides: list[str]) -> list[tuple[Path, bool]]:
    """Build (or find current) the decoded caches of the config's training dataset: [(file, built now)]."""
    extra = [f"train_dataset.dataset.args.root_path={json.dumps(path)}"] if path else []
    spec = complete(apply_overrides(load_yaml(config), list(overrides) + extra))["train_dataset"]["dataset"]
    if spec["name"] not in CACHED_DATASETS:
        raise UsageError(f"train_dataset.dataset is {spec['name']!r}; the decoded cache is for "
                         f"{' and '.join(CACHED_DATASETS)}")
    start = time.time()
    dataset = datasets.make({"name": spec["name"], "args": {**(spec.get("args") or {}), "cache": "mmap"}})
    return [(cache.path, cache.path.stat().st_mtime >= start) for cache in dataset.decoded_caches()]


def main() -> None:
    parser = cli.OneLineParser(prog="build_cache.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="training config (default: configs/train/edsr-baseline.yaml)")
    parser.add_argument("--path", help="training HR folder (sets train_dataset.dataset.args.root_path, as train.py)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE",
                        help="config overrides, as train.py's (e.g. train_dataset.dataset.args.cache_dir=/scratch)")
    args = parser.parse_args()
    code = cli.run("build_cache.py", lambda: run(args), usage_errors=(ValueError,))
    if code:
        sys.exit(code)


def run(args: argparse.Namespace) -> int:
    """Build (or check) the caches and say where they are."""
    start = time.perf_counter()
    caches = build(args.config, args.path, args.overrides)
    for path, built in caches:
        print(f"{'built' if built else 'up to date'}: {path} ({path.stat().st_size / BYTES_PER_GB:.2f} GB) "
              f"in {time.perf_counter() - start:.1f} s")
    return EXIT_OK


if __name__ == "__main__":
    main()
