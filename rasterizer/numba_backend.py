"""Numba CPU rasterizer: the docs/DESIGN.md §4 sum, compiled and multi-threaded, forward and backward.

Forward: one parallel task per output tile, and one parallel region per render (waking the threads for a
region costs more than projecting a Gaussian twice). A tile owns its pixels (no races, no atomics), visits only
the lattice window whose Gaussians can reach it and projects each Gaussian it meets there (`projection.project`'s
formulas in its order, so the same values). The window's margins come from the actual field (every valid
Gaussian's drift from its lattice anchor plus its α ≥ 1/255 half-width, `_reach`), so the sum is exact for any
field. Each Gaussian is evaluated only on the pixels of its α ≥ 1/255 box inside the tile and, on each row of a
wide box, only on the span where σ can be ≤ ln 255 (solved from the quadratic, with slack), which skips the
box's empty corners; the cut-off itself is then decided per pixel by the torch reference's test: σ = ½|L⁻¹d|²
in the input's precision, drawn iff σ ≥ 0 and exp(−σ) ≥ 1/255 (fused multiply-adds and the ≤ 1.3-ulp exp can
move only a pixel within an ulp of the cut-off). A narrow box (the common case: 8x8 pixels at x4) is drawn in
8-column strips, each row of a strip one fixed 8-lane body whose only set-up is the row's dy; a wide box row by
row in whole 8-lane vectors over its trimmed span. Neither needs per-row alias checks (a flat accumulator with
a constant channel stride).

Backward: one parallel task per lattice row; each Gaussian, projected as in the forward, gathers the output
gradient over the same pixels and writes only its own gradients (no races). Gradient sums are accumulated in float64.

Kernels are compiled for float32 and float64 on first use and cached on disk (`cache=True`), so later
processes load them instead of compiling.
"""
from __future__ import annotations

import functools
import math
import os
import threading

from llvmlite import ir as llvm_ir
import numba
from numba.core import types
from numba.extending import intrinsic, overload
import numpy as np
import torch

from . import lattice
from .projection import ALPHA_MIN, EXTENT_SLACK, SIGMA_MAX, WINDOW_SLACK

# Output pixels per forward task (rows, columns): large enough to amortise the window set-up, small enough to
# keep a tile's accumulators in cache and give every thread work on small images.
TILE_H, TILE_W = 32, 128
# Pixels of a row evaluated at once (a row span is covered by whole vectors, the overhang masked): 8 float32
# lanes fill an AVX2 register.
VECTOR = 8
# Channels accumulated in one pass over a row span (RGB at once; other counts in groups, the rest masked).
CHANNEL_GROUP = 3
# A forward tile's accumulator is flat: row i of channel c (of a group) starts at ((i·CHANNEL_GROUP) + c)·ROW_STRIDE.
# The stride is a compile-time constant, so the compiler sees that one row's channels never overlap and
# vectorises the row loop without run-time alias checks.
ROW_STRIDE = TILE_W + VECTOR
# Rows are trimmed to the span where σ can be ≤ ln 255 only for boxes wider than this many pixels: on narrower
# boxes the trim saves at most a vector or two, less than the square root and division that find it (and the
# forward draws them in fixed 8-column strips instead, `_accumulate` with n = VECTOR).
ROW_SPAN_MIN_WIDTH = 4 * VECTOR
# Pixels (absolute) and fraction (relative) by which row spans are widened so that rounding never drops a drawn
# pixel; the per-pixel test, not these bounds, decides what is drawn (windows: projection.WINDOW_SLACK).
SLACK_PIXELS = 1e-3
SLACK_RELATIVE = 1e-3
# ... and by this fraction of the centre's coordinate: a float32 dx = X − j is off by up to 2⁻²⁴·|X|.
SLACK_POSITION = 1e-6
# Row spans cover σ ≤ SIGMA_SKIP; σ is clamped to SIGMA_CLAMP before the exp (exp(−6) < 1/255: no pixel
# changes, and the float32 exp's 2⁻ⁿ stays a normal number, 0 ≤ n ≤ 9).
SIGMA_SKIP = SIGMA_MAX * (1 + SLACK_RELATIVE)
SIGMA_CLAMP = 6.0
# ln 2 split so that n·LN2_HI is exact for the n the float32 exp meets (Cody–Waite).
LN2_HI, LN2_LO = 0.693359375, -2.12194440e-4
# float32 layout: 2⁻ⁿ has the bits (EXPONENT_BIAS − n) << MANTISSA_BITS.
EXPONENT_BIAS, MANTISSA_BITS = 127, 23
DTYPES = (torch.float32, torch.float64)
# The workqueue threading layer unless the user chose one: numba's OpenMP layer, beside torch's own OpenMP
# pool, took 5-12 ms per call to wake its threads on a loaded 2-core machine (workqueue: 0.2 ms).
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"
# The workqueue layer aborts on concurrent calls from several Python threads: one call at a time.
_KERNEL_LOCK = threading.Lock()


