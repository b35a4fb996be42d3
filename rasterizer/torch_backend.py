"""Reference rasterizer in plain torch: exact on any device, differentiable, memory bounded by chunking.

Each Gaussian is evaluated on the pixels of its own α ≥ 1/255 bounding box, taken from the actual field, so
no field (large covariances, far drifts) is ever cut; the box is clipped to the image, so that a Gaussian far
larger than the image (a deep zoom) costs no more than the image. Gaussians are sorted by box size and processed in
chunks whose box is the largest in the chunk; a chunk never holds more than `CHUNK_ELEMENTS` evaluations.
The forward scatters into the image; the backward gathers the output gradient back (no atomics needed).
"""
from __future__ import annotations

import torch

from .projection import ALPHA_MIN, ProjectedGaussians

CHUNK_ELEMENTS = 1 << 22


def _chunks(extents: torch.Tensor, means: torch.Tensor, height: int, width: int):
    """Yield (indices, box_h, box_w) over the Gaussians that can touch the image, sorted by box size."""
    lo = torch.ceil(means - extents)
    hi = torch.floor(means + extents)
    last = torch.tensor([width - 1, height - 1], dtype=means.dtype, device=means.device)
    # the integer pixel positions of each box inside the image, per axis (≤ 0 for boxes that miss it)
    box = (torch.minimum(hi, last) - lo.clamp(min=0) + 1).clamp(min=0).to(torch.long)
    touches = ((extents > 0).all(-1) & (hi[:, 0] >= 0) & (lo[:, 0] <= width - 1)
               & (hi[:, 1] >= 0) & (lo[:, 1] <= height - 1))
    idx = torch.nonzero(touches).squeeze(1)
    if idx.numel() == 0:
        return
    size = box[idx].amax(-1)
    order = torch.argsort(size, descending=True)
    idx, box = idx[order], box[idx[order]]
    start = 0
    n = idx.numel()
    while start < n:
        box_w, box_h = (int(v) for v in box[start])  # the first of a chunk is (nearly) its largest
        count = max(1, CHUNK_ELEMENTS // max(1, box_w * box_h))  # a box can hold no pixel on one axis
        stop = min(n, start + count)
        box_w, box_h = (int(v) for v in box[start:stop].amax(0))
        yield idx[start:stop], box_h, box_w
        start = stop


def _evaluate(means, inv_factors, extents, height, width, box_h, box_w):
    """Weights α·[drawn] on each Gaussian's box, the flat pixel index of each box cell, and dx, dy."""
    device = means.device
    x0 = torch.ceil(means[:, 0] - extents[:, 0]).clamp(min=0).to(torch.long)  # the box's first pixel in the image
    y0 = torch.ceil(means[:, 1] - extents[:, 1]).clamp(min=0).to(torch.long)
    xs = x0[:, None] + torch.arange(box_w, device=device)  # (G, box_w)
    ys = y0[:, None] + torch.arange(box_h, device=device)  # (G, box_h)
    dx = (means[:, 0:1] - xs.to(means.dtype))[:, None, :]  # (G, 1, box_w)
    dy = (means[:, 1:2] - ys.to(means.dtype))[:, :, None]  # (G, box_h, 1)
    p, q, r = (inv_factors[:, k, None, None] for k in range(3))
    u = p * dx
    v = r * (dy - q * dx)
    sigma = 0.5 * (u * u + v * v)
    alpha = torch.exp(-sigma)
    inside = ((xs >= 0) & (xs < width))[:, None, :] & ((ys >= 0) & (ys < height))[:, :, None]
    drawn = (sigma >= 0) & (alpha >= ALPHA_MIN) & inside
    weight = torch.where(drawn, alpha, torch.zeros_like(alpha))  # σ ≥ 0 already keeps α ≤ 1
    pixel = ys.clamp(0, height - 1)[:, :, None] * width + xs.clamp(0, width - 1)[:, None, :]
    return weight, pixel, dx, dy


class _RasterizeSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, inv_factors, colours, extents, height, width):
        batch, n, channels = colours.shape
        out = colours.new_zeros(batch * height * width, channels)
        flat = _flatten(means, inv_factors, colours, extents, height, width)
        for idx, box_h, box_w in _chunks(flat["extents"], flat["means"], height, width):
            weight, pixel, _, _ = _evaluate(flat["means"][idx], flat["inv_factors"][idx], flat["extents"][idx],
                                               height, width, box_h, box_w)
            pixel = pixel + (flat["batch"][idx] * height * width)[:, None, None]
            contrib = weight[..., None] * flat["colours"][idx][:, None, None, :]
            out.index_add_(0, pixel.reshape(-1), contrib.reshape(-1, channels))
        ctx.save_for_backward(means, inv_factors, colours, extents)
        ctx.size = (height, width)
        return out.view(batch, height, width, channels).permute(0, 3, 1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        means, inv_factors, colours, extents = ctx.saved_tensors
        height, width = ctx.size
        batch, n, channels = colours.shape
        grad_pix = grad_out.permute(0, 2, 3, 1).reshape(-1, channels)
        flat = _flatten(means, inv_factors, colours, extents, height, width)
        grad_means = torch.zeros_like(flat["means"])
        grad_factors = torch.zeros_like(flat["inv_factors"])
        grad_colours = torch.zeros_like(flat["colours"])
        for idx, box_h, box_w in _chunks(flat["extents"], flat["means"], height, width):
            factors = flat["inv_factors"][idx]
            weight, pixel, dx, dy = _evaluate(flat["means"][idx], factors, flat["extents"][idx],
                                              height, width, box_h, box_w)
            pixel = pixel + (flat["batch"][idx] * height * width)[:, None, None]
            g = grad_pix[pixel.reshape(-1)].view(*pixel.shape, channels)  # (G, box_h, box_w, C)
            grad_colours[idx] = torch.einsum("gyxc,gyx->gc", g, weight)
            # d out / d σ = −α·colour; masked-out cells have zero weight and so contribute nothing.
            d_sigma = -weight * torch.einsum("gyxc,gc->gyx", g, flat["colours"][idx])
            # σ = ½(u² + v²) with u = p·dx, v = r·(dy − q·dx), dx = X − j, dy = Y − i.
            p, q, r = (factors[:, k, None, None] for k in range(3))
            e = dy - q * dx
            rv = r * r * e  # ∂σ/∂dy
            grad_means[idx, 0] = (d_sigma * (p * p * dx - q * rv)).sum((1, 2))
            grad_means[idx, 1] = (d_sigma * rv).sum((1, 2))
            grad_factors[idx, 0] = (d_sigma * p * dx * dx).sum((1, 2))
            grad_factors[idx, 1] = (d_sigma * -rv * dx).sum((1, 2))
            grad_factors[idx, 2] = (d_sigma * r * e * e).sum((1, 2))
        shape = means.shape[:-1]
        return (grad_means.view(*shape, 2), grad_factors.view(*shape, 3), grad_colours.view(*shape, channels),
                None, None, None)


def _flatten(means, inv_factors, colours, extents, height, width):
    batch = means.shape[0]
    n = means[0, ..., 0].numel()
    batch_index = torch.arange(batch, device=means.device).repeat_interleave(n)
    return {"means": means.reshape(-1, 2), "inv_factors": inv_factors.reshape(-1, 3),
            "colours": colours.reshape(batch * n, -1), "extents": extents.reshape(-1, 2), "batch": batch_index}


def rasterize_torch(gaussians: ProjectedGaussians, height: int, width: int) -> torch.Tensor:
    """Plain sum of the Gaussians' colours weighted by α at every pixel: (B, C, height, width)."""
    batch = gaussians.means.shape[0]
    channels = gaussians.colours.shape[-1]
    return _RasterizeSum.apply(gaussians.means.reshape(batch, -1, 2), gaussians.inv_factors.reshape(batch, -1, 3),
                               gaussians.colours.reshape(batch, -1, channels),
                               gaussians.extents.reshape(batch, -1, 2), height, width)
