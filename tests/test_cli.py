"""cli.py: what a command raises → its exit status and one line on stderr (never a traceback); one-line argument
errors."""
from __future__ import annotations

import pytest

import cli
from inference.image_io import ImageError
from models import CheckpointError, UnknownModelError
from utils import NonFiniteError, Terminated, UsageError


def raising(exc: BaseException):
    def body() -> int:
        raise exc
    return body


@pytest.mark.parametrize("exc, status, line", [
    (UsageError("bad option"), 2, "prog: error: bad option"),
    (ImageError("cannot read x.png"), 2, "prog: error: cannot read x.png"),
    (CheckpointError("not a checkpoint:\n  truncated"), 2, "prog: error: not a checkpoint: truncated"),
    (UnknownModelError("unknown model 'x'"), 2, "prog: error: unknown model 'x'"),
    (NonFiniteError("the render holds NaN"), 1, "prog: error: the render holds NaN; nothing written"),
    (cli.Failure("the disk is full"), 1, "prog: error: the disk is full"),
    (MemoryError(), 1, "prog: error: out of memory (MemoryError); try less"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"), 1,
     "prog: error: out of memory (DefaultCPUAllocator: can't allocate memory: you tried 9 GB); try less"),
    (ZeroDivisionError("division by zero"), 1, "prog: error: ZeroDivisionError: division by zero"),
    (KeyboardInterrupt(), 130, "prog: stopped"),
    (Terminated("terminated by signal 15"), 130, "prog: stopped"),
])
def test_errors_map_to_a_status_and_one_line(exc, status, line, capsys):
    code = cli.run("prog", raising(exc), non_finite="; nothing written", interrupted="stopped",
                   out_of_memory="; try less")
    captured = capsys.readouterr()
    assert code == status and captured.err.splitlines() == [line] and captured.out == ""


def test_a_commands_own_usage_errors_and_a_computed_interruption_line(capsys):
    assert cli.run("prog", raising(ValueError("bad value")), usage_errors=(ValueError,)) == 2
    assert cli.run("prog", raising(KeyboardInterrupt()), interrupted=lambda: "resume with --resume x") == 130
    assert capsys.readouterr().err.splitlines() == ["prog: error: bad value", "prog: resume with --resume x"]


def test_the_body_s_status_is_returned(capsys):
    assert cli.run("prog", lambda: 0) == 0 and cli.run("prog", lambda: 3) == 3
    assert capsys.readouterr().err == ""


def test_argument_errors_are_one_line_with_status_2_and_help_is_0(capsys):
    parser = cli.OneLineParser(prog="prog")
    parser.add_argument("--count", type=int, required=True)
    assert cli.parse(parser, ["--count", "x"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "prog: error: argument --count: invalid int value: 'x' (see --help)"]
    assert cli.parse(parser, ["--help"]) == 0 and "--count" in capsys.readouterr().out
    assert cli.parse(parser, ["--count", "3"]).count == 3


def test_warnings_during_the_work_are_one_line_and_python_s_display_comes_back(capsys):
    import warnings

    before = warnings.showwarning

    def body() -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("bf16 requested, but this CPU has none: running fp32", RuntimeWarning)
        return 0

    assert cli.run("demo.py", body) == 0
    assert capsys.readouterr().err.splitlines() == [
        "demo.py: warning: bf16 requested, but this CPU has none: running fp32"]
    assert warnings.showwarning is before
