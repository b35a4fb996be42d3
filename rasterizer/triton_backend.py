"""Triton rasterizer: the docs/DESIGN.md §4 sum on CUDA, each Gaussian evaluated on its own footprint only.

Both kernels run one lane per Gaussian (`footprints`: the parallelogram of pixels that holds its α ≥ 1/255
ellipse, Gaussians in footprint-size order, one warp of lanes per program), each lane stepping through its own
footprint; no pixel outside it is evaluated, so the kernels evaluate about 1.3-1.9 pairs per pair drawn
(`scripts/benchmark.py pairs`). Backward: each lane sums its own gradients over its footprint and writes them once —
no atomics. Forward: lanes add α·colour into the output with atomic adds, in 64-bit fixed point (`FIXED_POINT_BITS`
of headroom over the largest possible sum), so the sum is the same bit for bit whatever order the adds land in;
the result is converted to fp32 once. Runs on the CPU too under TRITON_INTERPRET=1, which is how the tests check
it without a GPU.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from . import footprints
from .projection import ALPHA_MIN, ProjectedGaussians, project
from .torch_backend import rasterize_torch

MAX_CHANNELS = 4
# Warps per program: one lane per Gaussian, footprints.BLOCK (32) lanes.
NUM_WARPS = 1
# The forward sums in int64 fixed point scaled so that Gaussians-per-image × the largest |colour| maps to 2^62:
# no sum can overflow, and each pair is resolved to 2^-62 of that bound (2^-42 of the largest colour for a
# million-Gaussian field). Colours below 2^-60 in magnitude are treated as 2^-60 when choosing the scale.
FIXED_POINT_BITS = 62
MIN_COLOUR_SCALE = 2.0 ** -60
MAX_PIXELS = 2 ** 31  # int32 pixel indices and step counts
# The probe's field: a small lattice (rows, columns) with three channels, rendered at an odd size; the largest
# relative difference from the torch backend it accepts (both compute the same fp32 sum).
PROBE_LATTICE, PROBE_SIZE, PROBE_TOLERANCE = (4, 6), (9, 13), 1e-4
ALPHA_MIN_C = tl.constexpr(ALPHA_MIN)
INDEX_C, FIRST_ROW_C, COLUMNS_C, SPAN_C, COUNT_C = (tl.constexpr(v) for v in (
    footprints.INDEX, footprints.FIRST_ROW, footprints.COLUMNS, footprints.SPAN, footprints.COUNT))
INTS_C, FLOATS_C = tl.constexpr(footprints.INT_FIELDS), tl.constexpr(footprints.FLOAT_FIELDS)
SLOPE_C, HALF_WIDTH_C = tl.constexpr(footprints.SLOPE), tl.constexpr(footprints.HALF_WIDTH)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def supports(device: torch.device) -> bool:
    return device.type == "cuda" or interpreting()


@triton.jit
def _sigma_weight(dx, dy, p, q, r, mask):
    """α where the Gaussian is drawn (σ ≥ 0, α ≥ 1/255), else 0; σ = ½|L⁻¹d|²."""
    u = p * dx
    v = r * (dy - q * dx)
    sigma = 0.5 * (u * u + v * v)
    alpha = tl.exp(-sigma)
    return tl.where(mask & (sigma >= 0) & (alpha >= ALPHA_MIN_C), alpha, 0.0)


@triton.jit
def _load_gaussians(means, factors, g, mask):
    """Centre (X, Y) and inverse factors (p, q, r) of the Gaussians at flat (int64) indices `g`; zeros where
    masked."""
    X = tl.load(means + 2 * g, mask=mask, other=0.0)
    Y = tl.load(means + 2 * g + 1, mask=mask, other=0.0)
    p = tl.load(factors + 3 * g, mask=mask, other=0.0)
    q = tl.load(factors + 3 * g + 1, mask=mask, other=0.0)
    r = tl.load(factors + 3 * g + 2, mask=mask, other=0.0)
    return X, Y, p, q, r


@triton.jit
def _load_lanes(ints, floats, lane, valid):
    """A program's lanes (`footprints.Plan`): each one's Gaussian (int64 flat index), first row, columns per row,
    a row's full span, steps, the centre line's slope and the half-width; an empty footprint where not valid."""
    g = tl.load(ints + INTS_C * lane + INDEX_C, mask=valid, other=0).to(tl.int64)
    first_row = tl.load(ints + INTS_C * lane + FIRST_ROW_C, mask=valid, other=0)
    columns = tl.load(ints + INTS_C * lane + COLUMNS_C, mask=valid, other=1)
    span = tl.load(ints + INTS_C * lane + SPAN_C, mask=valid, other=1)
    count = tl.load(ints + INTS_C * lane + COUNT_C, mask=valid, other=0)
    slope = tl.load(floats + FLOATS_C * lane + SLOPE_C, mask=valid, other=0.0)
    half = tl.load(floats + FLOATS_C * lane + HALF_WIDTH_C, mask=valid, other=0.0)
    return g, first_row, columns, span, count, slope, half


@triton.jit
def _footprint_pixel(t, first_row, columns, span, count, X, Y, slope, half, W):
    """Step `t` of each lane's footprint: the pixel (row, column) and whether the lane draws there at all (the
    step is within its count and the column inside both its row's span and the image)."""
    k = t // columns
    row = first_row + k
    start = tl.ceil(X + slope * (row.to(tl.float32) - Y) - half).to(tl.int32)
    col = tl.maximum(start, 0) + (t - k * columns)
    active = (t < count) & (col <= tl.minimum(start + span - 1, W - 1))
    return row, col, active


