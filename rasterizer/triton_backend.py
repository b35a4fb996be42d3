"""Triton rasterizer: the docs/DESIGN.md §4 sum on CUDA, exploiting the lattice instead of sorting Gaussians.

Forward: one program per output tile gathers the lattice window whose Gaussians can reach the tile and sums
them in fp32 — no sort, no atomics. Backward: one program per block of lattice cells reads the output-gradient
footprint of its Gaussians and writes their gradients directly — no atomics either.

The window comes from the actual field: every valid Gaussian's drift from its lattice anchor plus its α ≥ 1/255
half-width lies in [lo, hi] per axis (`projection.lattice_reach`), computed on the device so that nothing
synchronises with the host. Runs on the CPU too under TRITON_INTERPRET=1, which is how the tests check it without
a GPU.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .projection import ALPHA_MIN, ProjectedGaussians, lattice_reach, project
from .torch_backend import rasterize_torch

# Forward: output tile (pixels) per program and lattice columns evaluated at once.
TILE_H, TILE_W, CHUNK_COLS = 16, 16, 16
# Backward: lattice cells per program and output pixels evaluated at once.
CELLS_H, CELLS_W, PIXELS_H, PIXELS_W = 4, 8, 8, 16
MAX_CHANNELS = 4
# The probe's field: a small lattice (rows, columns) with three channels, rendered at an odd size; the largest
# relative difference from the torch backend it accepts (both compute the same fp32 sum).
PROBE_LATTICE, PROBE_SIZE, PROBE_TOLERANCE = (4, 6), (9, 13), 1e-4
ALPHA_MIN_C = tl.constexpr(ALPHA_MIN)


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
    """Centre (X, Y) and inverse factors (p, q, r) of the Gaussians at flat indices `g`; zeros where masked."""
    X = tl.load(means + 2 * g, mask=mask, other=0.0)
    Y = tl.load(means + 2 * g + 1, mask=mask, other=0.0)
    p = tl.load(factors + 3 * g, mask=mask, other=0.0)
    q = tl.load(factors + 3 * g + 1, mask=mask, other=0.0)
    r = tl.load(factors + 3 * g + 2, mask=mask, other=0.0)
    return X, Y, p, q, r


@triton.jit
def _forward_kernel(means, factors, colours, reach, out, H, W, Hg, Wg,
                    C: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr, CHUNK: tl.constexpr):
    tile_x = tl.program_id(0)
    tile_y = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)  # int64 offsets: B·C·H·W can pass 2^31 on large batches
    offs = tl.arange(0, TH * TW)
    pi = tile_y * TH + offs // TW
    pj = tile_x * TW + offs % TW
    pix_mask = (pi < H) & (pj < W)
    fi = pi.to(tl.float32)
    fj = pj.to(tl.float32)
    x_lo = tl.load(reach + 0)
    x_hi = tl.load(reach + 1)
    y_lo = tl.load(reach + 2)
    y_hi = tl.load(reach + 3)
    # True division turns int32 operands into fp32 and works whether the JIT passed a size as a tensor or, when
    # it equals 1, as a constexpr (which has no `.to`): a 1-pixel-high or -wide render compiles.
    scale_x = Wg / W
    scale_y = Hg / H
    j0 = (tile_x * TW).to(tl.float32)
    i0 = (tile_y * TH).to(tl.float32)
    c_lo = tl.maximum(tl.ceil((j0 - x_hi) * scale_x).to(tl.int32), 0)
    c_hi = tl.minimum(tl.floor((j0 + TW - 1 - x_lo) * scale_x).to(tl.int32), Wg - 1)
    r_lo = tl.maximum(tl.ceil((i0 - y_hi) * scale_y).to(tl.int32), 0)
    r_hi = tl.minimum(tl.floor((i0 + TH - 1 - y_lo) * scale_y).to(tl.int32), Hg - 1)
    acc0 = tl.zeros((TH * TW,), tl.float32)
    acc1 = tl.zeros((TH * TW,), tl.float32)
    acc2 = tl.zeros((TH * TW,), tl.float32)
    acc3 = tl.zeros((TH * TW,), tl.float32)
    for row in range(r_lo, r_hi + 1):
        for c0 in range(c_lo, c_hi + 1, CHUNK):
            cols = c0 + tl.arange(0, CHUNK)
            g_mask = cols <= c_hi
            g = (b * Hg + row) * Wg + cols
            X, Y, p, q, r = _load_gaussians(means, factors, g, g_mask)
            w = _sigma_weight(X[None, :] - fj[:, None], Y[None, :] - fi[:, None], p[None, :], q[None, :],
                              r[None, :], g_mask[None, :])
            acc0 += tl.sum(w * tl.load(colours + C * g, mask=g_mask, other=0.0)[None, :], axis=1)
            if C > 1:
                acc1 += tl.sum(w * tl.load(colours + C * g + 1, mask=g_mask, other=0.0)[None, :], axis=1)
            if C > 2:
                acc2 += tl.sum(w * tl.load(colours + C * g + 2, mask=g_mask, other=0.0)[None, :], axis=1)
            if C > 3:
                acc3 += tl.sum(w * tl.load(colours + C * g + 3, mask=g_mask, other=0.0)[None, :], axis=1)
    base = b * C * H * W + pi * W + pj
    tl.store(out + base, acc0, mask=pix_mask)
    if C > 1:
        tl.store(out + base + H * W, acc1, mask=pix_mask)
    if C > 2:
        tl.store(out + base + 2 * H * W, acc2, mask=pix_mask)
    if C > 3:
        tl.store(out + base + 3 * H * W, acc3, mask=pix_mask)


@triton.jit
def _backward_kernel(means, factors, colours, reach, grad_out, grad_means, grad_factors, grad_colours,
                     H, W, Hg, Wg, C: tl.constexpr, GH: tl.constexpr, GW: tl.constexpr,
                     PH: tl.constexpr, PW: tl.constexpr):
    block_x = tl.program_id(0)
    block_y = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)  # int64 offsets: B·C·H·W can pass 2^31 on large batches
    cell = tl.arange(0, GH * GW)
    rows = block_y * GH + cell // GW
    cols = block_x * GW + cell % GW
    g_mask = (rows < Hg) & (cols < Wg)
    g = (b * Hg + rows) * Wg + cols
    X, Y, p, q, r = _load_gaussians(means, factors, g, g_mask)
    col0 = tl.load(colours + C * g, mask=g_mask, other=0.0)
    col1 = tl.load(colours + C * g + 1, mask=g_mask & (C > 1), other=0.0)
    col2 = tl.load(colours + C * g + 2, mask=g_mask & (C > 2), other=0.0)
    col3 = tl.load(colours + C * g + 3, mask=g_mask & (C > 3), other=0.0)
    x_lo = tl.load(reach + 0)
    x_hi = tl.load(reach + 1)
    y_lo = tl.load(reach + 2)
    y_hi = tl.load(reach + 3)
    step_x = W / Wg  # fp32 for tensor and constexpr sizes alike (see _forward_kernel)
    step_y = H / Hg
    c_first = (block_x * GW).to(tl.float32)
    r_first = (block_y * GH).to(tl.float32)
    j_lo = tl.maximum(tl.ceil(c_first * step_x + x_lo).to(tl.int32), 0)
    j_hi = tl.minimum(tl.floor((c_first + GW - 1) * step_x + x_hi).to(tl.int32), W - 1)
    i_lo = tl.maximum(tl.ceil(r_first * step_y + y_lo).to(tl.int32), 0)
    i_hi = tl.minimum(tl.floor((r_first + GH - 1) * step_y + y_hi).to(tl.int32), H - 1)
    gX = tl.zeros((GH * GW,), tl.float32)
    gY = tl.zeros((GH * GW,), tl.float32)
    gp = tl.zeros((GH * GW,), tl.float32)
    gq = tl.zeros((GH * GW,), tl.float32)
    gr = tl.zeros((GH * GW,), tl.float32)
    gc0 = tl.zeros((GH * GW,), tl.float32)
    gc1 = tl.zeros((GH * GW,), tl.float32)
    gc2 = tl.zeros((GH * GW,), tl.float32)
    gc3 = tl.zeros((GH * GW,), tl.float32)
    offs = tl.arange(0, PH * PW)
    for i0 in range(i_lo, i_hi + 1, PH):
        for j0 in range(j_lo, j_hi + 1, PW):
            pi = i0 + offs // PW
            pj = j0 + offs % PW
            p_mask = (pi <= i_hi) & (pj <= j_hi)
            base = b * C * H * W + pi * W + pj
            go0 = tl.load(grad_out + base, mask=p_mask, other=0.0)
            go1 = tl.load(grad_out + base + H * W, mask=p_mask & (C > 1), other=0.0)
            go2 = tl.load(grad_out + base + 2 * H * W, mask=p_mask & (C > 2), other=0.0)
            go3 = tl.load(grad_out + base + 3 * H * W, mask=p_mask & (C > 3), other=0.0)
            dx = X[None, :] - pj.to(tl.float32)[:, None]
            dy = Y[None, :] - pi.to(tl.float32)[:, None]
            w = _sigma_weight(dx, dy, p[None, :], q[None, :], r[None, :], p_mask[:, None] & g_mask[None, :])
            gc0 += tl.sum(w * go0[:, None], axis=0)
            gc1 += tl.sum(w * go1[:, None], axis=0)
            gc2 += tl.sum(w * go2[:, None], axis=0)
            gc3 += tl.sum(w * go3[:, None], axis=0)
            v = (go0[:, None] * col0[None, :] + go1[:, None] * col1[None, :] + go2[:, None] * col2[None, :]
                 + go3[:, None] * col3[None, :])
            d_sigma = -w * v
            e = dy - q[None, :] * dx
            rv = r[None, :] * r[None, :] * e
            gX += tl.sum(d_sigma * (p[None, :] * p[None, :] * dx - q[None, :] * rv), axis=0)
            gY += tl.sum(d_sigma * rv, axis=0)
            gp += tl.sum(d_sigma * p[None, :] * dx * dx, axis=0)
            gq += tl.sum(-d_sigma * rv * dx, axis=0)
            gr += tl.sum(d_sigma * r[None, :] * e * e, axis=0)
    tl.store(grad_means + 2 * g, gX, mask=g_mask)
    tl.store(grad_means + 2 * g + 1, gY, mask=g_mask)
    tl.store(grad_factors + 3 * g, gp, mask=g_mask)
    tl.store(grad_factors + 3 * g + 1, gq, mask=g_mask)
    tl.store(grad_factors + 3 * g + 2, gr, mask=g_mask)
    tl.store(grad_colours + C * g, gc0, mask=g_mask)
    tl.store(grad_colours + C * g + 1, gc1, mask=g_mask & (C > 1))
    tl.store(grad_colours + C * g + 2, gc2, mask=g_mask & (C > 2))
    tl.store(grad_colours + C * g + 3, gc3, mask=g_mask & (C > 3))


Launch = tuple[tuple[int, int, int], tuple, dict[str, int]]


def forward_launch(means: torch.Tensor, factors: torch.Tensor, colours: torch.Tensor, reach: torch.Tensor,
                   out: torch.Tensor) -> Launch:
    """(grid, arguments, constexprs) of `_forward_kernel` for these tensors; out: (B, C, H, W).

    The one place the launch is spelled out: the wrapper runs it and `triton_aot` compiles it ahead of time.
    """
    batch, hg, wg, channels = colours.shape
    height, width = out.shape[-2:]
    grid = (triton.cdiv(width, TILE_W), triton.cdiv(height, TILE_H), batch)
    return (grid, (means, factors, colours, reach, out, height, width, hg, wg),
            {"C": channels, "TH": TILE_H, "TW": TILE_W, "CHUNK": CHUNK_COLS})


def backward_launch(means: torch.Tensor, factors: torch.Tensor, colours: torch.Tensor, reach: torch.Tensor,
                    grad_out: torch.Tensor, grad_means: torch.Tensor, grad_factors: torch.Tensor,
                    grad_colours: torch.Tensor) -> Launch:
    """(grid, arguments, constexprs) of `_backward_kernel`; grad_out: (B, C, H, W) fp32, contiguous."""
    batch, hg, wg, channels = colours.shape
    height, width = grad_out.shape[-2:]
    grid = (triton.cdiv(wg, CELLS_W), triton.cdiv(hg, CELLS_H), batch)
    return (grid, (means, factors, colours, reach, grad_out, grad_means, grad_factors, grad_colours, height, width,
                   hg, wg), {"C": channels, "GH": CELLS_H, "GW": CELLS_W, "PH": PIXELS_H, "PW": PIXELS_W})


def evaluated_pairs(gaussians: ProjectedGaussians, height: int, width: int) -> tuple[int, int]:
    """(forward, backward): the (pixel, Gaussian) pairs the kernels evaluate for this field, counted from their
    launch grids and loop bounds (every lane of every chunk, masked or not)."""
    batch, hg, wg = gaussians.means.shape[:3]
    reach = lattice_reach(gaussians.means.detach().float(), gaussians.extents.float(), height, width).cpu()
    x_lo, x_hi, y_lo, y_hi = reach.unbind()
    f32 = torch.float32
    tiles_x, tiles_y = torch.arange(triton.cdiv(width, TILE_W)), torch.arange(triton.cdiv(height, TILE_H))
    j0, i0 = (tiles_x * TILE_W).to(f32), (tiles_y * TILE_H).to(f32)
    scale_x, scale_y = torch.tensor(wg / width, dtype=f32), torch.tensor(hg / height, dtype=f32)
    c_lo = torch.ceil((j0 - x_hi) * scale_x).int().clamp(min=0)
    c_hi = torch.floor((j0 + TILE_W - 1 - x_lo) * scale_x).int().clamp(max=wg - 1)
    r_lo = torch.ceil((i0 - y_hi) * scale_y).int().clamp(min=0)
    r_hi = torch.floor((i0 + TILE_H - 1 - y_lo) * scale_y).int().clamp(max=hg - 1)
    chunks = ((c_hi - c_lo + 1).clamp(min=0) + CHUNK_COLS - 1) // CHUNK_COLS
    rows = (r_hi - r_lo + 1).clamp(min=0)
    forward = batch * TILE_H * TILE_W * CHUNK_COLS * int(rows.sum()) * int(chunks.sum())
    cells_x, cells_y = torch.arange(triton.cdiv(wg, CELLS_W)), torch.arange(triton.cdiv(hg, CELLS_H))
    c_first, r_first = (cells_x * CELLS_W).to(f32), (cells_y * CELLS_H).to(f32)
    step_x, step_y = torch.tensor(width / wg, dtype=f32), torch.tensor(height / hg, dtype=f32)
    j_lo = torch.ceil(c_first * step_x + x_lo).int().clamp(min=0)
    j_hi = torch.floor((c_first + CELLS_W - 1) * step_x + x_hi).int().clamp(max=width - 1)
    i_lo = torch.ceil(r_first * step_y + y_lo).int().clamp(min=0)
    i_hi = torch.floor((r_first + CELLS_H - 1) * step_y + y_hi).int().clamp(max=height - 1)
    col_steps = ((j_hi - j_lo + 1).clamp(min=0) + PIXELS_W - 1) // PIXELS_W
    row_steps = ((i_hi - i_lo + 1).clamp(min=0) + PIXELS_H - 1) // PIXELS_H
    backward = (batch * CELLS_H * CELLS_W * PIXELS_H * PIXELS_W * int(row_steps.sum()) * int(col_steps.sum()))
    return forward, backward


class _RasterizeTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, factors, colours, reach, height, width):
        batch, channels = colours.shape[0], colours.shape[-1]
        out = torch.empty(batch, channels, height, width, device=means.device, dtype=torch.float32)
        grid, args, constexprs = forward_launch(means, factors, colours, reach, out)
        _forward_kernel[grid](*args, **constexprs)
        ctx.save_for_backward(means, factors, colours, reach)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        means, factors, colours, reach = ctx.saved_tensors
        grad_means, grad_factors, grad_colours = (torch.empty_like(t) for t in (means, factors, colours))
        grid, args, constexprs = backward_launch(means, factors, colours, reach, grad_out.float().contiguous(),
                                                 grad_means, grad_factors, grad_colours)
        _backward_kernel[grid](*args, **constexprs)
        return grad_means, grad_factors, grad_colours, None, None, None


def rasterize_triton(gaussians: ProjectedGaussians, height: int, width: int) -> torch.Tensor:
    """The plain α-weighted colour sum, (B, C, height, width), computed and accumulated in fp32."""
    channels = gaussians.colours.shape[-1]
    if channels > MAX_CHANNELS:
        raise ValueError(f"the triton backend renders at most {MAX_CHANNELS} channels, got {channels}")
    dtype = gaussians.means.dtype
    means, factors, colours = (t.float().contiguous() for t in (gaussians.means, gaussians.inv_factors,
                                                                 gaussians.colours))
    reach = lattice_reach(gaussians.means.detach().float(), gaussians.extents.float(), height, width)
    out = _RasterizeTriton.apply(means, factors, colours, reach, height, width)
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
