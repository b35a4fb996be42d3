"""The documents match the code: the README's file map lists the tree, every path it names exists, and every
reference to the design cites a section that docs/DESIGN.md has, and the README's Python example runs."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Files at the top level that are the repository's own housekeeping, not part of the map.
UNMAPPED = {"README.md", ".gitignore", "pytest.ini", "requirements.txt", "requirements-dev.txt"}


def file_map() -> list[str]:
    """The backquoted paths of the first column of the README's 'What is here' table."""
    section = ROOT.joinpath("README.md").read_text().split("## What is here", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return [path for row in rows for path in re.findall(r"`([^`]+)`", row)]


def test_every_mapped_path_exists():
    missing = [path for path in file_map() if not (ROOT / path).exists()]
    assert not missing, f"the README's file map names paths that do not exist: {missing}"


def test_every_top_level_entry_is_mapped():
    try:
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    top = {line.split("/")[0] + ("/" if "/" in line else "") for line in tracked.splitlines()}
    mapped = {path.split("/")[0] + ("/" if "/" in path else "") for path in file_map()}
    unlisted = sorted(top - mapped - UNMAPPED)
    assert not unlisted, f"top-level entries missing from the README's file map: {unlisted}"


def tracked_text_files() -> list[Path]:
    try:
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in tracked.splitlines()
            if name.endswith((".py", ".md", ".yaml", ".sh")) and (ROOT / name).is_file()]


def test_design_references_cite_existing_sections_of_the_repository_page():
    sections = set(re.findall(r"^## (\d+)\. ", ROOT.joinpath("docs", "DESIGN.md").read_text(), re.M))
    assert sections == {str(n) for n in range(1, 9)}
    bad = []
    for path in tracked_text_files():
        text = path.read_text()
        bare = re.findall(r"(?<!docs/)DESIGN(?:\.md)? §", text)
        bad += [f"{path.relative_to(ROOT)}: a design reference without docs/DESIGN.md"] * len(bare)
        bad += [f"{path.relative_to(ROOT)}: §{n}" for n in re.findall(r"docs/DESIGN\.md §(\d+)", text)
                if n not in sections]
    assert not bad, bad


def test_ci_runs_the_readme_test_command_then_the_slow_tests():
    """The README's command is the fast default; CI runs it, then the tests that default leaves out."""
    readme = ROOT.joinpath("README.md").read_text()
    command = ".venv/bin/python -m pytest -q"
    assert f"&& {command}\n" in readme
    ci = [line.strip() for line in ROOT.joinpath(".ci", "run").read_text().splitlines()]
    assert ci.index(command) < ci.index(f"{command} -m slow")
    assert '-m "not slow"' in ROOT.joinpath("pytest.ini").read_text()


def test_the_readmes_python_example_runs(tiny_checkpoint):
    """'Using the model' as written, with the tiny checkpoint for ckpt.pth and a small image for lr."""
    import torch

    section = ROOT.joinpath("README.md").read_text().split("## Using the model", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {"lr": torch.rand(1, 3, 6, 7)}
    exec(compile(code.replace('"ckpt.pth"', repr(str(tiny_checkpoint))), "README.md", "exec"), namespace)
    assert namespace["x4"].shape == namespace["x4_plus"].shape == (1, 3, 24, 28)
    assert namespace["odd"].shape == (1, 3, 21, 16) and namespace["hd"].shape == (1, 3, 1080, 1920)
    assert torch.allclose(namespace["sr"], namespace["x4"], atol=1e-5)
