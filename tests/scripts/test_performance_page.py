"""scripts/performance_page.py: the committed page and the README's tables are what the JSON gives now, and every
figure follows its JSON."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scripts import performance_page

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_page_and_readme_tables_are_up_to_date():
    assert (ROOT / performance_page.PAGE).read_text() == performance_page.page()
    readme = (ROOT / performance_page.README).read_text()
    assert readme == performance_page.readme(readme)
    assert performance_page.main(["--check"]) == 0


@pytest.fixture
def copied_root(tmp_path) -> Path:
    """The JSON the page reads, copied into a scratch repository root."""
    shutil.copytree(ROOT / "benchmarks", tmp_path / "benchmarks")
    (tmp_path / "weights").mkdir()
    shutil.copy(ROOT / performance_page.MODEL_RECORD, tmp_path / performance_page.MODEL_RECORD)
    return tmp_path


def edit_json(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def test_a_changed_measurement_changes_the_page_and_the_readme(copied_root):
    model = copied_root / performance_page.DEVICE_CHECK / "model.json"
    edit_json(model, lambda r: r["results"][0].update(median_ms=12345.0))  # the first step of the first encoder
    check = copied_root / performance_page.DEVICE_CHECK / "device_check.json"
    edit_json(check, lambda r: r["targets"][-1].update(measured_ms=98.7))
    edit_json(copied_root / performance_page.MODEL_RECORD, lambda r: r["psnr"]["model"].update({"4": 31.5}))
    page = performance_page.page(copied_root)
    assert "| encode | 12.3 s |" in page and "| 98.7 ms |" in page
    readme = performance_page.readme((ROOT / performance_page.README).read_text(), copied_root)
    bicubic_x4 = json.loads((ROOT / performance_page.MODEL_RECORD).read_text())["psnr"]["bicubic"]["4"]
    assert "| 31.50 |" in readme and f"{31.5 - bicubic_x4:+.2f}" in readme and "| 98.7 ms |" in readme


def test_a_readme_without_its_blocks_is_an_error():
    with pytest.raises(ValueError, match="generated: quality"):
        performance_page.readme("# no blocks\n")


@pytest.mark.parametrize("ms, text", [(0.5, "0.50 ms"), (1.4121, "1.41 ms"), (72.168, "72.2 ms"),
                                      (251.13, "251 ms"), (1810.0, "1.81 s"), (22200.0, "22.2 s")])
def test_durations_keep_three_significant_figures(ms, text):
    assert performance_page.duration(ms) == text
