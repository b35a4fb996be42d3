"""Ahead-of-time compilation of the Triton kernels for real GPU targets, on a machine with no GPU and no driver.

Triton's interpreter (how the tests run the kernels on a CPU) accepts code that its compiler rejects, so the
kernels are also compiled here for real targets — `triton.compile(ASTSource(...), target=GPUTarget(...))`
touches no driver, and the triton wheel ships its own ptxas. Each kernel is compiled exactly as its wrapper
launches it (`triton_backend.forward_launch` / `backward_launch`: the same arguments and constexprs), with the
argument specialisations the JIT would pick (`CASES`): integers equal to 1 become constexprs, integers divisible
by 16 and 16-byte-aligned pointers get a divisibility hint.

Supported Triton versions: 3.5 to 3.9 (every build checked with 3.5.1, 3.6.0, 3.7.1, 3.8.0 and 3.9.0): `ASTSource`
with a name-keyed signature and constexprs, attributes from the backend's own `parse_attr`; the int hint rule is
`get_arg_specialization` before 3.6. (3.4 compiles too, but prints no ptxas log, so registers go unreported.)
Import this module with TRITON_INTERPRET unset: under the interpreter `@triton.jit` makes functions that the
compiler cannot take (tests run it in a subprocess for that reason).
"""
from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass
from typing import Callable

import torch
import triton

from . import footprints, triton_backend

CAPABILITIES = (80, 90)  # sm_80 (A100) and sm_90 (H100/H200)
CHANNELS = tuple(range(1, triton_backend.MAX_CHANNELS + 1))
WARP_SIZE = 32
INT32_RANGE = range(-2 ** 31, 2 ** 31)
POINTER_TYPES = {torch.float32: "*fp32", torch.int32: "*i32", torch.int64: "*i64"}
# The JIT hints divisibility by this many (ints) and bytes (pointers), as `BaseBackend.parse_attr("D")`.
DIVISIBILITY_HINT = "D"
OLDEST_TRITON = (3, 5)


@dataclass(frozen=True)
class Case:
    """A launch as the JIT sees it: output size, lattice size (its Gaussians are the kernels' lanes), and whether
    pointers are 16-byte aligned."""

    height: int
    width: int
    lattice_h: int
    lattice_w: int
    aligned: bool


CASES = {
    "no-hints": Case(21, 27, 7, 9, aligned=False),  # odd sizes, unaligned pointers: no specialisation at all
    "aligned": Case(64, 96, 16, 32, aligned=True),  # every pointer and int 16-divisible
    "ones": Case(1, 1, 1, 1, aligned=True),  # every int equal to 1: each becomes a constexpr
    "height-1": Case(1, 64, 2, 32, aligned=True),  # a 1-pixel-high render
    "width-1": Case(64, 1, 32, 2, aligned=True),  # a 1-pixel-wide render
}


def _meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(*shape, device="meta", dtype=dtype)


