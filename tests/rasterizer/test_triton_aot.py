"""The Triton kernels compile for real GPU targets (sm_80, sm_90) ahead of time, on a CPU with no driver.

The interpreter the other Triton tests use accepts code that the compiler rejects (a 1-pixel-high render once
crashed on every GPU that way), so here each kernel is compiled as its wrapper launches it, specialised as the
JIT specialises arguments. Compiling runs in a subprocess (scripts/triton_aot_report.py): this process has
TRITON_INTERPRET=1, under which kernels cannot be compiled.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rasterizer

pytestmark = pytest.mark.skipif("triton" not in rasterizer.BACKENDS, reason="triton is not installed")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "triton_aot_report.py"
FULL_MATRIX_TIMEOUT_S = 1800


def compile_matrix(tmp_path: Path, *options: str, timeout: float = 600) -> tuple[int, list[dict], str]:
    """Run the report script on a matrix; (exit code, builds, output)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp_path / "builds.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), *options, "--json", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    builds = json.loads(out.read_text())["builds"] if out.exists() else []
    return proc.returncode, builds, proc.stdout + proc.stderr


def assert_all_compiled(code: int, builds: list[dict], output: str, expected: int) -> None:
    failed = [f"{b['kernel']} {b['case']} C={b['channels']} sm_{b['capability']}: {b['error']}"
              for b in builds if not b["ok"]]
    assert not failed, "\n".join(failed)
    assert code == 0 and len(builds) == expected, output[-2000:]
    assert all(b["registers"] and b["registers"] > 0 for b in builds)  # ptxas really ran for each


def test_kernels_compile_with_every_size_equal_to_one(tmp_path):
    """The representative fast subset: both kernels, three channels, every int argument a constexpr 1, sm_90."""
    code, builds, output = compile_matrix(tmp_path, "--cases", "ones", "--channels", "3", "--capabilities", "90")
    assert_all_compiled(code, builds, output, expected=2)
    assert {b["kernel"] for b in builds} == {"forward", "backward"}


@pytest.mark.slow
def test_every_kernel_case_channel_count_and_target_compiles(tmp_path):
    from rasterizer import triton_aot

    code, builds, output = compile_matrix(tmp_path, timeout=FULL_MATRIX_TIMEOUT_S)
    expected = {(k, c, ch, cap) for k in triton_aot.KERNELS for c in triton_aot.CASES for ch in triton_aot.CHANNELS
                for cap in triton_aot.CAPABILITIES}
    assert {(b["kernel"], b["case"], b["channels"], b["capability"]) for b in builds} == expected
    assert_all_compiled(code, builds, output, expected=len(expected))


def test_bad_options_exit_2(tmp_path):
    code, builds, output = compile_matrix(tmp_path, "--channels", "9", timeout=120)
    assert code == 2 and not builds and "--channels" in output and "Traceback" not in output


def test_specialisation_follows_the_jit():
    """Every int argument as the JIT's own specialiser sees it; pointers hinted exactly when aligned."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend, GPUTarget
    from triton.compiler import make_backend

    from rasterizer import triton_aot

    backend = make_backend(GPUTarget("cuda", 90, 32))
    hint = backend.parse_attr("D")
    for kernel_name, (kernel, launch) in triton_aot.KERNELS.items():
        for case_name, case in triton_aot.CASES.items():
            _, args, constexprs, _ = launch(case, 3)
            signature, constants, attrs = triton_aot.specialise(kernel, args, constexprs, case.aligned, backend)
            assert list(signature) == list(kernel.arg_names)
            runtime = [name for name in kernel.arg_names if name not in constexprs]
            for name, value in zip(runtime, args):
                index = (kernel.arg_names.index(name),)
                if isinstance(value, int):
                    kind, jit_hint = native_specialize_impl(BaseBackend, value, False, True, True)
                    assert signature[name] == kind, (kernel_name, case_name, name)
                    if kind == "constexpr":
                        assert constants[name] == value == 1 and index not in attrs
                    else:
                        assert attrs.get(index, []) == (hint if jit_hint == "D" else []), (case_name, name)
                else:
                    assert signature[name] == triton_aot.POINTER_TYPES[value.dtype]
                    assert attrs.get(index, []) == (hint if case.aligned else [])
            assert {k: constants[k] for k in constexprs} == constexprs
    kernel, launch = triton_aot.KERNELS["forward"]
    _, args, constexprs, _ = launch(triton_aot.CASES["ones"], 2)
    signature = triton_aot.specialise(kernel, args, constexprs, True, backend)[0]
    assert {name for name, kind in signature.items() if kind == "constexpr"} == {"H", "W", "cells", "N", *constexprs}