@numba.njit(cache=True, inline="always")
def _centre_extents(xy, cholesky, b, gr, gc, consts):
    """Gaussian (b, gr, gc)'s centre (X, Y) in output pixels and the half-widths (ex, ey) of its α ≥ 1/255 box
    (zero for a degenerate one): `projection.project`'s formulas in its order and the input's dtype, so the same
    roundings. consts: (W, H, 2·ln 255, 1 + slack, slack, 1, 2) in the input's dtype (`_projection_consts`)."""
    width, height, two_sigma, widen, slack, one, two = (consts[0], consts[1], consts[2], consts[3], consts[4],
                                                       consts[5], consts[6])
    zero = one - one
    X = width * (xy[b, gr, gc, 0] + one) / two
    Y = height * (xy[b, gr, gc, 1] + one) / two
    l11, l21, l22 = cholesky[b, gr, gc, 0], cholesky[b, gr, gc, 1], cholesky[b, gr, gc, 2]
    det = l11 * l22
    if not det * det > zero:
        return X, Y, zero, zero
    return (X, Y, np.sqrt(two_sigma * (l11 * l11)) * widen + slack,
            np.sqrt(two_sigma * (l21 * l21 + l22 * l22)) * widen + slack)


@numba.njit(cache=True, inline="always")
def _factors(cholesky, b, gr, gc, one):
    """Gaussian (b, gr, gc)'s inverse factor (p, q, r) = (1/l11, l21/l11, 1/l22), zero for a degenerate one (as
    `projection.project`); `one` in the input's dtype."""
    zero = one - one
    l11, l21, l22 = cholesky[b, gr, gc, 0], cholesky[b, gr, gc, 1], cholesky[b, gr, gc, 2]
    det = l11 * l22
    if not det * det > zero:
        return zero, zero, zero
    return one / l11, l21 / l11, one / l22


@numba.njit(cache=True)
def _reach(xy, cholesky, consts, height, width, boxes):
    """`projection.lattice_reach` of the projected Gaussians, compiled (no torch operations on the host):
    (x_lo, x_hi, y_lo, y_hi) of (centre − anchor) ∓ half-width over the valid Gaussians, widened by
    WINDOW_SLACK; the anchor of lattice cell (r, c) is (c·W/Wg, r·H/Hg). lo > hi when no Gaussian is valid;
    non-finite entries are skipped. consts: as `_centre_extents`; boxes (B, Hg, Wg, 4) receives every
    Gaussian's (X, Y, ex, ey)."""
    batch, hg, wg = xy.shape[0], xy.shape[1], xy.shape[2]
    x_lo, x_hi, y_lo, y_hi = np.inf, -np.inf, np.inf, -np.inf
    if hg == 0 or wg == 0:
        return x_lo, x_hi, y_lo, y_hi
    step_x, step_y = width / wg, height / hg
    for b in range(batch):
        for r in range(hg):
            for c in range(wg):
                X, Y, ex, ey = _centre_extents(xy, cholesky, b, r, c, consts)
                boxes[b, r, c, 0], boxes[b, r, c, 1], boxes[b, r, c, 2], boxes[b, r, c, 3] = X, Y, ex, ey
                ex, ey = float(ex), float(ey)
                if not (ex > 0 and ey > 0 and math.isfinite(ex) and math.isfinite(ey)):
                    continue
                dx = float(X) - c * step_x
                dy = float(Y) - r * step_y
                if not (math.isfinite(dx) and math.isfinite(dy)):
                    continue
                x_lo, x_hi = min(x_lo, dx - ex), max(x_hi, dx + ex)
                y_lo, y_hi = min(y_lo, dy - ey), max(y_hi, dy + ey)
    return x_lo - WINDOW_SLACK, x_hi + WINDOW_SLACK, y_lo - WINDOW_SLACK, y_hi + WINDOW_SLACK


