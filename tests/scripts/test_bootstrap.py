"""scripts/bootstrap.sh: the runtime install from nothing skips pip's bytecode pass and instead imports the entry
points once; that import must name every entry point and run as written. It also compiles the CPU rasterizer's
kernels in the background once torch and $KERNEL_PACKAGES are in: those must be all that compile needs."""
from __future__ import annotations

import importlib.metadata
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


def distribution(requirement: str) -> str:
    """The normalised distribution name of a requirement line ("NumPy>=2" → "numpy")."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


def installed_with(names: set[str]) -> set[str]:
    """The distributions that installing `names` brings: them and their requirements, recursively (no extras)."""
    found, todo = set(), [distribution(name) for name in names]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        todo += [distribution(r) for r in importlib.metadata.requires(name) or [] if "extra ==" not in r]
    return found


# Run before the kernel compile: imports of the top-level modules in BLOCKED (those of the distributions not yet
# installed) fail as they would there, so that optional imports fall back and required ones fail the command.
ONLY_INSTALLED = """
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed yet)", name=name)

sys.meta_path.insert(0, NotInstalled())
"""


def test_the_first_install_is_all_the_kernel_compile_imports():
    """The background kernel compile runs as written with only torch and $KERNEL_PACKAGES (and what they require)
    installed, and each of $KERNEL_PACKAGES is a line of requirements.txt (which the script greps)."""
    text = BOOTSTRAP.read_text()
    packages = set(re.search(r'^KERNEL_PACKAGES="([^"]+)"$', text, re.M).group(1).split("|"))
    commands = re.findall(r'\.venv/bin/python -c "([^"]*compile_kernels[^"]*)" &', text)
    assert len(commands) == 1, "bootstrap.sh should compile the kernels with exactly one background command"
    requirement_names = {distribution(line) for line in (ROOT / "requirements.txt").read_text().splitlines()
                         if line.strip() and not line.startswith("#")}
    assert {distribution(name) for name in packages} <= requirement_names
    allowed = installed_with(packages | {"torch"}) | {"pip", "setuptools"}  # the last two: any new venv's
    blocked = {module for module, owners in importlib.metadata.packages_distributions().items()
               if not any(distribution(owner) in allowed for owner in owners)}
    prelude = ONLY_INSTALLED.replace("BLOCKED", repr(sorted(blocked)))
    run = subprocess.run([sys.executable, "-c", prelude + commands[0]], cwd=ROOT, capture_output=True, text=True,
                         timeout=IMPORT_TIMEOUT_S)
    assert run.returncode == 0, run.stderr
