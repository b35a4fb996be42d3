"""atomic_path and atomic_file: a file appears whole or not at all; repository_path: a path named within the repository;
worker_stops_cleanly: a loader worker's quiet end."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from utils import (REPOSITORY, TEMPORARY_MARK, _quiet_when_hung_up, atomic_file, atomic_path, check_path,
                   remove_stale_temporaries, repository_path)


def test_success_renames_onto_the_target(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".txt" and tmp != target
        tmp.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]
    plain = tmp_path / "plain.txt"
    plain.write_text("")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not mkstemp's private 0o600


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_unwritable_folder_raises_oserror(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        with atomic_path(blocker / "out.txt"):
            pass



def test_atomic_file_refuses_a_temporary_shorter_than_what_was_written(tmp_path):
    """Bytes lost after the writer had them (a full disk that a library did not report) are caught by the size
    check before the temporary replaces anything: the old file survives."""
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="incomplete"):
        with atomic_file(target) as f:
            f.write(b"x" * 100)
            f.flush()
            [temporary] = [p for p in tmp_path.iterdir() if TEMPORARY_MARK in p.name]
            os.truncate(temporary, 60)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_file_counts_seeks_and_hides_the_descriptor(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_file(target) as f:
        f.write(b"abcdef")
        f.seek(2)
        f.write(b"XY")
        assert f.end == 6
        with pytest.raises(OSError):  # io.UnsupportedOperation: a library must write through f.write
            f.fileno()
    assert target.read_bytes() == b"abXYef"


@pytest.mark.parametrize("length", [240, 250, 255])
def test_the_longest_legal_names_can_be_written(tmp_path, length):
    """A temporary name never exceeds the folder's limit, however long the final name; two long names that share
    their first 200 characters get different temporaries, and stale ones are found again by their target."""
    name = "a" * (length - 4) + ".png"
    with atomic_path(tmp_path / name) as tmp:
        assert len(tmp.name.encode()) <= 255
        tmp.write_text("x")
    assert (tmp_path / name).read_text() == "x"
    other = tmp_path / ("a" * (length - 5) + "b.png")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / name) as first, atomic_path(other) as second:
            assert first.name.split(TEMPORARY_MARK)[0] != second.name.split(TEMPORARY_MARK)[0]
            stale = first.with_name(first.name[:-12] + "zzzzzzzz.png")
            stale.write_text("left by a killed run")
            assert sorted(remove_stale_temporaries(tmp_path / name)) == sorted([first, stale])
            assert second.exists()  # another target's temporary is not this one's
            raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_multibyte_names_stay_within_the_byte_limit(tmp_path):
    name = "é" * 125 + ".png"  # 254 bytes
    with atomic_path(tmp_path / name) as tmp:
        assert len(tmp.name.encode()) <= 255
        tmp.write_text("x")
    assert (tmp_path / name).exists()


def test_a_symlink_loop_is_refused_and_left_alone(tmp_path):
    (tmp_path / "a.png").symlink_to("b.png")
    (tmp_path / "b.png").symlink_to("a.png")
    with pytest.raises(OSError) as raised:
        with atomic_path(tmp_path / "a.png"):
            pass
    assert raised.value.errno == errno.ELOOP and "loop" in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"] and (tmp_path / "a.png").is_symlink()
    with pytest.raises(OSError, match="loop of symbolic links"):  # a folder on the way that is a loop
        with atomic_path(tmp_path / "a.png" / "deeper" / "out.png"):
            pass

def test_registry_builds_from_specs_and_refuses_duplicates_and_unknown_names():
    from utils import Registry, UnknownNameError

    class Unknown(UnknownNameError):
        pass

    registry = Registry("widget", Unknown)
    registry.register("pair")(lambda a, b=2: (a, b))
    spec = {"name": "pair", "args": {"a": 1}}
    assert registry.build(spec) == (1, 2)
    assert registry.build(spec, {"b": 5}) == (1, 5) and spec == {"name": "pair", "args": {"a": 1}}
    with pytest.raises(ValueError, match="widget name 'pair' registered twice"):
        registry.register("pair")(tuple)
    with pytest.raises(Unknown, match="unknown widget 'nope' \\(known: pair\\)"):
        registry.build({"name": "nope"})


def test_a_lazy_registry_entry_imports_its_module_on_first_build():
    import sys

    from utils import Registry, UnknownNameError

    registry = Registry("widget", UnknownNameError)
    registry.register_lazy("fraction", "fractions:Fraction")
    sys.modules.pop("fractions", None)
    assert "fractions" not in sys.modules and "fraction" in registry.entries
    assert registry.build({"name": "fraction", "args": {"numerator": 3, "denominator": 6}}) == 0.5
    assert "fractions" in sys.modules and registry.entries["fraction"] is sys.modules["fractions"].Fraction
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("fraction")(tuple)


@pytest.fixture
def two_fake_gpus(monkeypatch):
    """CUDA faked present with two devices: resolve_device only asks torch.cuda whether they exist."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_resolve_device_maps_the_official_gpu_flag_onto_cuda_n(two_fake_gpus):
    import torch

    from utils import UsageError, resolve_device

    assert resolve_device("auto", 1) == torch.device("cuda", 1)
    assert resolve_device("cuda", 1) == torch.device("cuda", 1)
    assert resolve_device("cuda:1", 1) == torch.device("cuda", 1)
    assert resolve_device("cpu", 1) == torch.device("cpu")  # --device cpu overrides --gpu
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(UsageError, match="different CUDA devices"):
        resolve_device("cuda:0", 1)
    with pytest.raises(UsageError, match="--gpu 2: there are only 2 CUDA devices"):
        resolve_device("auto", 2)
    with pytest.raises(UsageError, match="--device cuda:5: there are only 2"):
        resolve_device("cuda:5")
    with pytest.raises(UsageError, match="--gpu must be"):
        resolve_device("auto", -1)


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "meta", "cpu:1", ""])
def test_resolve_device_refuses_unknown_devices(name):
    from utils import UsageError, resolve_device

    with pytest.raises(UsageError, match="device"):
        resolve_device(name)


