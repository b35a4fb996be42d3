"""The report of an evaluation: a table of PSNR / SSIM per image and scale, the means, the model's time per image,
and LIIF's `result:` line."""
from __future__ import annotations

from evaluation.loop import Evaluation, scale_label


def format_report(result: Evaluation, title: str = "") -> str:
    """Per-image PSNR / SSIM at each scale, the means, the model time per image, and LIIF's `result:` line."""
    header = ["image"] + [scale_label(s) for s in result.scales]
    rows = [[name] + [f"{result.psnr[s][i]:.4f} / {result.ssim[s][i]:.4f}" for s in result.scales]
            for i, name in enumerate(result.names)]
    rows.append(["mean"] + [f"{result.mean('psnr', s):.4f} / {result.mean('ssim', s):.4f}" for s in result.scales])
    rows.append(["s/image"] + [f"{result.seconds_per_image(s):.4f}" for s in result.scales])
    widths = [max(len(row[c]) for row in [header] + rows) for c in range(len(header))]
    lines = [title] if title else []
    lines.append(f"PSNR (dB) / SSIM, {result.protocol.kind} protocol; references below "
                 f"x{result.protocol.scale:g} are the HR image downscaled (MATLAB bicubic)"
                 if len(result.scales) > 1 else f"PSNR (dB) / SSIM, {result.protocol.kind} protocol")
    for row in [header] + rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    native = result.protocol.scale
    if native in result.psnr:
        lines.append(f"result: PSNR {result.mean('psnr', native):.4f} dB, SSIM {result.mean('ssim', native):.4f} "
                     f"at x{native:g} over {len(result.names)} images, {result.seconds_per_image(native):.4f} s/image "
                     f"(encode {sum(result.encode_seconds) / len(result.encode_seconds):.4f} s)")
    return "\n".join(lines)
