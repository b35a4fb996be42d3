"""A TensorBoard writer on a full disk: the run goes on, closing gives one line of reason, nothing raises at exit."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import os, resource, signal, sys
from {module} import SummaryWriter
from training.tensorboard import close_writer, guard_writer

guarded = sys.argv[2] == "guarded"
writer = SummaryWriter(sys.argv[1])
writer = guard_writer(writer) if guarded else writer
writer.add_scalar("loss", 1.0, 0)
writer.flush()
[events] = [os.path.join(sys.argv[1], n) for n in os.listdir(sys.argv[1])]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(events), resource.RLIM_INFINITY))  # the disk is full
for step in range(1, int(sys.argv[3])):
    writer.add_scalar("loss", float(step), step)
    writer.add_image("sample", __import__("numpy").zeros((3, 64, 64)), step)
print(close_writer(writer) if guarded else writer.close())
"""


# The writers training/logger.py uses, and the package each needs.
WRITERS = [("tensorboardX", "tensorboardX"), ("torch.utils.tensorboard", "tensorboard")]


def run(tmp_path: Path, how: str, events: int, module: str = "tensorboardX") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT.replace("{module}", module), str(tmp_path / how), how,
                           str(events)], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module, package", WRITERS)
def test_a_full_disk_loses_the_charts_quietly(tmp_path, module, package):
    """Many more events than the writer's queue holds: its thread must not die (add_scalar then blocked for
    ever), and neither the close nor the exit handler may raise."""
    pytest.importorskip(package)
    done = run(tmp_path, "guarded", 200, module)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.strip() == "[Errno 27] File too large"


def test_the_writer_alone_raises_at_close_and_at_exit(tmp_path):
    """What guard_writer is for: a few events (fewer than its queue, so that it cannot hang) and a plain close."""
    pytest.importorskip("tensorboardX")
    done = run(tmp_path, "plain", 3)
    assert done.returncode != 0 and done.stderr.count("Traceback") >= 2, done.stderr