# The output-pixel formula, compiled from its one definition.
_centre = numba.njit(cache=True, inline="always")(lattice.centre)


@numba.njit(cache=True)
def _lattice_points(offset, cholesky, rows, cols, consts, xy, scaled):
    """`rasterizer.lattice_points` of the lattice block `rows` x `cols` (first, stop) of the field, in one pass
    instead of ~15 tensor operations: centres by `lattice.centre` in the field's dtype (so the torch path's
    roundings), factors × (s_x, s_y, s_y). consts: (f, left, top, win_w, win_h, 1/W, 1/H, s_x, s_y, 1, 2) in the
    field's dtype."""
    f, left, top, win_w, win_h, inv_w, inv_h, s_x, s_y, one, two = (
        consts[0], consts[1], consts[2], consts[3], consts[4], consts[5], consts[6], consts[7], consts[8],
        consts[9], consts[10])
    zero = one - one
    for b in range(offset.shape[0]):
        for r in range(rows[1] - rows[0]):
            gr = rows[0] + r
            row_index = _offset(zero, gr)
            for c in range(cols[1] - cols[0]):
                gc = cols[0] + c
                xy[b, r, c, 0] = _centre(_offset(zero, gc), f, offset[b, gr, gc, 0], left, win_w, inv_w, one, two)
                xy[b, r, c, 1] = _centre(row_index, f, offset[b, gr, gc, 1], top, win_h, inv_h, one, two)
                scaled[b, r, c, 0] = cholesky[b, gr, gc, 0] * s_x
                scaled[b, r, c, 1] = cholesky[b, gr, gc, 1] * s_y
                scaled[b, r, c, 2] = cholesky[b, gr, gc, 2] * s_y


@numba.njit(cache=True, inline="always")
def _span(lo, hi, first, last):
    """The integers in [lo, hi] ∩ [first, last] as (start, stop) for range(); empty when lo > hi."""
    lo, hi = max(lo, float(first)), min(hi, float(last))
    if not lo <= hi:  # also catches NaN
        return 0, 0
    return math.ceil(lo), math.floor(hi) + 1


@numba.njit(cache=True, inline="always")
def _row_span(X, dy, p, q, r, a):
    """Bounds on dx-solved pixel positions of one row where σ ≤ SIGMA_SKIP: σ(dx) is the quadratic
    ½(a·dx² − 2r²q·dy·dx + r²dy²) with a = p² + r²q², so the span is X − r²q·dy/a ∓ √(2Sa − p²r²dy²)/a."""
    disc = 2 * SIGMA_SKIP * a - (p * r * dy) ** 2
    if disc < 0:
        return 1.0, 0.0
    centre = X - r * r * q * dy / a
    half = math.sqrt(disc) / a
    pad = half * SLACK_RELATIVE + SLACK_PIXELS + SLACK_POSITION * abs(X)
    return centre - half - pad, centre + half + pad


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bits are the int32 `bits` (a bit cast: vectorises, unlike a table)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.FloatType())
    return types.float32(types.int32), codegen


def _exp_neg(sigma):
    """exp(−σ) for 0 ≤ σ ≤ SIGMA_CLAMP, in σ's dtype (compiled per dtype by the overload below)."""
    return math.exp(-sigma)


