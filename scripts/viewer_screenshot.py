"""Drive viewer.py's page in headless Chromium: start the server, open an image, zoom, wait for the render.

    python scripts/viewer_screenshot.py [--model CKPT] [--image assets/example.png] [--out assets/viewer.png]

Without arguments it makes the README's screenshot: the bundled model, the bundled example, split view
(bicubic | ContinuousSR) zoomed in with the mouse wheel. The helpers here also drive tests/test_viewer_browser.py.
Needs Debian's chromium and chromium-driver (scripts/bootstrap.sh --dev installs them) and selenium.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from entry_point import OneLineParser  # noqa: E402  (the standard library only)
BROWSERS = ("chromium", "chromium-browser")
DRIVERS = ("chromedriver",)
# A fresh, quiet, offline headless browser: no sandbox (root, containers), no GPU, no network of its own.
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--force-device-scale-factor=1", "--hide-scrollbars")
VIEWPORT = (1280, 720)  # the page's size in CSS pixels (the window is made larger by its own frame)
START_TIMEOUT_S = 120
WAIT_TIMEOUT_S = 180
WHEEL_NOTCH = -100  # deltaY of one wheel notch towards zooming in
SCREENSHOT_WHEEL_NOTCHES = 6
SCREENSHOT_MAX_BYTES = 300_000
SCREENSHOT_WIDTHS = (1280, 1120, 960, 880, 800, 720, 640)  # tried in turn until the PNG fits in SCREENSHOT_MAX_BYTES


def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) executables, or None when either is missing."""
    browser = next(filter(None, map(shutil.which, BROWSERS)), None)
    driver = next(filter(None, map(shutil.which, DRIVERS)), None)
    return (browser, driver) if browser and driver else None


@contextlib.contextmanager
def running_viewer(*args: str) -> Iterator[str]:
    """Start `viewer.py ARGS --port 0` and yield its address; stopped (Ctrl+C) on the way out."""
    command = [sys.executable, str(ROOT / "viewer.py"), "--port", "0", "--quiet", *args]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        if "open http" not in line:
            raise RuntimeError(f"viewer.py did not start (exit {process.wait(START_TIMEOUT_S)}): {line.strip()}")
        yield line.split("open ")[1].split()[0]
    finally:
        process.send_signal(signal.SIGINT)  # a clean stop
        process.wait(START_TIMEOUT_S)


@contextlib.contextmanager
def headless_chromium(browser: str, driver: str, viewport: tuple[int, int] = VIEWPORT):
    """A selenium Chrome session on Debian's chromium with a fresh profile and a page of `viewport` (width,
    height) CSS pixels, closed on the way out."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="viewer-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in CHROME_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={viewport[0]},{viewport[1]}")
        session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        try:
            inner = session.execute_script("return [window.innerWidth, window.innerHeight];")
            outer = session.get_window_size()
            session.set_window_size(outer["width"] + viewport[0] - inner[0], outer["height"] + viewport[1] - inner[1])
            yield session
        finally:
            session.quit()


def open_image(session, url: str, image: Path) -> None:
    """Load the page, pick `image` with the file input, and wait for its first render."""
    session.get(url)
    session.find_element("id", "file").send_keys(str(image.resolve()))
    wait_rendered(session)


def canvas_state(session) -> dict:
    return session.execute_script("return Object.assign({}, document.getElementById('canvas').dataset, "
                                  "{error: document.getElementById('error').textContent, "
                                  "zoom: document.getElementById('zoom-value').textContent});")


def wait_rendered(session, not_url: str | None = None, shows: str = "rendered") -> dict:
    """Wait until the canvas shows a render (other than `not_url`): ContinuousSR's, or with shows="preview" the
    bicubic shown while the image encodes; a message on the page is an error."""
    from selenium.webdriver.support.ui import WebDriverWait

    def rendered(_):
        state = canvas_state(session)
        if state["error"]:
            raise RuntimeError(f"the page shows an error: {state['error']}")
        done = state.get("state") == shows and state.get("renderUrl") != not_url
        return state if done else False

    return WebDriverWait(session, WAIT_TIMEOUT_S).until(rendered)


def wheel(session, notches: int, x_fraction: float = 0.5, y_fraction: float = 0.5) -> None:
    """Turn the mouse wheel over the canvas at a point given as fractions of its size (negative: zoom in)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    canvas = session.find_element("id", "canvas")
    size = canvas.size
    origin = ScrollOrigin.from_element(canvas, round((x_fraction - 0.5) * size["width"]),
                                       round((y_fraction - 0.5) * size["height"]))
    actions = ActionChains(session)
    for _ in range(abs(notches)):
        actions.scroll_from_origin(origin, 0, WHEEL_NOTCH if notches > 0 else -WHEEL_NOTCH)
    actions.perform()


def small_png(png: bytes, max_bytes: int = SCREENSHOT_MAX_BYTES) -> bytes:
    """The screenshot as a PNG under `max_bytes`: full width if it fits, else the widest of SCREENSHOT_WIDTHS that
    does (true colour: a palette would posterize the very textures the screenshot is there to show)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as shot:
        shot = shot.convert("RGB")
        for width in SCREENSHOT_WIDTHS:
            image = shot if width >= shot.width else shot.resize((width, round(shot.height * width / shot.width)),
                                                                 Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=True)
            if buffer.tell() <= max_bytes:
                return buffer.getvalue()
    raise RuntimeError(f"no screenshot under {max_bytes:,} bytes")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=Path(__file__).name, description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: the bundled model)")
    parser.add_argument("--image", type=Path, default=ROOT / "assets" / "example.png")
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "viewer.png")
    args = parser.parse_args(argv)
    found = find_browser()
    if found is None:
        print("viewer_screenshot.py: error: chromium and chromedriver are needed (apt-get install chromium "
              "chromium-driver)", file=sys.stderr)
        return 2
    from selenium.webdriver.support.ui import Select

    from utils import atomic_path

    with running_viewer(*(["--model", args.model] if args.model else [])) as url, \
            headless_chromium(*found) as session:
        open_image(session, url, args.image)
        Select(session.find_element("id", "mode")).select_by_value("split")
        first = wait_rendered(session)
        wheel(session, SCREENSHOT_WHEEL_NOTCHES, 0.45, 0.42)  # towards the cat's eye
        state = wait_rendered(session, not_url=first["renderUrl"])
        with atomic_path(args.out) as tmp:
            tmp.write_bytes(small_png(session.get_screenshot_as_png()))
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes): zoom {state['zoom']}, view "
          f"{state['renderWidth']}x{state['renderHeight']}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
