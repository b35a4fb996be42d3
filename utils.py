"""Small helpers shared across the project that belong to no larger theme."""
from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping


def _new_file_mode() -> int:
    """The mode a plain open() gives a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix) to write to; flushed to disk and renamed onto `path` when the
    block succeeds, removed when it fails — so `path` is never half-written and an old file survives a failure.
    Raises OSError where the folder cannot be made or written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _new_file_mode())  # mkstemp makes it private; give it the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class UnknownNameError(KeyError):
    """A spec naming nothing registered; KeyError's quoting of the message is dropped so it reads as a line."""

    def __str__(self) -> str:
        return self.args[0]


class Registry:
    """Names → constructors, built from `{'name', 'args'}` specs (the LIIF convention); `kind` names the entries
    in errors, and an unknown name raises `unknown_error` listing the known ones."""

    def __init__(self, kind: str, unknown_error: type[UnknownNameError]):
        self.kind, self.unknown_error = kind, unknown_error
        self.entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable:
        """Decorator that makes a class or factory constructible by `build({'name': name, ...})`."""

        def decorator(cls):
            if name in self.entries:
                raise ValueError(f"{self.kind} name {name!r} registered twice")
            self.entries[name] = cls
            return cls

        return decorator

    def build(self, spec: Mapping[str, Any], args: Mapping[str, Any] | None = None) -> Any:
        """Construct the entry `spec` names with the spec's args, updated by `args` (neither is changed)."""
        name = spec.get("name") if isinstance(spec, Mapping) else None
        if name not in self.entries:
            raise self.unknown_error(f"unknown {self.kind} {name!r} (known: {', '.join(sorted(self.entries))})")
        spec_args = copy.deepcopy(dict(spec.get("args") or {}))
        spec_args.update(args or {})
        return self.entries[name](**spec_args)
