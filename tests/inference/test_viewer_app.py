"""inference/viewer_app.py, the viewer's HTTP API, with the tiny model: upload, encode, window renders against the
library, limits, bad uploads, eviction, a client that disconnects."""
from __future__ import annotations

import asyncio
import io
import logging
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from conftest import smooth_image, viewer_settings
from gaussian import GaussianField
from inference import zoom
from inference.image_io import decode_image_with_alpha, encode_image, to_uint8
from inference.resize import resize_bicubic_window

# The viewer's web stack: requirements.txt installs it, a stock GPU image (the device check's) may lack it.
pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from inference import viewer_app  # noqa: E402

LR_H, LR_W = 12, 16
POLL_S = 0.02
ENCODE_TIMEOUT_S = 60


@pytest.fixture
def make_client(tiny_sr_model):
    """A function (model, settings, limits) → a started TestClient; every client is closed after the test."""
    clients = []

    def make(model: nn.Module = tiny_sr_model, limits: viewer_app.Limits = viewer_app.Limits(),
             **changes) -> TestClient:
        client = TestClient(viewer_app.create_app(model, viewer_settings(**changes), limits))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def png_bytes(array: np.ndarray, mode: str | None = None, suffix: str = ".png") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format=Image.registered_extensions()[suffix])
    return buffer.getvalue()


def lr_bytes(seed: int = 0, size: tuple[int, int] = (LR_H, LR_W)) -> bytes:
    return encode_image(smooth_image(*size, seed=seed))


def upload(client: TestClient, data: bytes, name: str = "lr.png"):
    return client.post("/api/images", content=data, headers={"X-Filename": name})


def wait_ready(client: TestClient, entry_id: str) -> dict:
    deadline = time.monotonic() + ENCODE_TIMEOUT_S
    while True:
        info = client.get(f"/api/images/{entry_id}").json()
        if info["state"] != viewer_app.ENCODING or time.monotonic() > deadline:
            return info
        time.sleep(POLL_S)


def uploaded(client: TestClient, data: bytes | None = None, name: str = "lr.png") -> dict:
    response = upload(client, lr_bytes() if data is None else data, name)
    assert response.status_code == 201, response.text
    info = wait_ready(client, response.json()["id"])
    assert info["state"] == viewer_app.READY, info
    return info


def view(client: TestClient, entry_id: str, window, size):
    top, left, height, width = window
    return client.get(f"/api/images/{entry_id}/view", params=dict(top=top, left=left, height=height, width=width,
                                                                  out_height=size[0], out_width=size[1]))


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image).astype(np.int16)


def library_field(model: nn.Module, data: bytes) -> GaussianField:
    with torch.inference_mode():
        return model.encode(decode_image_with_alpha(data, "x")[0][None])


# ---------------------------------------------------------------------------------------------- the page
def test_page_and_its_scripts_are_served(make_client):
    client = make_client()
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/viewer.js", "/static/viewer.css"):
        assert asset in page.text and client.get(asset).status_code == 200
    missing = client.get("/static/nothing.js")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}


def test_the_icon_is_where_browsers_ask_for_it(make_client):
    icon = make_client().get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] in ("image/vnd.microsoft.icon", "image/x-icon")
    with Image.open(io.BytesIO(icon.content)) as image:
        assert image.format == "ICO" and {(16, 16), (32, 32)} <= image.info["sizes"]


# ---------------------------------------------------------------------------------------------- upload, encode, render
def test_upload_encodes_once_and_the_whole_window_is_the_model_render(make_client, tiny_sr_model):
    client = make_client()
    data = lr_bytes()
    info = uploaded(client, data)
    assert (info["width"], info["height"], info["alpha"], info["done"], info["total"]) == (LR_W, LR_H, False, 1, 1)
    assert info["encode_seconds"] > 0
    size = (37, 50)
    response = view(client, info["id"], (0, 0, LR_H, LR_W), size)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    with torch.inference_mode():
        expected = to_uint8(tiny_sr_model.render(library_field(tiny_sr_model, data), size=size)[0])
    result = pixels(response.content)
    assert result.shape == (*size, 3)
    assert np.abs(result - expected).max() <= 1
    assert result.std() > 10  # the tiny model's renders have structure


@pytest.mark.parametrize("window,size", [((3.25, 5.5, 4.0, 7.0), (72, 126)),   # x18: a zoomed-in window
                                         ((-2.0, 10.0, 6.0, 9.0), (30, 45)),    # partly outside the image
                                         ((1.0, 2.0, 5.0, 3.0), (7, 33))])      # anisotropic
