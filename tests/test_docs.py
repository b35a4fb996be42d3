"""The documents work: the README's commands call scripts that exist with flags they accept and paths that exist,
its links resolve, its Python example runs, it stays short; design references cite real sections. Wording is
not checked (tests/scripts/test_performance_page.py checks the generated tables)."""
from __future__ import annotations

import contextlib
import io
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image


ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 200
# Argument prefixes the README names as things the user provides or a command makes: data, outputs, runs.
USER_PATHS = ("load/", "save/", "results/", "my_photos", "CKPT")
# Where an argument that names a file of the repository starts.
REPOSITORY_DIRS = ("assets/", "configs/", "weights/", "scripts/", "docs/")
PYTHON = (".venv/bin/python", "python")
LAUNCHERS = (".venv/bin/torchrun", "torchrun")
# Top-level files that are the repository's own housekeeping, not part of the README's map.
UNMAPPED = {"README.md", ".gitignore", "requirements.txt", "requirements-dev.txt"}


def readme() -> str:
    return README.read_text()


def shell_commands(text: str) -> list[list[str]]:
    """Each command of the README's ```bash blocks as words (comments dropped, `\\` continuations joined, `&&`
    chains split)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                commands.append(words[:cut])
                words = words[cut + 1:]
    return [c for c in commands if c]


def script_and_arguments(words: list[str]) -> tuple[str, list[str]] | None:
    """(the script a command runs, its arguments) for python, torchrun and bash commands, else None."""
    if words[0] in PYTHON:
        if words[1] == "-m":
            return None
        return words[1], words[2:]
    if words[0] in LAUNCHERS:
        script = next(i for i, w in enumerate(words) if w.endswith(".py"))
        return words[script], words[script + 1:]
    if words[0] == "bash":
        return words[1], words[2:]
    return None


def entry_point_commands() -> list[tuple[str, list[str]]]:
    found = [script_and_arguments(words) for words in shell_commands(readme())]
    return [f for f in found if f]


def help_text(script: str) -> str:
    """`script --help`, run in this process (torch is imported once for the whole suite)."""
    out = io.StringIO()
    argv = sys.argv
    sys.argv = [script, "--help"]
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            runpy.run_path(str(ROOT / script), run_name="__main__")
    finally:
        sys.argv = argv
    return out.getvalue()


def test_readme_is_short():
    assert len(readme().splitlines()) <= MAX_README_LINES


def test_the_readme_has_the_commands_of_each_front_end():
    scripts = {script for script, _ in entry_point_commands()}
    assert {"scripts/bootstrap.sh", "demo.py", "test.py", "train.py", "viewer.py"} <= scripts
    launched = [words for words in shell_commands(readme()) if words[0] in LAUNCHERS]
    assert any("train.py" in words and any(w.startswith("--nproc_per_node") for w in words) for words in launched)


def test_every_command_runs_a_script_of_the_repository():
    missing = [script for script, _ in entry_point_commands() if not (ROOT / script).is_file()]
    assert not missing, missing


@pytest.mark.parametrize("script", sorted({s for s, _ in entry_point_commands() if s.endswith(".py")}))
def test_every_flag_the_readme_uses_is_one_the_script_accepts(script):
    accepted = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", help_text(script)))
    used = {word.split("=")[0] for s, arguments in entry_point_commands() if s == script
            for word in arguments if word.startswith("--")}
    assert used <= accepted, f"{script} --help does not list {sorted(used - accepted)}"


def test_bootstrap_flags_are_ones_it_reads():
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    flags = {w for s, arguments in entry_point_commands() if s == "scripts/bootstrap.sh" for w in arguments}
    assert all(f'"{flag}"' in bootstrap for flag in flags), flags


def test_every_repository_path_a_command_names_exists():
    missing = []
    for _, arguments in entry_point_commands():
        for word in arguments:
            value = word.split("=", 1)[-1]
            if value.startswith(USER_PATHS) or not value.startswith(REPOSITORY_DIRS):
                continue
            if not any(ROOT.glob(value.rstrip("/"))):
                missing.append(value)
    assert not missing, missing


def file_map() -> list[str]:
    """The backquoted paths of the first column of the README's 'What is here' table."""
    section = readme().split("## What is here", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return [path for row in rows for path in re.findall(r"`([^`]+)`", row)]


def test_the_file_map_matches_the_tree():
    """Every path of the README's map exists, and every tracked top-level entry is in it."""
    missing = [path for path in file_map() if not (ROOT / path).exists()]
    assert not missing, f"the README's file map names paths that do not exist: {missing}"
    try:
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    top = {line.split("/")[0] + ("/" if "/" in line else "") for line in tracked.splitlines()}
    mapped = {path.split("/")[0] + ("/" if "/" in path else "") for path in file_map()}
    unlisted = sorted(top - mapped - UNMAPPED)
    assert not unlisted, f"top-level entries missing from the README's file map: {unlisted}"


def test_every_link_and_picture_resolves():
    """Relative links and images of the README and of the pages in docs/ and weights/ name files that exist."""
    broken = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "weights" / "MODEL_CARD.md"]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_the_readme_picture_is_an_image():
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme())
    assert pictures and readme().index(pictures[0]) < len(readme()) // 4, "a picture near the top"
    with Image.open(ROOT / pictures[0]) as image:
        image.verify()


