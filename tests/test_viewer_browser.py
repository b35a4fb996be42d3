"""viewer.py's page in a real headless Chromium (Debian's chromium + chromium-driver, through selenium): upload,
zoom, pan, the split comparison, the preview while an image encodes, the page's layout and an error, checked against
the server's own renders; skipped without a browser."""
from __future__ import annotations

import base64
import contextlib
import io
import json
import threading
import urllib.parse
import urllib.request
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from conftest import smooth_image, viewer_settings
from inference.image_io import write_image
from scripts.viewer_screenshot import find_browser, headless_chromium, open_image, running_viewer, wait_rendered, \
    wheel

pytest.importorskip("selenium")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")
import viewer  # noqa: E402
from inference import viewer_app  # noqa: E402

BROWSER = find_browser()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(BROWSER is None, reason="needs chromium and chromedriver (apt-get install chromium "
                                                         "chromium-driver; scripts/bootstrap.sh --dev does)")]
LR_H, LR_W = 48, 64
# 8-bit rounding of the same float image, drawn by the canvas and decoded by PIL.
MAX_PIXEL_DIFFERENCE = 1
DRAG_PX = 60
DESKTOP = (1280, 800)  # a common laptop screen, in CSS pixels: the header must fit on one line
LOOPBACK = "127.0.0.1"
STOP_TIMEOUT_S = 30


def canvas_pixels(session, x: int, y: int, width: int, height: int) -> np.ndarray:
    """(height, width, 3) of the page's canvas, read back through a PNG data URL."""
    url = session.execute_script("""
        const [x, y, w, h] = arguments, source = document.getElementById('canvas');
        const crop = document.createElement('canvas');
        crop.width = w; crop.height = h;
        crop.getContext('2d').drawImage(source, x, y, w, h, 0, 0, w, h);
        return crop.toDataURL('image/png');""", x, y, width, height)
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        return np.asarray(image.convert("RGB")).astype(np.int16)


def server_json(base: str, path: str) -> dict:
    with urllib.request.urlopen(urllib.parse.urljoin(base, path), timeout=60) as response:
        return json.load(response)


def server_png(base: str, path: str) -> np.ndarray:
    with urllib.request.urlopen(urllib.parse.urljoin(base, path), timeout=60) as response:
        with Image.open(io.BytesIO(response.read())) as image:
            return np.asarray(image.convert("RGB")).astype(np.int16)


def window_of(url: str) -> dict[str, float]:
    return {k: float(v[0]) for k, v in urllib.parse.parse_qs(urllib.parse.urlparse(url).query).items()
            if k != "method"}


def integers(state: dict) -> tuple[int, int, int, int]:
    return tuple(int(state[k]) for k in ("renderX", "renderY", "renderWidth", "renderHeight"))


def shows_render(session, base: str, state: dict) -> None:
    """The canvas shows the server's answer to state's renderUrl, pixel for pixel, where the page says it is."""
    x, y, width, height = integers(state)
    rendered = server_png(base, state["renderUrl"])
    assert rendered.shape == (height, width, 3)
    assert np.abs(canvas_pixels(session, x, y, width, height) - rendered).max() <= MAX_PIXEL_DIFFERENCE


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """`app` served on a free loopback port from a thread of this process (so that a test can reach into the
    server); yields its address."""
    sock = viewer.listen(LOOPBACK, 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT_S)
        sock.close()