def test_a_view_is_the_window_of_the_cached_field_at_the_requested_size(make_client, tiny_sr_model, window, size):
    client = make_client()
    data = lr_bytes(seed=1)
    info = uploaded(client, data)
    response = view(client, info["id"], window, size)
    assert response.status_code == 200, response.text
    field = library_field(tiny_sr_model, data)
    with torch.inference_mode():
        expected = to_uint8(zoom.render_window(field, window, size, "torch")[0])
    result = pixels(response.content)
    assert result.shape == (*size, 3)
    assert np.abs(result - expected).max() <= 1
    assert float(response.headers["x-render-seconds"]) > 0


def test_bicubic_view_is_the_window_resized_bicubic(make_client):
    client = make_client()
    data = lr_bytes(seed=3)
    info = uploaded(client, data)
    window, size = (2.5, 1.0, 6.0, 9.0), (30, 45)
    response = client.get(f"/api/images/{info['id']}/view", params=dict(
        top=window[0], left=window[1], height=window[2], width=window[3], out_height=size[0], out_width=size[1],
        method="bicubic"))
    expected = to_uint8(resize_bicubic_window(decode_image_with_alpha(data, "x")[0], window, size))
    assert np.abs(pixels(response.content) - expected).max() <= 1


def test_low_resolution_image_is_the_input_as_read(make_client):
    client = make_client()
    gray = (smooth_image(LR_H, LR_W)[1].numpy() * 65535).round().astype(np.uint16)
    data = png_bytes(gray)
    info = uploaded(client, data, "gray16.png")
    result = pixels(client.get(f"/api/images/{info['id']}/lr.png").content)
    expected = np.round(gray / 65535 * 255).astype(np.int16)
    assert result.shape == (LR_H, LR_W, 3)
    assert np.abs(result - expected[..., None]).max() <= 1


@pytest.mark.parametrize("kind", ["rgba", "palette", "gray", "jpeg", "webp"])
def test_the_inputs_demo_reads(make_client, kind):
    client = make_client()
    rgb = to_uint8(smooth_image(LR_H, LR_W))
    data = {"rgba": lambda: png_bytes(np.dstack((rgb, np.full((LR_H, LR_W), 128, np.uint8)))),
            "palette": lambda: _palette_png(rgb),
            "gray": lambda: png_bytes(rgb[..., 1]),
            "jpeg": lambda: png_bytes(rgb, suffix=".jpg"),
            "webp": lambda: png_bytes(rgb, suffix=".webp")}[kind]()
    info = uploaded(client, data, f"lr.{kind}")
    assert (info["width"], info["height"], info["alpha"]) == (LR_W, LR_H, kind == "rgba")
    assert view(client, info["id"], (0, 0, LR_H, LR_W), (24, 32)).status_code == 200


def _palette_png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(buffer, format="PNG")
    return buffer.getvalue()


def test_whole_image_download_is_the_model_render_with_its_alpha(make_client, tiny_sr_model):
    client = make_client()
    rgb = smooth_image(LR_H, LR_W, seed=2)
    alpha = np.tile(np.linspace(0, 255, LR_W).round().astype(np.uint8), (LR_H, 1))
    data = png_bytes(np.dstack((to_uint8(rgb), alpha)))
    info = uploaded(client, data, "my photo.png")
    response = client.get(f"/api/images/{info['id']}/full", params={"scale": "2,3"})  # 2x taller, 3x wider
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == f'attachment; filename="my_photo_{3 * LR_W}x{2 * LR_H}.png"'
    result = pixels(response.content)
    assert result.shape == (2 * LR_H, 3 * LR_W, 4)
    with torch.inference_mode():
        expected = to_uint8(tiny_sr_model.render(library_field(tiny_sr_model, data), size=(2 * LR_H, 3 * LR_W))[0])
    assert np.abs(result[..., :3] - expected).max() <= 1
    assert result[:, 0, 3].mean() < 40 and result[:, -1, 3].mean() > 215  # the alpha ramp, resized
    by_size = client.get(f"/api/images/{info['id']}/full", params={"size": "40x20", "format": "jpg"})
    assert by_size.status_code == 200 and pixels(by_size.content).shape == (20, 40, 3)