def test_the_readmes_python_example_runs(tiny_checkpoint):
    """The Python block as written, with the tiny checkpoint for ckpt.pth and a small image for lr."""
    import torch

    code = readme().split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {"lr": torch.rand(1, 3, 6, 7)}
    exec(compile(code.replace('"ckpt.pth"', repr(str(tiny_checkpoint))), "README.md", "exec"), namespace)
    assert namespace["x4"].shape == namespace["x4_plus"].shape == (1, 3, 24, 28)
    assert namespace["odd"].shape == (1, 3, 21, 16) and namespace["hd"].shape == (1, 3, 1080, 1920)
    assert torch.allclose(namespace["sr"], namespace["x4"], atol=1e-5)


def test_ci_runs_the_readme_test_command_then_the_slow_tests():
    """The README's test command is the fast default; CI runs it, then the tests that default leaves out."""
    command = ".venv/bin/python -m pytest -q"
    assert [command.split()] == [w for w in shell_commands(readme()) if w[:3] == command.split()[:3]]
    ci = [line.strip() for line in ROOT.joinpath(".ci", "run").read_text().splitlines()]
    assert ci.index(command) < ci.index(f"{command} -m slow")
    assert '-m "not slow"' in ROOT.joinpath("pytest.ini").read_text()


def test_design_references_cite_existing_sections():
    sections = set(re.findall(r"^## (\d+)\. ", ROOT.joinpath("docs", "DESIGN.md").read_text(), re.M))
    assert sections == {str(n) for n in range(1, 9)}
    try:
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    bad = []
    for name in tracked.splitlines():
        path = ROOT / name
        if not name.endswith((".py", ".md", ".yaml", ".sh")) or not path.is_file():
            continue
        text = path.read_text()
        bad += [f"{name}: a design reference without docs/DESIGN.md"] * len(re.findall(r"(?<!docs/)DESIGN(?:\.md)? §",
                                                                                          text))
        bad += [f"{name}: §{n}" for n in re.findall(r"docs/DESIGN\.md §(\d+)", text) if n not in sections]
    assert not bad, bad


@pytest.mark.slow
def test_the_quick_start_upscale_runs(tmp_path):
    """The README's first command, less the setup (the suite runs inside it), writes the x4 image."""
    words = next(w for w in shell_commands(readme()) if w[:2] == [".venv/bin/python", "demo.py"])
    out = tmp_path / "example_x4.png"
    words = [sys.executable] + words[1:words.index("--output") + 1] + [str(out)]
    subprocess.run(words, cwd=ROOT, check=True, capture_output=True, timeout=600)
    with Image.open(ROOT / "assets" / "example.png") as lr, Image.open(out) as sr:
        assert sr.size == (4 * lr.width, 4 * lr.height)


@pytest.mark.slow
def test_the_readmes_training_examples_run_on_a_cpu(tmp_path):
    """The tiny recipe's commands, one process and DDP, as printed (outputs moved into a temporary folder)."""
    runs = [w for w in shell_commands(readme()) if "configs/train/tiny.yaml" in w]
    assert len(runs) == 2
    for words in runs:
        out = tmp_path / Path(words[words.index("--out") + 1]).name
        launcher = [sys.executable] if words[0] in PYTHON else [sys.executable, "-m", "torch.distributed.run"]
        command = launcher + words[1:words.index("--out") + 1] + [str(out), "--device", "cpu"]
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=600)
        assert (out / "last.pth").is_file()
