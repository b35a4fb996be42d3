"""The evaluation protocol of the LIIF family (docs/DESIGN.md §7), one module per job: test configs and a run's
options (`schema`), the test data and the sizes it is scored at (`data`), the model scored (`loading`: a checkpoint
or the bicubic baseline), the loop (`loop`), the report (`report`), PSNR / SSIM as the SR literature computes them
(`metrics`) and MATLAB-compatible bicubic resizing (`imresize`).

Import the modules themselves (`from evaluation import metrics`); this package imports nothing.
"""
