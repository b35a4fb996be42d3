"""A TensorBoard writer that a full disk cannot turn into tracebacks or a hang.

A SummaryWriter (tensorboardX's, or torch's own) keeps its events in a buffered file written by a background thread, flushed by
that thread, by `close()`, and again by an exit handler it registers. Once the disk is full each of these raised:
the thread died with a traceback (after which `add_scalar` blocks for ever on its full queue), `close()` raised
after the run's own one-line error, and the exit handler raised again. `guard_writer` puts each event file behind
`_GuardedFile`, which turns the first write error into a recorded reason and discards what follows, so the thread
lives on and nothing raises; `close_writer` closes and returns that reason. The charts are a convenience: log.txt
holds every number they show.
"""
from __future__ import annotations

import os
from typing import Any, BinaryIO


class _GuardedFile:
    """An event file that records its first write error (and drops its buffer) instead of raising it; from then
    on it takes writes and keeps nothing."""

    def __init__(self, file: BinaryIO):
        self.file, self.error = file, None

    def _fail(self, exc: Exception) -> None:
        self.error = " ".join(str(exc).split()) or type(exc).__name__
        raw = getattr(self.file, "raw", None)
        if raw is not None:
            raw.close()  # the buffered file now counts as closed: it never tries to flush its buffer again

    def _attempt(self, action) -> None:
        if self.error is None:
            try:
                action()
            except (OSError, ValueError) as exc:
                self._fail(exc)

    def write(self, data: bytes) -> int:
        self._attempt(lambda: self.file.write(data))
        return len(data)

    def flush(self) -> None:
        def flush_and_sync() -> None:
            self.file.flush()
            if hasattr(self.file, "fileno"):  # tensorboard's GFile has none: its flush writes through
                os.fsync(self.file.fileno())

        self._attempt(flush_and_sync)

    def close(self) -> None:
        self._attempt(self.file.close)


def _event_files(writer: Any) -> list[Any]:
    """The record writers (each holding one event file in `_writer`) of a SummaryWriter, tensorboardX's or torch's
    (torch.utils.tensorboard, which writes through the tensorboard package); none for another kind."""
    records = []
    for file_writer in (getattr(writer, "all_writers", None) or {}).values():
        event_writer = getattr(file_writer, "event_writer", None)
        tensorboard_x = getattr(getattr(event_writer, "_ev_writer", None), "_py_recordio_writer", None)
        torch_own = getattr(getattr(event_writer, "_async_writer", None), "_writer", None)
        record_writer = tensorboard_x if tensorboard_x is not None else torch_own
        if record_writer is not None and hasattr(record_writer, "_writer"):
            records.append(record_writer)
    return records


def guard_writer(writer: Any) -> Any:
    """`writer` with each of its event files behind a `_GuardedFile`; returned for use as it was."""
    for records in _event_files(writer):
        if not isinstance(records._writer, _GuardedFile):
            records._writer = _GuardedFile(records._writer)
    return writer


def close_writer(writer: Any) -> str | None:
    """Close a SummaryWriter; None when every event was written, else why they were not (one line)."""
    files = [records._writer for records in _event_files(writer) if isinstance(records._writer, _GuardedFile)]
    writer.close()
    return next((f.error for f in files if f.error is not None), None)