@triton.jit
def _forward_kernel(ints, floats, steps, means, factors, colours, scale, acc, H, W, cells, N,
                    C: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    lane = pid * BLOCK + tl.arange(0, BLOCK)
    valid = lane < N
    g, first_row, columns, span, count, slope, half = _load_lanes(ints, floats, lane, valid)
    X, Y, p, q, r = _load_gaussians(means, factors, g, valid)
    fixed = tl.load(scale)
    col0 = tl.load(colours + C * g, mask=valid, other=0.0) * fixed
    col1 = tl.load(colours + C * g + 1, mask=valid & (C > 1), other=0.0) * fixed
    col2 = tl.load(colours + C * g + 2, mask=valid & (C > 2), other=0.0) * fixed
    col3 = tl.load(colours + C * g + 3, mask=valid & (C > 3), other=0.0) * fixed
    plane = H * W
    base = acc + (g // cells) * C * plane  # int64: B·C·H·W can pass 2^31 on large batches
    for t in range(0, tl.load(steps + pid)):
        row, col, active = _footprint_pixel(t, first_row, columns, span, count, X, Y, slope, half, W)
        w = _sigma_weight(X - col.to(tl.float32), Y - row.to(tl.float32), p, q, r, active)
        drawn = w > 0
        at = base + row.to(tl.int64) * W + col
        tl.atomic_add(at, (w * col0).to(tl.int64), mask=drawn, sem="relaxed")
        if C > 1:
            tl.atomic_add(at + plane, (w * col1).to(tl.int64), mask=drawn, sem="relaxed")
        if C > 2:
            tl.atomic_add(at + 2 * plane, (w * col2).to(tl.int64), mask=drawn, sem="relaxed")
        if C > 3:
            tl.atomic_add(at + 3 * plane, (w * col3).to(tl.int64), mask=drawn, sem="relaxed")


@triton.jit
def _backward_kernel(ints, floats, steps, means, factors, colours, grad_out, grad_means, grad_factors,
                     grad_colours, H, W, cells, N, C: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    lane = pid * BLOCK + tl.arange(0, BLOCK)
    valid = lane < N
    g, first_row, columns, span, count, slope, half = _load_lanes(ints, floats, lane, valid)
    X, Y, p, q, r = _load_gaussians(means, factors, g, valid)
    col0 = tl.load(colours + C * g, mask=valid, other=0.0)
    col1 = tl.load(colours + C * g + 1, mask=valid & (C > 1), other=0.0)
    col2 = tl.load(colours + C * g + 2, mask=valid & (C > 2), other=0.0)
    col3 = tl.load(colours + C * g + 3, mask=valid & (C > 3), other=0.0)
    plane = H * W
    base = grad_out + (g // cells) * C * plane  # int64, as in the forward
    gX = tl.zeros((BLOCK,), tl.float32)
    gY = tl.zeros((BLOCK,), tl.float32)
    gp = tl.zeros((BLOCK,), tl.float32)
    gq = tl.zeros((BLOCK,), tl.float32)
    gr = tl.zeros((BLOCK,), tl.float32)
    gc0 = tl.zeros((BLOCK,), tl.float32)
    gc1 = tl.zeros((BLOCK,), tl.float32)
    gc2 = tl.zeros((BLOCK,), tl.float32)
    gc3 = tl.zeros((BLOCK,), tl.float32)
    for t in range(0, tl.load(steps + pid)):
        row, col, active = _footprint_pixel(t, first_row, columns, span, count, X, Y, slope, half, W)
        dx = X - col.to(tl.float32)
        dy = Y - row.to(tl.float32)
        w = _sigma_weight(dx, dy, p, q, r, active)
        drawn = w > 0
        at = base + row.to(tl.int64) * W + col
        go0 = tl.load(at, mask=drawn, other=0.0)
        go1 = tl.load(at + plane, mask=drawn & (C > 1), other=0.0)
        go2 = tl.load(at + 2 * plane, mask=drawn & (C > 2), other=0.0)
        go3 = tl.load(at + 3 * plane, mask=drawn & (C > 3), other=0.0)
        gc0 += w * go0
        gc1 += w * go1
        gc2 += w * go2
        gc3 += w * go3
        d_sigma = -w * (go0 * col0 + go1 * col1 + go2 * col2 + go3 * col3)
        e = dy - q * dx
        rv = r * r * e
        gX += d_sigma * (p * p * dx - q * rv)
        gY += d_sigma * rv
        gp += d_sigma * p * dx * dx
        gq += -d_sigma * rv * dx
        gr += d_sigma * r * e * e
    tl.store(grad_means + 2 * g, gX, mask=valid)
    tl.store(grad_means + 2 * g + 1, gY, mask=valid)
    tl.store(grad_factors + 3 * g, gp, mask=valid)
    tl.store(grad_factors + 3 * g + 1, gq, mask=valid)
    tl.store(grad_factors + 3 * g + 2, gr, mask=valid)
    tl.store(grad_colours + C * g, gc0, mask=valid)
    tl.store(grad_colours + C * g + 1, gc1, mask=valid & (C > 1))
    tl.store(grad_colours + C * g + 2, gc2, mask=valid & (C > 2))
    tl.store(grad_colours + C * g + 3, gc3, mask=valid & (C > 3))


# (grid, runtime arguments, constexprs, compile options) of one kernel launch.
Launch = tuple[tuple[int], tuple, dict[str, int], dict[str, int]]


def _plan_arguments(work: footprints.Plan, colours: torch.Tensor, height: int, width: int) -> tuple[tuple, dict]:
    """The sizes both kernels take after their tensors (H, W, Gaussians per image, lanes) and their constexprs."""
    _, hg, wg, channels = colours.shape
    return ((height, width, hg * wg, work.ints.shape[0]),
            {"C": channels, "BLOCK": footprints.BLOCK})


def forward_launch(work: footprints.Plan, means: torch.Tensor, factors: torch.Tensor, colours: torch.Tensor,
                   scale: torch.Tensor, acc: torch.Tensor) -> Launch:
    """The launch of `_forward_kernel` for this plan and these tensors; acc: (B, C, H, W) int64, zeros.

    The one place the launch is spelled out: the wrapper runs it and `triton_aot` compiles it ahead of time.
    """
    sizes, constexprs = _plan_arguments(work, colours, *acc.shape[-2:])
    return ((work.steps.shape[0],), (work.ints, work.floats, work.steps, means, factors, colours, scale, acc, *sizes),
            constexprs, {"num_warps": NUM_WARPS})


def backward_launch(work: footprints.Plan, means: torch.Tensor, factors: torch.Tensor, colours: torch.Tensor,
                    grad_out: torch.Tensor, grad_means: torch.Tensor, grad_factors: torch.Tensor,
                    grad_colours: torch.Tensor) -> Launch:
    """The launch of `_backward_kernel`; grad_out: (B, C, H, W) fp32, contiguous."""
    sizes, constexprs = _plan_arguments(work, colours, *grad_out.shape[-2:])
    return ((work.steps.shape[0],), (work.ints, work.floats, work.steps, means, factors, colours, grad_out,
                                     grad_means, grad_factors, grad_colours, *sizes), constexprs,
            {"num_warps": NUM_WARPS})


def fixed_point_scale(colours: torch.Tensor) -> torch.Tensor:
    """(1,) fp32 on the colours' device: the factor from colour to the forward's fixed point, the power of two
    that maps Gaussians-per-image × max |colour| to 2^FIXED_POINT_BITS, divided by max |colour|."""
    per_image = colours[0, ..., 0].numel()
    headroom = 2.0 ** (FIXED_POINT_BITS - math.ceil(math.log2(max(per_image, 2))))
    largest = colours.detach().abs().amax().clamp(min=MIN_COLOUR_SCALE) if colours.numel() else colours.new_ones(())
    return (headroom / largest).float().reshape(1)


class _RasterizeTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, factors, colours, ints, floats, steps, height, width):
        work = footprints.Plan(ints, floats, steps)
        batch, channels = colours.shape[0], colours.shape[-1]
        acc = torch.zeros(batch, channels, height, width, device=means.device, dtype=torch.int64)
        scale = fixed_point_scale(colours)
        grid, args, constexprs, options = forward_launch(work, means, factors, colours, scale, acc)
        _forward_kernel[grid](*args, **constexprs, **options)
        ctx.save_for_backward(means, factors, colours, ints, floats, steps)
        return (acc.double() / scale.double()).float()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        means, factors, colours, ints, floats, steps = ctx.saved_tensors
        grad_means, grad_factors, grad_colours = (torch.empty_like(t) for t in (means, factors, colours))
        grid, args, constexprs, options = backward_launch(
            footprints.Plan(ints, floats, steps), means, factors, colours, grad_out.float().contiguous(),
            grad_means, grad_factors, grad_colours)
        _backward_kernel[grid](*args, **constexprs, **options)
        return grad_means, grad_factors, grad_colours, None, None, None, None, None


def rasterize_triton(gaussians: ProjectedGaussians, height: int, width: int) -> torch.Tensor:
    """The plain α-weighted colour sum, (B, C, height, width), in fp32 (each pair's α·colour in fp32, summed in
    fixed point)."""
    channels = gaussians.colours.shape[-1]
    if channels > MAX_CHANNELS:
        raise ValueError(f"the triton backend renders at most {MAX_CHANNELS} channels, got {channels}")
    if height * width >= MAX_PIXELS:
        raise ValueError(f"the triton backend renders fewer than {MAX_PIXELS} pixels, got {height}x{width}")
    dtype = gaussians.means.dtype
    means, factors, colours = (t.float().contiguous() for t in (gaussians.means, gaussians.inv_factors,
                                                                 gaussians.colours))
    work = footprints.plan(gaussians, height, width)
    out = _RasterizeTriton.apply(means, factors, colours, work.ints, work.floats, work.steps, height, width)
    return out.to(dtype)


def probe(device: torch.device) -> None:
    """Compile and run both kernels on `device` once, checking them against the torch backend; raises if not.

    What `auto` asks before picking this backend: a Triton, driver or architecture mismatch shows up here
    (as the compiler's or the driver's exception) instead of in a user's render.
    """
    with torch.inference_mode(False), torch.enable_grad():  # `auto` is often asked from inside no_grad
        _probe(device)


def _probe(device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    rows, cols = PROBE_LATTICE
    height, width = PROBE_SIZE
    xy = torch.stack(torch.meshgrid(torch.linspace(-0.8, 0.8, cols), torch.linspace(-0.8, 0.8, rows),
                                    indexing="xy"), -1).unsqueeze(0) + 0.05 * torch.rand(1, rows, cols, 2, generator=g)
    cholesky = torch.tensor([1.5, 0.3, 1.2]) * (1 + torch.rand(1, rows, cols, 3, generator=g))
    colour = torch.rand(1, rows, cols, 3, generator=g)
    inputs = [t.to(device).requires_grad_(True) for t in (xy, cholesky, colour)]
    out = rasterize_triton(project(*inputs, height, width), height, width)
    out.square().sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # a launch failure surfaces here, not in the caller's next operation
    with torch.no_grad():
        ref = rasterize_torch(project(*inputs, height, width), height, width)
    error = float((out.detach() - ref).abs().max() / ref.abs().max())
    if not error <= PROBE_TOLERANCE:
        raise RuntimeError(f"the triton kernels' result differs from the torch backend's by {error:.2e} "
                           f"(relative) on {device}")
    if not all(bool(torch.isfinite(t.grad).all()) for t in inputs):
        raise RuntimeError(f"the triton backward kernel gave non-finite gradients on {device}")
