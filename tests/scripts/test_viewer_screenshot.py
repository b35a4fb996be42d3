"""scripts/viewer_screenshot.py's size bound (the browser-driving helpers run in tests/test_viewer_browser.py)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from scripts.viewer_screenshot import SCREENSHOT_WIDTHS, small_png


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_screenshot_that_fits_is_kept_whole():
    flat = png(np.full((720, 1280, 3), 40, np.uint8))
    with Image.open(io.BytesIO(small_png(flat, 300_000))) as image:
        assert image.size == (1280, 720) and image.mode == "RGB"


def test_a_large_screenshot_is_narrowed_until_it_fits():
    noise = png(np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8))  # ~2.7 MB
    limit = 1_200_000
    result = small_png(noise, limit)
    assert len(result) <= limit
    with Image.open(io.BytesIO(result)) as image:
        assert image.width in SCREENSHOT_WIDTHS and image.width < 1280 and image.mode == "RGB"
        assert abs(image.height / image.width - 720 / 1280) < 0.01