def test_tiled_encode_reports_progress_and_blocks_views_until_done(make_client, tiny_sr_model):
    gate = threading.Event()

    class Gated(nn.Module):
        """The tiny model, its encode waiting for `gate`."""

        def __init__(self):
            super().__init__()
            self.inner = tiny_sr_model

        def encode(self, lr, **options):
            assert gate.wait(ENCODE_TIMEOUT_S)
            return self.inner.encode(lr, **options)

        def render(self, *args, **kwargs):
            return self.inner.render(*args, **kwargs)

    client = make_client(Gated(), tile=8, overlap=4)
    entry_id = upload(client, lr_bytes()).json()["id"]
    deadline = time.monotonic() + ENCODE_TIMEOUT_S
    while (info := client.get(f"/api/images/{entry_id}").json())["total"] == 1 and time.monotonic() < deadline:
        time.sleep(POLL_S)
    assert (info["state"], info["done"], info["total"]) == (viewer_app.ENCODING, 0, 4)  # 12x16 in 8x8 tiles
    blocked = view(client, entry_id, (0, 0, LR_H, LR_W), (12, 16))
    assert blocked.status_code == 409 and "still being encoded (0 of 4)" in blocked.json()["error"]
    bicubic = client.get(f"/api/images/{entry_id}/view", params=dict(top=0, left=0, height=LR_H, width=LR_W,
                                                                      out_width=32, out_height=24, method="bicubic"))
    assert bicubic.status_code == 200 and pixels(bicubic.content).shape == (24, 32, 3)  # needs no field
    gate.set()
    info = wait_ready(client, entry_id)
    assert (info["state"], info["done"], info["total"]) == (viewer_app.READY, 4, 4)
    assert view(client, entry_id, (0, 0, LR_H, LR_W), (12, 16)).status_code == 200


# ---------------------------------------------------------------------------------------------- non-finite results
class FieldModel(nn.Module):
    """A model whose encode returns a given field (for values no trained model should make)."""

    def __init__(self, field: GaussianField):
        super().__init__()
        self.field = field

    def encode(self, lr, **options):  # the whole image's field (used untiled)
        return self.field

    def render(self, field, size=None, scale=None, backend="auto"):
        return zoom.render_window(field, (0, 0, *field.lr_size), size, backend)


def constant_field(colour: float) -> GaussianField:
    shape = (1, 2 * LR_H, 2 * LR_W)
    return GaussianField(colour=torch.full((*shape, 3), colour), cholesky=torch.full((*shape, 3), 2.0),
                         offset=torch.zeros(*shape, 2))


def test_non_finite_field_fails_the_encode_with_a_message(make_client):
    client = make_client(FieldModel(constant_field(float("nan"))))
    entry_id = upload(client, lr_bytes()).json()["id"]
    info = wait_ready(client, entry_id)
    assert info["state"] == viewer_app.FAILED and "non-finite" in info["error"]
    refused = view(client, entry_id, (0, 0, LR_H, LR_W), (12, 16))
    assert refused.status_code == 409 and "non-finite" in refused.json()["error"]


def test_non_finite_render_is_an_error_not_a_black_image(make_client):
    client = make_client(FieldModel(constant_field(3e38)))  # finite colours whose sums overflow float32
    info = uploaded(client)
    for response in (view(client, info["id"], (0, 0, LR_H, LR_W), (24, 32)),
                     client.get(f"/api/images/{info['id']}/full", params={"scale": "2"})):
        assert response.status_code == 500
        assert response.json() == {"error": "the render has non-finite values (NaN or infinity): the model or its "
                                            "field is broken"}


# ---------------------------------------------------------------------------------------------- bad uploads, limits
@pytest.mark.parametrize("data,message", [
    (b"", "the upload is empty: choose an image file"),
    (b"not an image at all", "not an image (or an unsupported format): notes.png"),
    (lr_bytes()[:60], "cannot read notes.png: "),  # a truncated PNG
])
def test_bad_uploads_get_one_line_errors(make_client, data, message):
    response = upload(make_client(), data, "notes.png")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith(message) and "\n" not in error


def test_upload_size_limit(make_client):
    data = lr_bytes()
    client = make_client(limits=viewer_app.Limits(max_upload_bytes=len(data) - 1))
    response = upload(client, data)
    assert response.status_code == 413
    assert response.json()["error"].startswith("the upload is larger than the viewer's limit")
    streamed = client.post("/api/images", content=iter([data[:100], data[100:]]))  # no Content-Length
    assert streamed.status_code == 413


def test_images_too_large_for_the_cache_are_refused_from_their_header(make_client):
    limits = viewer_app.Limits(max_cache_bytes=LR_H * LR_W * viewer_app.CACHE_BYTES_PER_PIXEL - 1)
    response = upload(make_client(limits=limits), lr_bytes(), "big.png")
    assert response.status_code == 400
    assert response.json()["error"] == (f"big.png is {LR_W}x{LR_H} ({LR_H * LR_W:,} pixels), above the limit of "
                                        f"{limits.max_input_pixels:,}")


def test_upload_names_are_only_labels(make_client):
    info = uploaded(make_client(), name="..%2F..%2Fetc%2Fpasswd")
    assert info["name"] == "passwd"


