"""What every entry point (demo.py, test.py, train.py, viewer.py, scripts/) needs before its heavy imports, from the
standard library alone: the exit statuses, an argument parser whose errors are one line, and quiet interrupts.

Ctrl-C (SIGINT) and SIGTERM outside a command's work — while an entry point starts (importing torch and the rest
takes seconds) and while the interpreter shuts down — end the program with one line and exit status 130, never a
traceback: an entry point calls `starting` before its heavy imports; `cli.run` hands the signals to the work (where
they unwind as KeyboardInterrupt, so that atomic writes clean up) and back to the quiet exit when the work is over.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

EXIT_OK = 0
EXIT_FAILURE = 1  # the work itself failed: out of memory, a diverged training run
EXIT_USAGE = 2  # bad usage or input: one line on stderr, nothing written
EXIT_INTERRUPTED = 130  # SIGINT (128 + 2), as shells report it


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (not the usage block) with exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        """argparse's parsing, and an option given an empty value (`--model ''`) refused: no option takes one, and
        an empty path would silently mean the current folder or the default."""
        parsed, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            value = getattr(parsed, action.dest, None)
            values = value if isinstance(value, list) else [value]
            if action.option_strings and value != action.default and any(v == "" for v in values):
                self.error(f"argument {'/'.join(action.option_strings)}: expected a value, got an empty one")
        return parsed, extras


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