def test_resolve_device_without_cuda(monkeypatch):
    import torch

    from utils import UsageError, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu", 0) == torch.device("cpu")
    for name, gpu, asked in (("cuda", None, "--device cuda"), ("auto", 0, "--gpu 0"), ("cuda:1", None, "cuda:1")):
        with pytest.raises(UsageError, match=f"{asked}: CUDA is not available here"):
            resolve_device(name, gpu)


def test_one_yaml_loader_reads_exponents_as_floats(tmp_path):
    from utils import UsageError, load_yaml, parse_yaml

    assert parse_yaml("lr: 1e-4\nb: 2.5E+3\nc: 1.0e-4\nn: 7\nname: 1e") == {"lr": 1e-4, "b": 2500.0, "c": 1e-4, "n": 7,
                                                                           "name": "1e"}
    (tmp_path / "a.yaml").write_text("optimizer: {args: {lr: 2e-4}}")
    assert load_yaml(tmp_path / "a.yaml") == {"optimizer": {"args": {"lr": 2e-4}}}
    with pytest.raises(UsageError, match="config not found"):
        load_yaml(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("a: [unclosed")
    with pytest.raises(UsageError, match="bad.yaml is not valid YAML"):
        load_yaml(tmp_path / "bad.yaml")


class _InterruptedAfter:
    """A binary file that raises SIGTERM's exception on its `n`-th write, as the signal handler would mid-save."""

    def __init__(self, f, n: int):
        self.f, self.left = f, n

    def write(self, data):
        self.left -= 1
        if self.left == 0:
            from utils import Terminated
            raise Terminated("terminated by signal 15")
        return self.f.write(data)

    def flush(self):
        self.f.flush()


def test_an_interrupted_torch_save_is_reported_as_the_interruption_not_a_failed_write(tmp_path):
    """torch.save's zip writer fails on its way out ("unexpected pos") when a signal cuts a write short; the user
    pressed Ctrl-C (or sent SIGTERM), so the interruption is what must come out, with no temporary left."""
    import torch

    from utils import Terminated

    target = tmp_path / "last.pth"
    target.write_bytes(b"old")
    payload = {"a": torch.zeros(1000), "b": torch.ones(1000)}
    with pytest.raises(Terminated, match="signal 15"):
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            torch.save(payload, _InterruptedAfter(f, 5))
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]
    with pytest.raises(RuntimeError, match="boom"):  # a failure with no interruption behind it stays a failure
        with atomic_path(target):
            try:
                raise ValueError("first")
            except ValueError:
                raise RuntimeError("boom")