def test_upload_zoom_pan_and_compare_in_a_browser(tmp_path, tiny_checkpoint):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select, WebDriverWait

    image = tmp_path / "waves.png"
    write_image(image, smooth_image(LR_H, LR_W))
    with running_viewer("--model", str(tiny_checkpoint)) as base, headless_chromium(*BROWSER) as session:
        open_image(session, base, image)
        canvas = session.execute_script("const c = document.getElementById('canvas'); return [c.width, c.height];")
        ratio = session.execute_script("return window.devicePixelRatio;")

        # Zoom in with the wheel: the image now overflows the canvas, so the render covers all of it, at the
        # screen's resolution (zoom x devicePixelRatio output pixels per input pixel).
        before = wait_rendered(session)
        wheel(session, 8, 0.3, 0.6)
        zoomed = wait_rendered(session, not_url=before["renderUrl"])
        zoom = float(zoomed["zoom"].lstrip("x"))
        assert zoom > 3 * float(before["zoom"].lstrip("x"))  # eight notches of the wheel
        assert integers(zoomed) == (0, 0, *canvas)
        window = window_of(zoomed["renderUrl"])
        assert (window["out_width"], window["out_height"]) == tuple(canvas)
        assert window["out_width"] / window["width"] == pytest.approx(zoom * ratio, rel=0.01)  # the label rounds
        # What the canvas shows is the server's render of that window, pixel for pixel.
        shows_render(session, base, zoomed)

        # Drag to pan: the next view's window moves the other way by the drag / zoom.
        canvas_element = session.find_element("id", "canvas")
        ActionChains(session).drag_and_drop_by_offset(canvas_element, DRAG_PX, 0).perform()
        panned = wait_rendered(session, not_url=zoomed["renderUrl"])
        moved = window_of(panned["renderUrl"])
        assert moved["left"] == pytest.approx(window["left"] - DRAG_PX / zoom, abs=2 / zoom)
        assert moved["top"] == pytest.approx(window["top"], abs=1e-6)

        # Split: bicubic (the server's) left of the line, ContinuousSR right of it.
        Select(session.find_element("id", "mode")).select_by_value("split")
        split = wait_rendered(session)
        x, y, width, height = integers(split)
        shown = canvas_pixels(session, x, y, width, height)
        bicubic = server_png(base, split["renderUrl"].replace("method=sr", "method=bicubic"))
        rendered = server_png(base, split["renderUrl"])
        line = round(canvas[0] / 2) - x  # the split line, in the render's columns
        margin = 4  # the split line's own pixels
        assert np.abs(shown[:, :line - margin] - bicubic[:, :line - margin]).max() <= MAX_PIXEL_DIFFERENCE
        assert np.abs(shown[:, line + margin:] - rendered[:, line + margin:]).max() <= MAX_PIXEL_DIFFERENCE
        assert np.abs(bicubic - rendered).mean() > 1  # the two halves differ: a comparison, not one image twice
        session.save_screenshot(str(tmp_path / "viewer.png"))
        assert Image.open(tmp_path / "viewer.png").size[0] >= canvas[0]

        # A file that is not an image: the server's one-line error, on the page.
        bad = tmp_path / "notes.png"
        bad.write_text("not an image")
        session.find_element("id", "file").send_keys(str(bad))
        error = WebDriverWait(session, 60).until(
            lambda s: s.find_element("id", "error").text or False)
        assert error == "not an image (or an unsupported format): notes.png"



def test_bicubic_preview_while_the_image_encodes_and_the_layout_at_1280_px(tmp_path, tiny_sr_model):
    image = tmp_path / "IMG_20240612_183512_a_long_name_as_cameras_and_phones_write_them.png"
    write_image(image, smooth_image(LR_H, LR_W))
    app = viewer_app.create_app(tiny_sr_model, viewer_settings())
    with serving(app) as base, headless_chromium(*BROWSER, viewport=DESKTOP) as session:
        session.get(base)
        with app.state.viewer.compute:  # renders and encodes take this lock: the encode waits until it is let go
            session.find_element("id", "file").send_keys(str(image))
            preview = wait_rendered(session, shows="preview")
            entry = urllib.parse.urlparse(preview["renderUrl"]).path.split("/")[3]
            assert server_json(base, f"/api/images/{entry}")["state"] == viewer_app.ENCODING
            # The server's bicubic of the view, labelled as a preview; the view can be zoomed, not yet downloaded.
            assert "method=bicubic" in preview["renderUrl"]
            shows_render(session, base, preview)
            label = session.find_element("id", "preview")
            assert label.is_displayed() and "preview" in label.text.lower()
            assert session.find_element("id", "zoom").is_enabled()
            assert not session.find_element("id", "download-view").is_enabled()
            wheel(session, 4)
            zoomed = wait_rendered(session, not_url=preview["renderUrl"], shows="preview")
            assert float(zoomed["zoom"].lstrip("x")) > float(preview["zoom"].lstrip("x"))
            shows_render(session, base, zoomed)

        # Encoded: ContinuousSR replaces the preview in the same view, and the label goes.
        rendered = wait_rendered(session)
        assert rendered["renderUrl"] == zoomed["renderUrl"].replace("method=bicubic", "method=sr")
        shows_render(session, base, rendered)
        assert np.abs(server_png(base, rendered["renderUrl"]) - server_png(base, zoomed["renderUrl"])).mean() > 1
        assert not session.find_element("id", "preview").is_displayed()
        assert session.find_element("id", "download-view").is_enabled()
        assert image.name in session.find_element("id", "name").get_attribute("title")

        # The header is one line at 1280 px: no control starts below another's bottom edge.
        boxes = session.execute_script("return [...document.querySelectorAll('header > *')]"
                                       ".map((e) => e.getBoundingClientRect()).map((r) => [r.top, r.bottom]);")
        assert max(top for top, _ in boxes) < min(bottom for _, bottom in boxes)
        session.save_screenshot(str(tmp_path / "viewer.png"))
        assert Image.open(tmp_path / "viewer.png").size == DESKTOP

        # Nothing the page asked for failed (the favicon included) and no script error.
        assert [entry for entry in session.get_log("browser") if entry["level"] == "SEVERE"] == []