@overload(_exp_neg, inline="always")
def _exp_neg_overload(sigma):
    """float32: Cody–Waite reduction σ = n·ln 2 + r and a degree-7 Taylor polynomial in r (|r| ≤ ½ ln 2,
    truncation error < 1e-8), times 2⁻ⁿ built from its bits: no call, no table and no branch, so a row of
    pixels vectorises; within 1.3 ulp of the exact exp (tested). float64: the library exp."""
    if sigma != numba.float32:
        return lambda sigma: np.exp(-sigma)
    f = np.float32
    c0, c1, c2, c3, c4, c5, c6, c7 = (f((-1) ** k / math.factorial(k)) for k in range(8))
    ln2_hi, ln2_lo, log2e, half = f(LN2_HI), f(LN2_LO), f(1 / math.log(2)), f(0.5)
    bias, shift = np.int32(EXPONENT_BIAS), np.int32(MANTISSA_BITS)

    def impl(sigma):
        n = np.floor(sigma * log2e + half)
        r = (sigma - n * ln2_hi) - n * ln2_lo
        poly = ((((((c7 * r + c6) * r + c5) * r + c4) * r + c3) * r + c2) * r + c1) * r + c0
        return poly * _float32_from_bits((bias - np.int32(n)) << shift)
    return impl


@numba.njit(cache=True, inline="always")
def _weight(X, dy, p, q, r, x, stop, consts):
    """α·[drawn] of one Gaussian at pixel (x, y = Y − dy), 0 at x ≥ stop (a vector's overhang). In the input's
    dtype: σ = ½(u² + v²), u = p·dx, v = r·(dy − q·dx), drawn iff σ ≥ 0 and exp(−σ) ≥ 1/255."""
    half, alpha_min, clamp = consts[0], consts[1], consts[2]
    zero = half - half
    dx = X - x
    u = p * dx
    v = r * (dy - q * dx)
    sigma = half * (u * u + v * v)
    alpha = _exp_neg(sigma if sigma < clamp else clamp)
    return alpha if (sigma >= zero and alpha >= alpha_min and x < stop) else zero


@numba.njit(cache=True, inline="always")
def _vectors(start, stop):
    """Pixels from `start` covered by whole VECTORs up to `stop`: short spans stay off the compiled loop's
    scalar remainder."""
    return (stop - start + VECTOR - 1) // VECTOR * VECTOR


@numba.njit(cache=True, inline="always")
def _weights(X, dy, p, q, r, xs, stop, consts, n, weights):
    """weights[k] = `_weight` at pixel x = xs[k], for k < n."""
    for k in range(n):
        weights[k] = _weight(X, dy, p, q, r, xs[k], stop, consts)


def _offset(x0, k):
    """x0 + k in x0's dtype (exact: pixel coordinates are integers)."""
    return x0 + k


@overload(_offset, inline="always")
def _offset_overload(x0, k):
    if x0 == numba.float32:
        return lambda x0, k: x0 + np.float32(k)
    return lambda x0, k: x0 + np.float64(k)


@numba.njit(cache=True, inline="always")
def _accumulate(X, dy, p, q, r, x0, stop, consts, n, c0, c1, c2, rows):
    """rows[c·ROW_STRIDE + k] += colour_c·`_weight` at pixel x = x0 + k, for three channels c at once, k < n (the
    weights of `_weights`, fused: one pass, no buffer). Called with n = VECTOR, a compile-time constant once
    inlined, the loop compiles to straight vector code (a strip row)."""
    for k in range(n):
        w = _weight(X, dy, p, q, r, _offset(x0, k), stop, consts)
        rows[k] += w * c0
        rows[k + ROW_STRIDE] += w * c1
        rows[k + 2 * ROW_STRIDE] += w * c2


@numba.njit(cache=True, inline="always")
def _box(X, Y, ex, ey, row_first, row_last, col_first, col_last):
    """The pixels (ya, yb, xa, xb) of a Gaussian's α ≥ 1/255 box within rows/columns [first, last], for
    range(); empty (ya = yb) for a degenerate Gaussian or one outside."""
    if not (ex > 0 and ey > 0):
        return 0, 0, 0, 0
    ya, yb = _span(float(Y) - ey, float(Y) + ey, row_first, row_last)
    xa, xb = _span(float(X) - ex, float(X) + ex, col_first, col_last)
    if ya >= yb or xa >= xb:
        return 0, 0, 0, 0
    return ya, yb, xa, xb


