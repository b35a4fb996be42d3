"""Rasterization of the head's Gaussian lattice: one `rasterize` entry point over swappable backends.

Semantics (docs/DESIGN.md §4): out(p) = Σ_g colour_g · α_g(p) with α = exp(−σ), drawn iff σ ≥ 0 and
α ≥ 1/255 — a plain sum, no ordering, no background. Every backend computes exactly this sum at every scale.

`auto` never breaks a render: a backend with a probe (Triton) is picked only once its probe has compiled and run
it on the device; if it cannot (a Triton, driver or architecture mismatch), `auto` takes the next backend and
says why in one warning, once per process and device. Asking for a backend by name never falls back.
"""
from __future__ import annotations

import functools
import importlib.util
import warnings
from types import ModuleType
from typing import Callable

import torch

from utils import UsageError

from .lattice import lattice_points_torch
from .projection import ALPHA_MIN, SIGMA_MAX, ProjectedGaussians, project  # noqa: F401
from .torch_backend import rasterize_torch

# A backend sums projected Gaussians (`project`'s output) or, if it projects them itself, takes `rasterize`'s
# inputs (xy, cholesky, colour) as they are.
Backend = Callable[..., torch.Tensor]
Probe = Callable[[torch.device], None]


class BackendInfo:
    """A registered backend: its function, the devices it can run on, those `auto` may pick it for, the probe
    (raises if the backend cannot run on a device) that `auto` runs once per device before picking it, and
    whether it projects the Gaussians itself (fn(xy, cholesky, colour, H, W) instead of fn(projected, H, W))."""

    def __init__(self, fn: Backend, supports: Callable[[torch.device], bool], auto_device_types: tuple[str, ...],
                 probe: Probe | None = None, projects: bool = False):
        self.fn, self.supports, self.auto_device_types, self.probe = fn, supports, auto_device_types, probe
        self.projects = projects


BACKENDS: dict[str, BackendInfo] = {}
# `auto` tries these in order and takes the first registered for the tensors' device type.
AUTO_ORDER = ("triton", "numba", "torch")
# (backend, device) → why its probe failed there ("" when it passed): each probe runs once per process.
PROBED: dict[tuple[str, str], str] = {}


def register_backend(name: str, fn: Backend, supports: Callable[[torch.device], bool] = lambda device: True,
                     auto_device_types: tuple[str, ...] = ("cpu", "cuda", "mps", "xpu"),
                     probe: Probe | None = None, projects: bool = False) -> None:
    """Make a backend selectable by name, and by `auto` (if listed in AUTO_ORDER) on `auto_device_types`."""
    BACKENDS[name] = BackendInfo(fn, supports, auto_device_types, probe, projects)


def probe_failure(name: str, device: torch.device) -> str:
    """Why backend `name` cannot run on `device` ("" if it can), from its probe, run once per process and device;
    a failure is reported in one warning line the first time."""
    info = BACKENDS[name]
    key = (name, str(device))
    if info.probe is None:
        return ""
    if key not in PROBED:
        try:
            info.probe(device)
            PROBED[key] = ""
        except Exception as exc:  # whatever stops the backend here (compiler, driver, ...) is the reason to report
            first_line = (str(exc).strip().splitlines() or [""])[0]
            PROBED[key] = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
            warnings.warn(f"rasterizer: the {name} backend cannot run on {device} ({PROBED[key]}); "
                          f"'auto' uses the next backend instead", RuntimeWarning, stacklevel=2)
    return PROBED[key]


register_backend("torch", rasterize_torch)
try:  # Triton is optional: present on CUDA machines, absent on plain CPU installs.
    from .triton_backend import probe as _triton_probe, rasterize_triton, supports as _triton_supports
except ImportError:
    pass
else:
    # On the CPU it runs only under TRITON_INTERPRET=1 (for tests): never an `auto` choice there.
    register_backend("triton", rasterize_triton, _triton_supports, auto_device_types=("cuda",),
                     probe=_triton_probe)


@functools.cache
def _numba_module() -> ModuleType | None:
    """The numba backend, imported on first use (numba's import takes a while); None where numba is absent or
    cannot be imported (e.g. built for another NumPy), so that `auto` falls back to torch."""
    try:
        from . import numba_backend
    except ImportError:
        return None
    return numba_backend


def _numba_supports(device: torch.device) -> bool:
    module = _numba_module()
    return module is not None and module.supports(device)


