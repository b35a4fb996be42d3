"""Inference helpers around the model: image I/O, bicubic resizing, tiled encoding, rendering windows and zooms.

Import the modules themselves (`from inference import tiling`); this package imports nothing, so that light users
(the datasets' image reading) do not load the model code.
"""
