"""The evaluation protocol of the LIIF family (docs/DESIGN.md §7): scoring test configs (`protocol`), PSNR / SSIM as
the SR literature computes them (`metrics`) and MATLAB-compatible bicubic resizing (`imresize`).

Import the modules themselves (`from evaluation import metrics`); this package imports nothing.
"""