@pytest.mark.parametrize("params,status,message", [
    (dict(top=0, left=0, height=4, width=4, out_width=0, out_height=5), 400, "the view must be at least 1x1"),
    (dict(top="nan", left=0, height=4, width=4, out_width=5, out_height=5), 400, "the window must be finite"),
    (dict(top=0, left=0, height=-1, width=4, out_width=5, out_height=5), 400, "the window must be finite"),
    (dict(top="a", left=0, height=4, width=4, out_width=5, out_height=5), 400, "bad request: top: "),
    (dict(top=0, left=0, height=4, width=4, out_width=5), 400, "bad request: out_height: Field required"),
    (dict(top=0, left=0, height=4, width=4, out_width=101, out_height=100), 413, "a 101x100 view has 10,100 pixels"),
    (dict(top=0, left=0, height=4, width=4, out_width=5, out_height=5, method="lanczos"), 400,
     "unknown method 'lanczos' (use sr or bicubic)"),
])
def test_bad_view_requests(make_client, params, status, message):
    client = make_client(limits=viewer_app.Limits(max_view_pixels=100 * 100))
    info = uploaded(client)
    response = client.get(f"/api/images/{info['id']}/view", params=params)
    assert response.status_code == status
    assert response.json()["error"].startswith(message)


@pytest.mark.parametrize("params,status,message", [
    ({}, 400, "give one of scale=S|SH,SW or size=WxH"),
    ({"scale": "2", "size": "10x10"}, 400, "give one of"),
    ({"scale": "two"}, 400, "--scale must be a number"),
    ({"size": "10"}, 400, "--size must be WIDTHxHEIGHT"),
    ({"scale": "100"}, 413, "scale x100,100 makes a 1.6e+03x1.2e+03 output, above --max-pixels 1,048,576"),
    ({"size": "1025x1024"}, 413, "a 1025x1024 output has 1,049,600 pixels, above --max-pixels 1,048,576"),
    ({"scale": "2", "format": "exe"}, 400, "unknown format 'exe'"),
])
def test_whole_image_limits_are_demos(make_client, params, status, message):
    client = make_client(limits=viewer_app.Limits(max_pixels=1 << 20))
    info = uploaded(client)
    response = client.get(f"/api/images/{info['id']}/full", params=params)
    assert response.status_code == status
    assert response.json()["error"].startswith(message)


# ---------------------------------------------------------------------------------------------- the cache
def test_least_recently_used_image_is_evicted_beyond_the_count(make_client):
    client = make_client(limits=viewer_app.Limits(max_images=2))
    first, second = uploaded(client, lr_bytes(0))["id"], uploaded(client, lr_bytes(1))["id"]
    assert view(client, first, (0, 0, 4, 4), (8, 8)).status_code == 200  # first is now the most recent
    third = uploaded(client, lr_bytes(2))["id"]
    gone = client.get(f"/api/images/{second}")
    assert gone.status_code == 404 and gone.json()["error"].startswith("no such image (evicted")
    for kept in (first, third):
        assert client.get(f"/api/images/{kept}").json()["state"] == viewer_app.READY


def test_eviction_beyond_the_byte_bound(make_client):
    small = LR_H * LR_W * viewer_app.CACHE_BYTES_PER_PIXEL
    client = make_client(limits=viewer_app.Limits(max_cache_bytes=3 * small))  # three small images, or one large
    small_ids = [uploaded(client, lr_bytes(i))["id"] for i in range(3)]
    assert all(client.get(f"/api/images/{i}").status_code == 200 for i in small_ids)
    uploaded(client, lr_bytes(3, size=(2 * LR_H, LR_W)))  # as much as two small ones: the two oldest go
    assert [client.get(f"/api/images/{i}").status_code for i in small_ids] == [404, 404, 200]
    assert len(client.app.state.viewer.cache) == 2


def test_delete(make_client):
    client = make_client()
    entry_id = uploaded(client)["id"]
    assert client.delete(f"/api/images/{entry_id}").json() == {"deleted": entry_id}
    assert client.get(f"/api/images/{entry_id}/lr.png").status_code == 404
    assert client.delete(f"/api/images/{entry_id}").status_code == 404


def test_other_host_names_are_refused(tiny_sr_model):
    app = viewer_app.create_app(tiny_sr_model, viewer_settings(), allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/").status_code == 200
        assert client.get("/", headers={"Host": "rebound.example.com"}).status_code == 400


def test_a_client_that_disconnects_mid_upload_leaves_no_traceback(tiny_sr_model, caplog):
    """The ASGI app itself, fed half a body and then the client's disconnect: it must end quietly (the server
    logged a traceback for the ClientDisconnect)."""
    app = viewer_app.create_app(tiny_sr_model, viewer_settings())
    messages = iter([{"type": "http.request", "body": b"x" * 100, "more_body": True}, {"type": "http.disconnect"}])
    sent = []

    async def receive():
        return next(messages, {"type": "http.disconnect"})

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/images", "raw_path": b"/api/images", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-length", b"1000")], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 8000)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400 and b"cut off" in sent[1]["body"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
