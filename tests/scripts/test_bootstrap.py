"""scripts/bootstrap.sh: the runtime install from nothing skips pip's bytecode pass and instead imports the entry
points once; that import must name every entry point and run as written."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "scripts" / "bootstrap.sh"
IMPORT_TIMEOUT_S = 300


def warm_import() -> tuple[str, list[str]]:
    """The Python source bootstrap.sh runs to compile what the entry points import, and the modules it names."""
    found = re.findall(r'PYTHONDONTWRITEBYTECODE \.venv/bin/python -c "([^"]+)"', BOOTSTRAP.read_text())
    assert len(found) == 1, "bootstrap.sh should warm the bytecode with exactly one import command"
    source = found[0]
    assert source.startswith("import "), source
    return source, [name.strip() for name in source.removeprefix("import ").split(",")]


def test_warm_import_names_every_entry_point():
    scripts = {path.stem for path in ROOT.glob("*.py") if 'if __name__ == "__main__":' in path.read_text()}
    assert set(warm_import()[1]) == scripts


def test_warm_import_runs_from_the_repository_root():
    """As bootstrap.sh runs it (cwd = the repository): it succeeds silently, and `test` is test.py there, not the
    standard library's package of that name."""
    source, names = warm_import()
    report = f"; import sys; print(*(sys.modules[name].__file__ for name in {names!r}), sep=chr(10))"
    run = subprocess.run([sys.executable, "-c", source + report], cwd=ROOT, capture_output=True, text=True,
                         timeout=IMPORT_TIMEOUT_S)
    assert run.returncode == 0, run.stderr
    assert [Path(line) for line in run.stdout.splitlines()] == [ROOT / f"{name}.py" for name in names]
