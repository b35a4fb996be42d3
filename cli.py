"""What every command line (demo.py, test.py, train.py, viewer.py, scripts/) shares: an argument parser whose
errors are one line, and `run`, which runs a command and maps what it raises to an exit status and one line on
stderr, never a traceback (and every warning, `<program>: warning: <message>`, one line):

    2 (EXIT_USAGE)        bad usage or input: UsageError, ImageError, CheckpointError, an unknown model or dataset
                          name, and whatever the command adds (`usage_errors`)
    1 (EXIT_FAILURE)      the work failed: a non-finite result, memory exhaustion (with advice), `Failure`, anything
                          else (its type and message)
    130 (EXIT_INTERRUPTED) SIGINT, or SIGTERM (`utils.stop_cleanly_on_sigterm`): atomic writes have cleaned up
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Callable

import torch

import entry_point
from entry_point import OneLineParser  # noqa: F401  (cli.OneLineParser: every command's parser)
from inference.image_io import ImageError
from models import CheckpointError
from utils import (EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, NonFiniteError, UnknownNameError,
                   UsageError, one_line, stop_cleanly_on_sigterm)

# What every command reports as bad usage or input.
USAGE_ERRORS: tuple[type[BaseException], ...] = (UsageError, ImageError, CheckpointError, UnknownNameError)
# The messages of memory exhaustion that torch and the allocators raise as a plain RuntimeError.
OUT_OF_MEMORY_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")


class Failure(Exception):
    """The work failed in a way the command has already explained in its message: exit status 1, one line."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` reports memory exhaustion (host or device)."""
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OUT_OF_MEMORY_MESSAGES)


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace | int:
    """The parsed arguments, or the exit status where parsing ended the command (--help: 0; an error, already
    reported on one line: 2)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or EXIT_OK)


def run(program: str, body: Callable[[], int], usage_errors: tuple[type[BaseException], ...] = (),
        non_finite: str = "", interrupted: str | Callable[[], str] = "interrupted", out_of_memory: str = "") -> int:
    """`body()`'s exit status, or the status of what it raised, reported as `<program>: error: <one line>`.

    `non_finite` is appended to a NonFiniteError's message, `out_of_memory` (advice) to memory exhaustion's;
    `interrupted` (or what it returns) is the line for SIGINT and SIGTERM. SIGTERM is made to unwind as SIGINT.
    """
    entry_point.working()
    stop_cleanly_on_sigterm()
    shown_by_python = warnings.showwarning
    warnings.showwarning = _one_line_warning(program)
    try:
        return body()
    except (*USAGE_ERRORS, *usage_errors) as exc:
        return report(program, f"error: {one_line(exc)}", EXIT_USAGE)
    except NonFiniteError as exc:
        return report(program, f"error: {one_line(exc)}{non_finite}", EXIT_FAILURE)
    except Failure as exc:
        return report(program, f"error: {one_line(exc)}", EXIT_FAILURE)
    except KeyboardInterrupt:
        return report(program, interrupted() if callable(interrupted) else interrupted, EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001  the last resort: one line, never a traceback
        if is_out_of_memory(exc):
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return report(program, f"error: out of memory ({detail}){out_of_memory}", EXIT_FAILURE)
        return report(program, f"error: {type(exc).__name__}: {one_line(exc)}", EXIT_FAILURE)
    finally:
        warnings.showwarning = shown_by_python
        entry_point.finished()


def _one_line_warning(program: str) -> Callable[..., None]:
    """A warnings.showwarning that prints `<program>: warning: <message>` on one line (Python prints two, the
    second a line of our source)."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{program}: warning: {one_line(message) if isinstance(message, Warning) else message}",
              file=sys.stderr if file is None else file)
    return show


def report(program: str, message: str, status: int) -> int:
    """Print `<program>: <message>` on stderr; returns `status`."""
    print(f"{program}: {message}", file=sys.stderr)
    return status
