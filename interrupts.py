"""Ctrl-C (SIGINT) and SIGTERM outside a command's work: while an entry point starts (importing torch and the
rest takes seconds) and while the interpreter shuts down, either ends the program with one line and exit status
130, never a traceback. Only the standard library is imported here, so that an entry point can call `starting`
before its heavy imports; `cli.run` hands the signals to the work (where they unwind as KeyboardInterrupt, so that
atomic writes clean up) and back to this quiet exit when the work is over.
"""
from __future__ import annotations

import os
import signal
import sys

EXIT_INTERRUPTED = 130
_program: str | None = None  # the entry point that asked for quiet interrupts, if any


def _quiet_exit(signum: int, frame) -> None:
    """Nothing is being written (start-up, shutdown): one line and exit 130 at once, without running atexit."""
    os.write(sys.stderr.fileno(), f"{_program}: interrupted\n".encode())
    os._exit(EXIT_INTERRUPTED)


def _install_quiet_exit() -> None:
    if _program is not None:
        signal.signal(signal.SIGINT, _quiet_exit)
        signal.signal(signal.SIGTERM, _quiet_exit)


def starting(program: str) -> None:
    """Call first in an entry point run as a program: SIGINT or SIGTERM from now until `cli.run` starts the work,
    and after it, ends `program` with one line and exit status 130."""
    global _program
    _program = program
    _install_quiet_exit()


def working() -> None:
    """The work starts: SIGINT raises KeyboardInterrupt again (SIGTERM is set by utils.stop_cleanly_on_sigterm)."""
    if _program is not None:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def finished() -> None:
    """The work is over: a Ctrl-C while the interpreter shuts down exits quietly, never an atexit traceback."""
    _install_quiet_exit()