def _lattice(case: Case, channels: int) -> tuple[footprints.Plan, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The plan (one image's Gaussians as lanes), means, factors and colours of a case, as meta tensors."""
    lattice = (1, case.lattice_h, case.lattice_w)
    lanes = case.lattice_h * case.lattice_w
    work = footprints.Plan(_meta(lanes, footprints.INT_FIELDS, dtype=torch.int32),
                           _meta(lanes, footprints.FLOAT_FIELDS), _meta(-(-lanes // footprints.BLOCK),
                                                                       dtype=torch.int32))
    return work, _meta(*lattice, 2), _meta(*lattice, 3), _meta(*lattice, channels)


def _forward(case: Case, channels: int) -> triton_backend.Launch:
    work, means, factors, colours = _lattice(case, channels)
    return triton_backend.forward_launch(work, means, factors, colours, _meta(1),
                                         _meta(1, channels, case.height, case.width, dtype=torch.int64))


def _backward(case: Case, channels: int) -> triton_backend.Launch:
    work, means, factors, colours = _lattice(case, channels)
    return triton_backend.backward_launch(work, means, factors, colours, _meta(1, channels, case.height, case.width),
                                          _meta(*means.shape), _meta(*factors.shape), _meta(*colours.shape))


KERNELS: dict[str, tuple[object, Callable[[Case, int], triton_backend.Launch]]] = {
    "forward": (triton_backend._forward_kernel, _forward),
    "backward": (triton_backend._backward_kernel, _backward),
}


class UnsupportedTriton(RuntimeError):
    """The installed Triton is older than the oldest version this module supports."""


def check_triton() -> None:
    version = tuple(int(v) for v in re.findall(r"\d+", triton.__version__)[:2])
    if version < OLDEST_TRITON:
        raise UnsupportedTriton(f"triton {triton.__version__} is older than the oldest supported, "
                                f"{'.'.join(map(str, OLDEST_TRITON))}")
    if not hasattr(triton_backend._forward_kernel, "arg_names"):
        raise UnsupportedTriton("the kernels are interpreted (TRITON_INTERPRET=1): unset it to compile them")


def _int_hint(backend, value: int) -> str:
    """The JIT's divisibility hint for an int argument, by the backend's own rule (named differently before 3.6)."""
    if hasattr(backend, "get_int_specialization"):
        return backend.get_int_specialization(value, align=True)
    return backend.get_arg_specialization(value, "int", align=True)


def specialise(kernel, args: tuple, constexprs: dict[str, int], aligned: bool, backend) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) for `ASTSource`, specialised as the JIT specialises these arguments."""
    runtime_names = [name for name in kernel.arg_names if name not in constexprs]
    if len(runtime_names) != len(args):
        raise ValueError(f"{kernel.__name__} takes {len(runtime_names)} runtime arguments, the launch gives "
                         f"{len(args)}")
    values = dict(zip(runtime_names, args))
    signature, constants, attrs = {}, {}, {}
    for index, name in enumerate(kernel.arg_names):
        if name in constexprs:
            signature[name], constants[name] = "constexpr", constexprs[name]
            continue
        value = values[name]
        if isinstance(value, torch.Tensor):
            signature[name] = POINTER_TYPES[value.dtype]
            hint = DIVISIBILITY_HINT if aligned else ""
        elif value == 1:  # the JIT's rule: an int equal to 1 is folded into the kernel as a constexpr
            signature[name], constants[name] = "constexpr", 1
            continue
        else:
            signature[name] = "i32" if value in INT32_RANGE else "i64"
            hint = _int_hint(backend, value)
        if hint:
            attrs[(index,)] = backend.parse_attr(hint)
    return signature, constants, attrs


@dataclass
class Build:
    """One kernel compiled for one target: its registers and spills come from ptxas's own log."""

    kernel: str
    case: str
    channels: int
    capability: int
    ok: bool
    error: str = ""
    registers: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None


def _usage(ptxas_log: str) -> dict[str, int]:
    registers = re.findall(r"Used (\d+) registers", ptxas_log)
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", ptxas_log)
    usage = {}
    if registers:
        usage["registers"] = int(registers[-1])
    if spills:
        usage["spill_stores"], usage["spill_loads"] = (int(v) for v in spills[-1])
    return usage


def compile_build(kernel_name: str, case_name: str, channels: int, capability: int) -> Build:
    """Compile one build; a failure is recorded (error: the exception's type, location and cause), not raised.

    Register and spill counts are read from ptxas's log, which Triton prints only when it compiles (not on a
    cache hit): point TRITON_CACHE_DIR at an empty folder to get them.
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    kernel, launch = KERNELS[kernel_name]
    case = CASES[case_name]
    target = GPUTarget("cuda", capability, WARP_SIZE)
    _, args, constexprs, options = launch(case, channels)
    signature, constants, attrs = specialise(kernel, args, constexprs, case.aligned, make_backend(target))
    log = io.StringIO()
    previous = os.environ.get("TRITON_DUMP_PTXAS_LOG")
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
    try:
        with contextlib.redirect_stdout(log):
            triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attrs),
                           target=target, options=options)
    except Exception as exc:  # any compiler failure is the finding: recorded, never swallowed silently
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [""]
        # A CompilationError reads "at L:C:", the source, then the cause: keep the first and last lines.
        detail = lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"
        return Build(kernel_name, case_name, channels, capability, ok=False, error=f"{type(exc).__name__} {detail}")
    finally:
        if previous is None:
            os.environ.pop("TRITON_DUMP_PTXAS_LOG", None)
        else:
            os.environ["TRITON_DUMP_PTXAS_LOG"] = previous
    return Build(kernel_name, case_name, channels, capability, ok=True, **_usage(log.getvalue()))
