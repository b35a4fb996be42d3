"""entry_point.py: Ctrl-C while an entry point imports torch, or while the interpreter shuts down, ends it with one
line and exit status 130, never a traceback. Each entry point runs as a program in a child process whose SIGINT
is sent by the program itself at a known moment (the first import of torch, or an atexit callback)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ["demo.py", "test.py", "train.py", "viewer.py"]
# The scripts that run their work through cli.run (every one that imports torch): the same start-up guard.
SCRIPTS = sorted(f"scripts/{p.name}" for p in (ROOT / "scripts").glob("*.py") if "cli.run(" in p.read_text())
EXIT_INTERRUPTED = 130

# Sends SIGINT to this process when `torch` is first imported, then lets the import go on.
INTERRUPT_ON_IMPORT = """
import os, signal, sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupt())
"""
# Sends SIGINT to this process from an atexit callback, as a second Ctrl-C during shutdown does.
INTERRUPT_AT_EXIT = """
import atexit, os, signal, time
atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(1)))
"""


def run_as_program(entry_point: str, prelude: str, *argv: str) -> subprocess.CompletedProcess:
    script = f"{prelude}\nimport runpy, sys\nsys.argv = {[entry_point, *argv]!r}\n" \
             f"runpy.run_path({str(ROOT / entry_point)!r}, run_name='__main__')\n"
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("entry_point", ENTRY_POINTS + SCRIPTS)
def test_ctrl_c_while_importing_is_one_line_and_status_130(entry_point):
    done = run_as_program(entry_point, INTERRUPT_ON_IMPORT, "--help")
    program = Path(entry_point).name
    assert done.returncode == EXIT_INTERRUPTED and done.stderr.splitlines() == [f"{program}: interrupted"], \
        done.stderr


@pytest.mark.parametrize("entry_point, argv", [
    ("demo.py", ["--input", "{tmp}/missing.png", "--output", "{tmp}/sr.png"]),
    ("test.py", ["--config", "{tmp}/missing.yaml"]),
    ("train.py", ["--config", "{tmp}/missing.yaml"]),
])
def test_ctrl_c_during_shutdown_is_one_line_and_no_atexit_traceback(entry_point, argv, tmp_path):
    """A run refused in one line (after its work started), then a Ctrl-C while the interpreter shuts down."""
    done = run_as_program(entry_point, INTERRUPT_AT_EXIT, *(a.format(tmp=tmp_path) for a in argv))
    lines = done.stderr.splitlines()
    assert done.returncode == EXIT_INTERRUPTED and "Traceback" not in done.stderr, done.stderr
    assert lines[-1] == f"{entry_point}: interrupted" and lines[0].startswith(f"{entry_point}: error: "), lines


def test_every_command_line_parses_with_the_one_line_parser():
    """argparse's own parser prints its usage block on an error: no entry point or script builds one."""
    programs = [ROOT / name for name in ENTRY_POINTS] + sorted((ROOT / "scripts").glob("*.py"))
    plain = [p.name for p in programs if "argparse.ArgumentParser(" in p.read_text()]
    assert not plain, plain