def test_repository_path_names_a_path_inside_the_repository_and_none_outside(tmp_path, monkeypatch):
    assert repository_path(REPOSITORY / "configs" / "train" / "tiny.yaml") == "configs/train/tiny.yaml"
    monkeypatch.chdir(REPOSITORY / "configs")
    assert repository_path("train/../train/tiny.yaml") == "configs/train/tiny.yaml"  # from the working dir
    assert repository_path(tmp_path / "x.pth") is None
    assert repository_path(REPOSITORY / ".." / "x.pth") is None


HANG_UP_ON_AN_FD_REQUEST = textwrap.dedent("""
    import os, socket, sys, time
    import multiprocessing.resource_sharer as resource_sharer
    import utils
    if sys.argv[1] == "worker":
        utils.worker_stops_cleanly(0)
    shared = resource_sharer.DupFd(os.open(os.devnull, os.O_RDONLY))  # as a worker shares a batch's storage
    address, _ = shared._id
    with socket.socket(socket.AF_UNIX) as peer:  # the main process, stopped by a signal mid-request
        peer.connect(address)
    time.sleep(0.5)  # the fd-passing thread meets the closed connection
""")


@pytest.mark.parametrize("process", ["plain", "worker"])
def test_a_worker_is_silent_when_the_main_process_hangs_up_on_an_fd_request(process):
    done = subprocess.run([sys.executable, "-c", HANG_UP_ON_AN_FD_REQUEST, process], cwd=REPOSITORY,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    if process == "worker":
        assert done.stderr == ""
    else:  # what a test.py stopped while fetching a batch printed, one run in ten to twenty
        assert "Traceback" in done.stderr and "resource_sharer.py" in done.stderr


def test_a_workers_other_uncaught_errors_are_still_reported(capsys):
    try:
        raise ValueError("a real failure")
    except ValueError as exc:
        _quiet_when_hung_up(type(exc), exc, exc.__traceback__)
    assert "ValueError: a real failure" in capsys.readouterr().err


def test_a_failed_write_removes_the_folders_it_made_and_keeps_the_others(tmp_path):
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "kept" / "new" / "deeper" / "out.png"):
            raise RuntimeError("the render failed")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["kept"]
    (tmp_path / "kept" / "new").mkdir()
    (tmp_path / "kept" / "new" / "other.png").write_text("written before")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "kept" / "new" / "deeper" / "out.png"):
            raise RuntimeError("the render failed")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "kept", "kept/new", "kept/new/other.png"]


def test_a_failed_write_is_reported_as_itself_not_as_what_a_library_made_of_it(tmp_path):
    """torch.save turns a full disk into "unexpected pos ..."; through atomic_file it is the disk's own error."""
    script = textwrap.dedent(f"""
        import resource, signal, torch
        from utils import atomic_file
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
        try:
            with atomic_file({str(tmp_path / "w.pth")!r}) as f:
                torch.save({{"w": torch.zeros(100_000)}}, f)
        except OSError as exc:
            print(exc.strerror)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPOSITORY, capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "File too large", done.stderr
    assert list(tmp_path.iterdir()) == []


def test_paths_the_system_cannot_take_are_named_before_anything_is_made(tmp_path):
    """A 256-byte name, a 6,000-byte path: one line saying which, and no folder made (pathlib raised midway)."""
    for path, message in ((tmp_path / ("n" * 252 + ".png"), "a name in the path is 256 bytes long"),
                          (tmp_path.joinpath(*["d"] * 3000, "x.png"), "bytes long, above the")):
        with pytest.raises(OSError) as raised:
            check_path(path)
        assert raised.value.errno == errno.ENAMETOOLONG and message in raised.value.strerror
        with pytest.raises(OSError, match=message):
            with atomic_path(path):
                pass
    assert list(tmp_path.iterdir()) == []
    check_path(tmp_path / ("n" * 251 + ".png"))  # 255 bytes: legal


@pytest.mark.parametrize("content, message", [(b"\xff\xfe\x00 not text", "cannot read"),
                                              (b"[" * 5000 + b"]" * 5000, "nested too deeply")])
def test_a_config_that_is_not_yaml_text_is_one_usage_error(tmp_path, content, message):
    from utils import UsageError, load_yaml

    (tmp_path / "c.yaml").write_bytes(content)
    with pytest.raises(UsageError, match=message):
        load_yaml(tmp_path / "c.yaml")
