"""What every entry point and package shares: usage errors and exit codes, `--device` / `--gpu` resolution,
the one YAML loader, atomic writes, and the spec `Registry` behind models and datasets."""
from __future__ import annotations

import contextlib
import copy
import errno
import glob
import hashlib
import importlib
import io
import multiprocessing
import os
import platform
import re
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Mapping

import torch
import yaml

# Exit statuses of every entry point (demo.py, test.py, train.py, scripts/), defined in entry_point.
from entry_point import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE  # noqa: F401

# `--device` values: auto (CUDA when available), cpu, cuda (device 0, or the process's own under torchrun), cuda:N.
DEVICE_AUTO = "auto"
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


class UsageError(Exception):
    """A request that cannot be carried out as given (bad option, input, config or file); the message is one
    line for the user, printed as `<program>: error: <message>` with exit status EXIT_USAGE."""


def resolve_device(name: str = DEVICE_AUTO, gpu: int | None = None) -> torch.device:
    """The torch device that `--device NAME` (auto, cpu, cuda or cuda:N) and the official `--gpu N` mean here.

    `--gpu N` selects CUDA device N, as the official scripts do (they set CUDA_VISIBLE_DEVICES=N): with the
    default `--device auto` it means cuda:N, with `--device cuda` too; `--device cpu` overrides it (the run stays
    on the CPU). A device that does not exist on this machine (no CUDA, an index beyond the count) is a
    UsageError, never a silent fallback.
    """
    if gpu is not None and gpu < 0:
        raise UsageError(f"--gpu must be a CUDA device number ≥ 0, got {gpu}")
    if name == DEVICE_AUTO:
        if gpu is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        name = f"cuda:{gpu}"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {name!r} (use {DEVICE_CHOICES})") from None
    if device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index not in (None, 0)):
        raise UsageError(f"unsupported device {name!r} (use {DEVICE_CHOICES})")
    if device.type == "cpu":
        return torch.device("cpu")
    if gpu is not None:
        if device.index not in (None, gpu):
            raise UsageError(f"--device {name} and --gpu {gpu} name different CUDA devices; give one of them")
        device = torch.device("cuda", gpu)
    asked = f"--gpu {gpu}" if gpu is not None else f"--device {name}"
    if not torch.cuda.is_available():
        raise UsageError(f"{asked}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"{asked}: there are only {torch.cuda.device_count()} CUDA devices")
    return device


def describe_device(device: torch.device) -> str:
    """What a measurement ran on, for its record: the GPU's name, or the CPU's model and the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        model = names[0].strip() if names else model
    return f"{model} CPU, {torch.get_num_threads()} threads"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, like SIGINT's KeyboardInterrupt: every `finally` and atomic write
    cleans up on the way out, and the entry point reports it as an interruption."""


def _raise_terminated(signum: int, frame) -> None:
    raise Terminated(f"terminated by signal {signum}")


def stop_cleanly_on_sigterm() -> None:
    """Make SIGTERM unwind the program as SIGINT does (an exception, not an abrupt exit), so that SIGINT and SIGTERM
    leave nothing half-written behind. Call once at the start of an entry point's main (main thread only)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


HUNG_UP_ERRORS = (EOFError, ConnectionError, multiprocessing.AuthenticationError)


def _quiet_when_hung_up(kind: type[BaseException], value: BaseException, traceback) -> None:
    """A loader worker's `sys.excepthook`: silent for a connection the main process hung up, else the default."""
    if not issubclass(kind, HUNG_UP_ERRORS):
        sys.__excepthook__(kind, value, traceback)


def worker_stops_cleanly(worker_id: int) -> None:
    """`worker_init_fn` of a DataLoader in a program that stops cleanly on SIGINT and SIGTERM.

    A signal sent to the whole process group (Ctrl-C, `kill -- -PGID`, a batch scheduler cancelling the job) also
    reaches the loader's workers: killed by SIGTERM, a worker made the main process raise "DataLoader worker ... is
    killed by signal" in place of the clean stop; now a worker's SIGTERM ends it as SIGINT does (the loader's worker
    loop returns quietly). A signal to the main process alone can stop it while it fetches a batch's file descriptor
    from a worker: the worker's fd-passing thread (multiprocessing.resource_sharer) then printed the broken
    connection's traceback; a worker's uncaught connection errors are now silent (the loader reports a worker's own
    failures through its queue, not through sys.excepthook)."""
    stop_cleanly_on_sigterm()
    sys.excepthook = _quiet_when_hung_up


# The C++ source location that torch puts before the reason of a failed write.
TORCH_ENFORCE_PREFIX = re.compile(r"^\[enforce fail at [^\]]*\]\s*\.?\s*")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the system tells it, else all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, without torch's C++ source location (its write errors span lines)."""
    text = " ".join(str(getattr(exc, "strerror", None) or exc).split())
    return TORCH_ENFORCE_PREFIX.sub("", text) or type(exc).__name__


class NonFiniteError(ArithmeticError):
    """A result holding NaN or infinity: an error to report, never an image to write."""


def check_finite(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """`tensor`, or NonFiniteError naming `what` if any value is NaN or infinite."""
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise NonFiniteError(f"{what} holds {bad:,} non-finite values (NaN or infinity)")
    return tensor


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` (no dot) as a float, as YAML 1.2 does (plain PyYAML reads a string), and
    refuses a key given twice in one mapping (PyYAML keeps the last silently; YAML forbids it)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, f"found the key {key!r} twice",
                        key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


REPOSITORY = Path(__file__).resolve().parent


def repository_path(path: str | os.PathLike) -> str | None:
    """`path` (absolute, or relative to the working directory) as a POSIX path within the repository, or None when
    it lies outside: what results and model cards name, so that they do not name one machine's folders."""
    resolved = Path(path).resolve()
    return resolved.relative_to(REPOSITORY).as_posix() if resolved.is_relative_to(REPOSITORY) else None


def parse_yaml(text: str) -> Any:
    """YAML text → Python values with `YamlLoader` (safe: plain data only). Raises yaml.YAMLError, also for
    nesting deeper than Python's recursion allows."""
    try:
        return yaml.load(text, Loader=YamlLoader)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None


def load_yaml(path: str | os.PathLike) -> Any:
    """The YAML file at `path` read with `parse_yaml`; a missing or unreadable file, or invalid YAML (nested deeper
    than the parser can go included), is a one-line UsageError."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:  # unreadable, or not text
        raise UsageError(f"cannot read {path} as a YAML config: {one_line(exc)}") from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None


# atomic_path's temporary files are named .<stem>.<TEMPORARY_MARK><random><suffix>, beside their target; where
# that would be longer than the folder allows, the stem is shortened and a digest of the whole name appended.
TEMPORARY_MARK = "partial-"
TEMPORARY_RANDOM_CHARS = 8  # what tempfile.mkstemp puts between the prefix and the suffix
TEMPORARY_DIGEST_CHARS = 8
NAME_MAX = 255  # a file name's length in bytes where the folder cannot tell its own (POSIX file systems' usual)
PATH_MAX = 4096  # a path's length in bytes, with its final NUL, where the system cannot tell its own (Linux's)


def _name_max(folder: Path) -> int:
    """The longest file name (in bytes) that `folder`'s file system allows."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return NAME_MAX


def _temporary_prefix(path: Path) -> str:
    """'.<stem>.<TEMPORARY_MARK>' for `path`'s temporaries, the stem shortened (with a digest of the whole name, so
    that two long names do not share one) where the temporary name would exceed the folder's longest name: a
    legal name of 240-255 characters must not be refused because its temporary is longer."""
    fixed = len(f"..{TEMPORARY_MARK}".encode()) + TEMPORARY_RANDOM_CHARS + len(path.suffix.encode())
    room = _name_max(path.parent) - fixed
    stem = path.stem
    if len(stem.encode()) > room:
        digest = hashlib.sha1(os.fsencode(path.name)).hexdigest()[:TEMPORARY_DIGEST_CHARS]
        kept = stem.encode()[:max(room - len(digest) - 1, 0)].decode(errors="ignore")
        stem = f"{kept}~{digest}"
    return f".{stem}.{TEMPORARY_MARK}"


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that atomic_path writes of `path` and that a killed process (kill -9, a power
    cut) left behind; only for a path that no other live process is writing. Returns what was removed."""
    path = Path(path)
    pattern = f"{glob.escape(_temporary_prefix(path))}*{glob.escape(path.suffix)}"
    stale = [p for p in path.parent.glob(pattern) if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _new_file_mode() -> int:
    """The mode a plain open() gives a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _path_max() -> int:
    """The longest path (in bytes, with its final NUL) that the system's calls take."""
    try:
        return os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        return PATH_MAX


def check_path(path: str | os.PathLike) -> None:
    """OSError, its strerror one line naming the problem, if `path` cannot name a file here: longer than the
    system's paths or with a name longer than its file system's, or a loop of symbolic links (the path itself or
    a folder above it). Such paths otherwise fail deep inside pathlib with a traceback; refuse them up front."""
    path = Path(path)
    length, limit = len(os.fsencode(path)), _path_max()
    if length >= limit:
        raise OSError(errno.ENAMETOOLONG, f"the path is {length:,} bytes long, above the {limit - 1:,} the system "
                                          "allows")
    existing = next((p for p in (path.parent, *path.parent.parents) if os.path.isdir(p)), Path("."))
    longest, name_max = max(len(os.fsencode(part)) for part in path.parts), _name_max(existing)
    if longest > name_max:
        raise OSError(errno.ENAMETOOLONG, f"a name in the path is {longest} bytes long, above the {name_max} its "
                                          "file system allows")
    for link in (path, *path.parents):
        if os.path.islink(link):
            try:
                link.stat()
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise OSError(errno.ELOOP, f"a loop of symbolic links at {link}", str(link)) from None


def check_writable(path: str | os.PathLike) -> None:
    """UsageError, before any work, if `path` could not be created: its nearest existing folder must take a file
    (an output named under a file, or in a read-only or pseudo file system, is refused up front)."""
    path = Path(path)
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {path}: {folder} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def _missing_folders(folder: Path) -> list[Path]:
    """The folders that making `folder` would create, deepest first."""
    missing = []
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove `folders` (deepest first) while they are empty: a failed write leaves no folder it made behind."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (another file arrived), or never made: the ones above stay too
            return


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix) to write to; flushed to disk and renamed onto `path` when the
    block succeeds, removed when it fails — so `path` is never half-written and an old file survives a failure
    (and the folders made for it are removed again, when still empty). A writer that can lose bytes silently (one writing to the descriptor itself) should use `atomic_file`.
    Raises OSError where the folder cannot be made or written, or `path` is refused by `check_path`."""
    path = Path(path)
    check_path(path)
    made = _missing_folders(path.parent)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=path.suffix, dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode())  # mkstemp makes it private; give it the permissions open() would
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        _remove_if_empty(made)
        interruption = _interruption_behind(exc)
        if interruption is not None and interruption is not exc:
            raise interruption from None
        raise


class CheckedWriter(io.RawIOBase):
    """A binary file for writing that loses nothing silently: every write goes through Python's buffered file,
    which writes all of it or raises, and it has no `fileno`, so a library cannot write to the descriptor itself
    (Pillow's encoders do when they can, and ignore a short write on a full disk). `end` is the length written."""

    def __init__(self, file: BinaryIO):
        super().__init__()
        self._file, self.end = file, 0
        self.error: OSError | None = None  # the first failed write's error, which a library may hide behind its own

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            written = self._file.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise
        self.end = max(self.end, self._file.tell())
        return written

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        self._file.flush()

    def fileno(self) -> int:
        raise io.UnsupportedOperation("writes go through CheckedWriter.write, never to the descriptor")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[CheckedWriter]:
    """`atomic_path` with the file opened for binary writing as a `CheckedWriter`: before the temporary replaces
    `path` it is flushed, synced, and its size on disk checked against what was written (OSError if short). A
    write's own OSError is what fails the block, whatever error the library made of it."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            writer = CheckedWriter(f)
            try:
                yield writer
            except Exception:
                if writer.error is not None:  # e.g. torch.save reports a full disk as "unexpected pos"
                    raise writer.error from None
                raise
            f.flush()
            os.fsync(f.fileno())
        on_disk = os.path.getsize(tmp)
        if on_disk != writer.end:
            raise OSError(errno.EIO, f"the file is incomplete ({on_disk:,} of {writer.end:,} bytes on disk; is the "
                                     "disk full?)", str(path))


def _interruption_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The SIGINT/SIGTERM interruption that `exc` was raised while handling, if any: a writer's clean-up can fail
    because the write was cut short (torch.save's zip writer reports "unexpected pos"), and that failure must not
    turn a user's Ctrl-C into a failed write."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__context__
    return None


class UnknownNameError(KeyError):
    """A spec naming nothing registered; KeyError's quoting of the message is dropped so it reads as a line."""

    def __str__(self) -> str:
        return self.args[0]


class Registry:
    """Names → constructors, built from `{'name', 'args'}` specs (the LIIF convention); `kind` names the entries
    in errors, and an unknown name raises `unknown_error` listing the known ones.

    An entry is a constructor, or a "module:attribute" string (`register_lazy`) imported on first use: a
    constructor that lives in a layer above the registry's (it imports the registry) is listed without the
    registry importing it."""

    def __init__(self, kind: str, unknown_error: type[UnknownNameError]):
        self.kind, self.unknown_error = kind, unknown_error
        self.entries: dict[str, Callable[..., Any] | str] = {}

    def register(self, name: str) -> Callable:
        """Decorator that makes a class or factory constructible by `build({'name': name, ...})`."""

        def decorator(cls):
            self._add(name, cls)
            return cls

        return decorator

    def register_lazy(self, name: str, target: str) -> None:
        """Make `build({'name': name, ...})` import "module:attribute" `target` the first time and construct it."""
        self._add(name, target)

    def _add(self, name: str, entry: Callable[..., Any] | str) -> None:
        if name in self.entries:
            raise ValueError(f"{self.kind} name {name!r} registered twice")
        self.entries[name] = entry

    def constructor(self, name: str) -> Callable[..., Any]:
        """The constructor registered as `name`, importing a lazy entry's module on first use."""
        entry = self.entries[name]
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            entry = self.entries[name] = getattr(importlib.import_module(module), attribute)
        return entry

    def build(self, spec: Mapping[str, Any], args: Mapping[str, Any] | None = None) -> Any:
        """Construct the entry `spec` names with the spec's args, updated by `args` (neither is changed)."""
        name = spec.get("name") if isinstance(spec, Mapping) else None
        if not isinstance(name, str):
            raise self.unknown_error(f"a {self.kind} spec needs a 'name' (one of {', '.join(sorted(self.entries))})")
        if name not in self.entries:
            raise self.unknown_error(f"unknown {self.kind} {name!r} (known: {', '.join(sorted(self.entries))})")
        spec_args = copy.deepcopy(dict(spec.get("args") or {}))
        spec_args.update(args or {})
        return self.constructor(name)(**spec_args)