@numba.njit(cache=True, inline="always")
def _row(X, Y, p, q, r, i, xa, xb):
    """The pixels [ja, jb) of row i of a box [xa, xb) that the Gaussian can draw: the whole box row when it is
    narrow (ROW_SPAN_MIN_WIDTH), else trimmed to the span where σ can be ≤ ln 255 (`_row_span`)."""
    if xb - xa <= ROW_SPAN_MIN_WIDTH:
        return xa, xb
    p64, q64, r64 = float(p), float(q), float(r)
    lo, hi = _row_span(float(X), float(Y) - i, p64, q64, r64, p64 * p64 + r64 * r64 * q64 * q64)
    return _span(lo, hi, xa, xb - 1)


@numba.njit(cache=True, inline="always")
def _tile_row(group, row):
    """Offset in a forward tile's flat accumulator of channel group `group`'s first channel on tile row `row`."""
    return (group * TILE_H + row) * CHANNEL_GROUP * ROW_STRIDE


# `contract` lets the compiler fuse multiply-adds (one rounding instead of two: no less exact), here and in the
# backward, whose weights must be the forward's.
@numba.njit(cache=True, parallel=True, fastmath={"contract"})
def _forward(xy, cholesky, colour, projection, grid_x, grid_y, consts, out):
    """out (B, C, H, W) = Σ_g colour_g·α_g of `rasterize`'s inputs, each Gaussian projected where a tile meets it
    (`_centre_extents`, `_factors`). projection: `_centre_extents`'s constants; grid_x/grid_y: pixel coordinates
    0..W−1+VECTOR / 0..H−1, consts: (½, 1/255, SIGMA_CLAMP), all in the input's dtype."""
    batch, hg, wg, channels = colour.shape
    height, width = out.shape[2], out.shape[3]
    one = projection[5]
    boxes = np.empty((batch, hg, wg, 4), grid_x.dtype)
    x_lo, x_hi, y_lo, y_hi = _reach(xy, cholesky, projection, height, width, boxes)
    if not (x_lo <= x_hi and y_lo <= y_hi):  # no valid Gaussian
        out[:] = 0
        return
    tiles_y, tiles_x = (height + TILE_H - 1) // TILE_H, (width + TILE_W - 1) // TILE_W
    groups = (channels + CHANNEL_GROUP - 1) // CHANNEL_GROUP
    for task in numba.prange(batch * tiles_y * tiles_x):
        b = task // (tiles_y * tiles_x)
        i0 = (task // tiles_x) % tiles_y * TILE_H
        j0 = task % tiles_x * TILE_W
        i1, j1 = min(i0 + TILE_H, height) - 1, min(j0 + TILE_W, width) - 1
        # The tile's sums (`_tile_row`), each row a vector wider than the tile for the overhang; channels past
        # the last of a group are scratch.
        acc = np.zeros(_tile_row(groups, 0), grid_x.dtype)
        zero = consts[0] - consts[0]
        # Cell (r, c) draws within [anchor + lo, anchor + hi]; keep those that overlap the tile.
        r_start, r_stop = _span((i0 - y_hi) * hg / height, (i1 - y_lo) * hg / height, 0, hg - 1)
        c_start, c_stop = _span((j0 - x_hi) * wg / width, (j1 - x_lo) * wg / width, 0, wg - 1)
        for gr in range(r_start, r_stop):
            for gc in range(c_start, c_stop):
                X, Y, ex, ey = boxes[b, gr, gc, 0], boxes[b, gr, gc, 1], boxes[b, gr, gc, 2], boxes[b, gr, gc, 3]
                ya, yb, xa, xb = _box(X, Y, ex, ey, i0, i1, j0, j1)
                if ya >= yb:  # outside the tile, or degenerate
                    continue
                p, q, r = _factors(cholesky, b, gr, gc, one)
                for ch in range(0, channels, CHANNEL_GROUP):
                    c0 = colour[b, gr, gc, ch]
                    c1 = colour[b, gr, gc, ch + 1] if ch + 1 < channels else zero
                    c2 = colour[b, gr, gc, ch + 2] if ch + 2 < channels else zero
                    group = ch // CHANNEL_GROUP
                    if xb - xa <= ROW_SPAN_MIN_WIDTH:  # 8-column strips, each drawn row by row
                        stop = grid_x[xb]
                        for xs0 in range(xa, xb, VECTOR):
                            x0 = grid_x[xs0]
                            at = _tile_row(group, ya - i0) + xs0 - j0
                            for i in range(ya, yb):
                                _accumulate(X, Y - grid_y[i], p, q, r, x0, stop, consts, VECTOR, c0, c1, c2,
                                            acc[at:])
                                at += CHANNEL_GROUP * ROW_STRIDE
                    else:  # rows, each trimmed to its span
                        for i in range(ya, yb):
                            ja, jb = _row(X, Y, p, q, r, i, xa, xb)
                            if ja >= jb:
                                continue
                            n, dy, stop = _vectors(ja, jb), Y - grid_y[i], grid_x[jb]
                            at = _tile_row(group, i - i0) + ja - j0
                            _accumulate(X, dy, p, q, r, grid_x[ja], stop, consts, n, c0, c1, c2, acc[at:])
        for ch in range(channels):  # whole rows at once (an element-wise copy would check each index's sign)
            for i in range(i0, i1 + 1):
                at = _tile_row(ch // CHANNEL_GROUP, i - i0) + ch % CHANNEL_GROUP * ROW_STRIDE
                out[b, ch, i, j0:j1 + 1] = acc[at:at + j1 + 1 - j0]


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def _row_gradients(X, dy, p, q, r, xs, weights, n, zero, c0, c1, c2, g0, g1, g2):
    """Sums over one row span of a Gaussian's gradients: (colours c0..c2, X, Y, p, q, r) for three channels
    of the output gradient g0..g2, from the weights of `_weights`. In the input's dtype, in any order
    (`reassoc` lets the sums vectorise; the weights themselves are computed without it, as in the forward)."""
    s_c0 = s_c1 = s_c2 = s_x = s_y = s_p = s_q = s_r = zero
    for k in range(n):
        w = weights[k]
        s_c0 += w * g0[k]
        s_c1 += w * g1[k]
        s_c2 += w * g2[k]
        # d out / d σ = −α·colour; σ = ½(u² + v²), u = p·dx, v = r·(dy − q·dx)
        d_sigma = -w * (g0[k] * c0 + g1[k] * c1 + g2[k] * c2)
        dx = X - xs[k]
        e = dy - q * dx
        rv = r * r * e  # ∂σ/∂dy
        s_x += d_sigma * (p * p * dx - q * rv)
        s_y += d_sigma * rv
        s_p += d_sigma * p * dx * dx
        s_q -= d_sigma * rv * dx
        s_r += d_sigma * r * e * e
    return s_c0, s_c1, s_c2, s_x, s_y, s_p, s_q, s_r


@numba.njit(cache=True, parallel=True, fastmath={"contract"})
def _backward(xy, cholesky, colour, projection, grid_x, grid_y, consts, grad_out, grad_xy, grad_cholesky,
              grad_colour):
    """Gradients of Σ grad_out·out with respect to `rasterize`'s inputs (normalised centres, Cholesky factors,
    colours), the constants as `_forward`'s: each Gaussian, projected as the forward projects it, gathers the gradients of its centre (X, Y), inverse factor (p, q, r) and colour over
    its own pixels (row sums in the input's dtype, totals in float64), then takes them through the projection
    (X = W(x + 1)/2, p = 1/l11, q = l21/l11, r = 1/l22; nothing for a degenerate Gaussian). The grad_* arrays
    are written whole. grad_out: (B, C, H, W + VECTOR), zero beyond W."""
    batch, hg, wg, channels = colour.shape
    height, width = grad_out.shape[2], grad_out.shape[3] - VECTOR
    zero, one = consts[0] - consts[0], projection[5]
    groups = (channels + CHANNEL_GROUP - 1) // CHANNEL_GROUP
    for task in numba.prange(batch * hg):
        b, gr = task // hg, task % hg
        g_colour = np.empty(groups * CHANNEL_GROUP)
        weights = np.empty(width + VECTOR, grid_x.dtype)
        zero_row = np.zeros(width + VECTOR, grid_x.dtype)  # the output gradient of channels past the last
        for gc in range(wg):
            g_colour[:] = 0.0
            g_x = g_y = g_p = g_q = g_r = 0.0
            X, Y, ex, ey = _centre_extents(xy, cholesky, b, gr, gc, projection)
            ya, yb, xa, xb = _box(X, Y, ex, ey, 0, height - 1, 0, width - 1)
            p, q, r = _factors(cholesky, b, gr, gc, one)
            for i in range(ya, yb):
                ja, jb = _row(X, Y, p, q, r, i, xa, xb)
                if ja >= jb:
                    continue
                n, dy, xs = _vectors(ja, jb), Y - grid_y[i], grid_x[ja:]
                _weights(X, dy, p, q, r, xs, grid_x[jb], consts, n, weights)
                for ch in range(0, channels, CHANNEL_GROUP):
                    c0 = colour[b, gr, gc, ch]
                    c1 = colour[b, gr, gc, ch + 1] if ch + 1 < channels else zero
                    c2 = colour[b, gr, gc, ch + 2] if ch + 2 < channels else zero
                    g0 = grad_out[b, ch, i, ja:]
                    g1 = grad_out[b, ch + 1, i, ja:] if ch + 1 < channels else zero_row
                    g2 = grad_out[b, ch + 2, i, ja:] if ch + 2 < channels else zero_row
                    sums = _row_gradients(X, dy, p, q, r, xs, weights, n, zero, c0, c1, c2, g0, g1, g2)
                    g_colour[ch] += sums[0]
                    g_colour[ch + 1] += sums[1]
                    g_colour[ch + 2] += sums[2]
                    g_x += sums[3]
                    g_y += sums[4]
                    g_p += sums[5]
                    g_q += sums[6]
                    g_r += sums[7]
            grad_xy[b, gr, gc, 0], grad_xy[b, gr, gc, 1] = g_x * (width / 2), g_y * (height / 2)
            valid = ex > 0
            p64, q64, r64 = float(p), float(q), float(r)
            grad_cholesky[b, gr, gc, 0] = -(g_p * p64 + g_q * q64) * p64 if valid else 0.0
            grad_cholesky[b, gr, gc, 1] = g_q * p64 if valid else 0.0
            grad_cholesky[b, gr, gc, 2] = -g_r * r64 * r64 if valid else 0.0
            for ch in range(channels):
                grad_colour[b, gr, gc, ch] = g_colour[ch] if valid else 0.0


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


# The per-size constants below are remembered for the last few sizes (a sweep or a viewer asks for the same
# sizes again); the kernels only read them.
SIZE_CACHE = 64


@functools.lru_cache(maxsize=SIZE_CACHE)
def _grids_and_consts(dtype: torch.dtype, height: int, width: int) -> tuple[np.ndarray, ...]:
    """Pixel coordinates and the constants (½, 1/255, SIGMA_CLAMP) in the kernel's dtype, so that every operation on
    per-pixel values stays in that dtype (as in the torch reference)."""
    return (torch.arange(width + VECTOR, dtype=dtype).numpy(), torch.arange(height, dtype=dtype).numpy(),
            torch.tensor([0.5, ALPHA_MIN, SIGMA_CLAMP], dtype=dtype).numpy())


def _set_threads() -> None:
    """Use as many threads as torch does (e.g. 1 in a process that torch.set_num_threads(1) limits)."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


@functools.lru_cache(maxsize=SIZE_CACHE)
def _projection_consts(dtype: torch.dtype, height: int, width: int) -> np.ndarray:
    """`_centre_extents`'s constants in the kernel's dtype, as torch rounds the Python numbers of `projection.project`."""
    return torch.tensor([width, height, 2 * SIGMA_MAX, 1 + EXTENT_SLACK, EXTENT_SLACK, 1, 2], dtype=dtype).numpy()


class _RasterizeNumba(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xy, cholesky, colour, height, width):
        batch, _, _, channels = colour.shape
        out = torch.empty(batch, channels, height, width, dtype=colour.dtype)
        with _KERNEL_LOCK:
            _set_threads()
            _forward(*(_numpy(t) for t in (xy, cholesky, colour)), _projection_consts(colour.dtype, height, width),
                     *_grids_and_consts(colour.dtype, height, width), out.numpy())
        ctx.save_for_backward(xy, cholesky, colour)
        ctx.size = (height, width)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        xy, cholesky, colour = ctx.saved_tensors
        height, width = ctx.size
        dtype = colour.dtype
        grads = [torch.empty(t.shape, dtype=dtype) for t in (xy, cholesky, colour)]
        grad_pix = torch.nn.functional.pad(grad_out.to(dtype), (0, VECTOR)).numpy()
        with _KERNEL_LOCK:
            _set_threads()
            _backward(*(_numpy(t) for t in (xy, cholesky, colour)), _projection_consts(dtype, height, width),
                      *_grids_and_consts(dtype, height, width), grad_pix, *(g.numpy() for g in grads))
        return (*grads, None, None)


def supports(device: torch.device) -> bool:
    return device.type == "cpu"


def rasterize_numba(xy: torch.Tensor, cholesky: torch.Tensor, colour: torch.Tensor, height: int,
                    width: int) -> torch.Tensor:
    """The plain α-weighted colour sum, (B, C, height, width), of `rasterizer.rasterize`'s inputs, projected
    here (`_centre_extents`, `_factors`), in float32 or float64 as the input (other dtypes are computed in float32 and returned in
    their own)."""
    dtype = colour.dtype
    kernel_dtype = dtype if dtype in DTYPES else torch.float32
    out = _RasterizeNumba.apply(*(t.to(kernel_dtype) for t in (xy, cholesky, colour)), height, width)
    return out.to(dtype)


def compile_kernels(dtype: torch.dtype = torch.float32) -> None:
    """Compile the kernels an inference render calls in `dtype` (or load them from numba's disk cache) by running them
    on a two-Gaussian field. Setup (scripts/bootstrap.sh) calls this so that a first render does not wait for the
    compiler (~10 s on a 2-core CPU, most of it `_forward`)."""
    height, width = 2, 4
    offset = torch.zeros(1, 1, 2, 2, dtype=dtype)
    cholesky = torch.tensor([1.0, 0.0, 1.0], dtype=dtype).expand(1, 1, 2, 3).contiguous()
    rasterize_numba(offset, cholesky, torch.ones(1, 1, 2, 3, dtype=dtype), height, width)
    # The whole 1x2-cell lattice at x2: (f, left, top, win_w, win_h, 1/W, 1/H, s_x, s_y) as `lattice_points` takes them.
    lattice_points(offset, cholesky, (0, 1), (0, 2), (1, 0, 0, width, height, 1 / width, 1 / height, 2, 2))


def lattice_points(offset: torch.Tensor, cholesky: torch.Tensor, rows: tuple[int, int], cols: tuple[int, int],
                   consts: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """`rasterizer.lattice_points` compiled: CPU tensors in float32 or float64, without gradients."""
    dtype = offset.dtype
    shape = (offset.shape[0], rows[1] - rows[0], cols[1] - cols[0])
    xy, scaled = torch.empty(shape + (2,), dtype=dtype), torch.empty(shape + (3,), dtype=dtype)
    _lattice_points(_numpy(offset), _numpy(cholesky), np.array(rows, np.int64), np.array(cols, np.int64),
                    torch.tensor((*consts, 1, 2), dtype=dtype).numpy(), xy.numpy(), scaled.numpy())
    return xy, scaled