def _rasterize_numba(xy: torch.Tensor, cholesky: torch.Tensor, colour: torch.Tensor, height: int,
                     width: int) -> torch.Tensor:
    return _numba_module().rasterize_numba(xy, cholesky, colour, height, width)


def lattice_points(offset: torch.Tensor, cholesky: torch.Tensor, rows: tuple[int, int], cols: tuple[int, int],
                   consts: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The rasterizer's centres xy (B, r, c, 2) and factors (B, r, c, 3) of the lattice block `rows` x `cols`
    ((first, stop) cells) of a field's offset (B, Hg, Wg, 2) and Cholesky factors (B, Hg, Wg, 3), by
    `lattice.centre`; consts: (factor, left, top, win_w, win_h, 1/W, 1/H, s_x, s_y) as Python numbers.

    CPU tensors in float32 or float64 that need no gradient take the numba backend's one compiled pass where numba
    is importable (the same numbers, bit for bit: on the CPU ~15 tensor operations on (…, 2|3)-shaped tensors
    take ~0.3 ms, as long as an x4 render's whole sum); everything else takes torch operations."""
    needs_grad = torch.is_grad_enabled() and (offset.requires_grad or cholesky.requires_grad)
    if offset.device.type == "cpu" and offset.dtype in (torch.float32, torch.float64) and not needs_grad:
        module = _numba_module()
        if module is not None:
            return module.lattice_points(offset, cholesky, rows, cols, consts)
    return lattice_points_torch(offset, cholesky, rows, cols, consts)


if importlib.util.find_spec("numba") is not None:  # the compiled CPU backend, `auto` there; it projects itself
    register_backend("numba", _rasterize_numba, _numba_supports, auto_device_types=("cpu",), projects=True)
try:  # The official rasterizer (the GaussianImage gsplat fork): only where it is installed, only by name.
    from .gsplat_backend import rasterize_gsplat, supports as _gsplat_supports
except ImportError:
    pass
else:
    register_backend("gsplat", rasterize_gsplat, _gsplat_supports, auto_device_types=())


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend name `rasterize` will use for `backend` on `device`; a clear error if it cannot."""
    if backend == "auto":
        for name in AUTO_ORDER:
            info = BACKENDS.get(name)
            if (info is not None and device.type in info.auto_device_types and info.supports(device)
                    and not probe_failure(name, device)):
                return name
    if backend not in BACKENDS:
        raise ValueError(f"unknown rasterizer backend {backend!r} (available: auto, {', '.join(sorted(BACKENDS))})")
    if not BACKENDS[backend].supports(device):
        raise ValueError(f"rasterizer backend {backend!r} cannot run on {device}")
    return backend


def check_backend(backend: str, device: torch.device) -> str:
    """A `--backend` (or a config's rasterizer_backend) checked against `device` before any work: the name as
    given, or a one-line UsageError. 'auto' needs no check (torch runs everywhere) and stays 'auto', resolved
    per call: no backend is imported or probed at start-up."""
    if backend == "auto":
        return backend
    try:
        resolve_backend(backend if isinstance(backend, str) else repr(backend), device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return backend


def rasterize(xy: torch.Tensor, cholesky: torch.Tensor, colour: torch.Tensor, height: int, width: int,
              backend: str = "auto") -> torch.Tensor:
    """Render a Gaussian lattice to a (B, C, height, width) image.

    xy: (B, Hg, Wg, 2) normalised centres (x first); cholesky: (B, Hg, Wg, 3) factors (l11, l21, l22) in output
    pixels; colour: (B, Hg, Wg, C). Differentiable with respect to all three.
    """
    if xy.ndim != 4 or xy.shape[-1] != 2:
        raise ValueError(f"xy must be (B, Hg, Wg, 2), got {tuple(xy.shape)}")
    if cholesky.shape[:-1] != xy.shape[:-1] or cholesky.shape[-1] != 3:
        raise ValueError(f"cholesky must be {tuple(xy.shape[:-1]) + (3,)}, got {tuple(cholesky.shape)}")
    if colour.shape[:-1] != xy.shape[:-1]:
        raise ValueError(f"colour must be {tuple(xy.shape[:-1])} + (C,), got {tuple(colour.shape)}")
    if height <= 0 or width <= 0:
        raise ValueError(f"output size must be positive, got {height}x{width}")
    info = BACKENDS[resolve_backend(backend, xy.device)]
    if info.projects:
        return info.fn(xy, cholesky, colour, height, width)
    return info.fn(project(xy, cholesky, colour, height, width), height, width)
