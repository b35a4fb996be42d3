"""The viewer's web application (viewer.py serves it): uploads encoded once into fields kept in a bounded cache,
and views of any window of a field rendered at the requested size. Nothing from the client touches the file
system: uploads are read from memory, fields are kept in memory, the least recently used evicted first.

HTTP API (errors: a status and {"error": "one line"}):
    POST   /api/images                   body: the image file's bytes (header X-Filename: its name, URL-encoded)
                                         → 201 {"id", "name", "width", "height", "alpha", "state", ...}
    GET    /api/images/{id}              {"state": "encoding" | "ready" | "failed", "done", "total", "error", ...}
    GET    /api/images/{id}/lr.png       the image as read (8-bit RGB): the client's bicubic placeholder
    GET    /api/images/{id}/view         ?top=&left=&height=&width= (a window in input pixels, floats)
                                         &out_width=&out_height= (its size in output pixels)
                                         [&method=sr|bicubic] → PNG (bicubic: the comparison, from the input)
    GET    /api/images/{id}/full         ?scale=S|SH,SW or ?size=WxH [&format=png|jpg|webp|...] → the whole image
    DELETE /api/images/{id}
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote

import torch
import torch.nn as nn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

import cli
from gaussian import GaussianField
from inference import pipeline, zoom
from inference.arguments import scale_arg, size_arg
from inference.image_io import IMAGE_SUFFIXES, MAX_OUTPUT_PIXELS, ImageError, decode_image_with_alpha, encode_image
from inference.resize import resize_bicubic, resize_bicubic_window
from inference.tiling import FIELD_BYTES_PER_LR_PIXEL
from utils import REPOSITORY, NonFiniteError, UsageError

STATIC = REPOSITORY / "viewer_static"
MIB = 1 << 20
DEFAULT_MAX_UPLOAD_MIB = 64
DEFAULT_MAX_IMAGES = 8
DEFAULT_MAX_CACHE_MIB = 2048
# One view is at most this many output pixels (2^25: an 8K screen at twice its CSS resolution).
MAX_VIEW_PIXELS = 1 << 25
# Views are sent as PNG at this zlib level: 1 is several times faster to write than the default 6 and the
# browser on the same machine does not need the smaller file.
VIEW_PNG_COMPRESS_LEVEL = 1
# Bytes one input pixel holds in the cache: RGB and alpha as float32, and its share of the field.
IMAGE_BYTES_PER_PIXEL = 4 * 4
CACHE_BYTES_PER_PIXEL = IMAGE_BYTES_PER_PIXEL + FIELD_BYTES_PER_LR_PIXEL
# Upload names are kept (for messages and download names) up to this length, in these characters.
NAME_CHARS = 80
SAFE_STEM = re.compile(r"[^A-Za-z0-9._-]+")
ENCODING, READY, FAILED = "encoding", "ready", "failed"
SR, BICUBIC = "sr", "bicubic"  # what a view shows: the field's render, or the input resized bicubic

log = logging.getLogger("viewer")


class ViewerError(Exception):
    """A request the viewer refuses: an HTTP status and a one-line message for the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one client may ask of the server."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MIB * MIB
    max_images: int = DEFAULT_MAX_IMAGES
    max_cache_bytes: int = DEFAULT_MAX_CACHE_MIB * MIB
    max_pixels: int = MAX_OUTPUT_PIXELS  # a whole-image download, as demo.py's --max-pixels
    max_view_pixels: int = MAX_VIEW_PIXELS

    @property
    def max_input_pixels(self) -> int:
        """The largest upload whose image and field fit in the cache."""
        return self.max_cache_bytes // CACHE_BYTES_PER_PIXEL


@dataclasses.dataclass
class Entry:
    """One uploaded image: its pixels, and its field once encoded (`state` says where the encode is)."""

    id: str
    name: str
    rgb: torch.Tensor  # (3, h, w) on the CPU
    alpha: torch.Tensor | None  # (1, h, w) or None
    state: str = ENCODING
    done: int = 0
    total: int = 1
    error: str | None = None
    field: GaussianField | None = None
    reach: float = 0.0  # zoom.field_reach(field), computed once
    encode_seconds: float | None = None

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.rgb.shape[1:])

    @property
    def nbytes(self) -> int:
        return self.size[0] * self.size[1] * CACHE_BYTES_PER_PIXEL

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "width": self.size[1], "height": self.size[0],
                "alpha": self.alpha is not None, "state": self.state, "done": self.done, "total": self.total,
                "error": self.error, "encode_seconds": self.encode_seconds}


class FieldCache:
    """Entries by id, least recently used first; adding one evicts the oldest beyond the count or byte bound."""

    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, entry: Entry) -> list[str]:
        """Insert `entry` as the most recent; returns the ids evicted to make room."""
        if entry.nbytes > self.max_bytes:
            raise ViewerError(413, f"{entry.name} needs {entry.nbytes / MIB:.0f} MiB in memory, above the viewer's "
                                   f"--max-cache-mb {self.max_bytes / MIB:.0f}")
        with self._lock:
            self._entries[entry.id] = entry
            evicted = []
            while len(self._entries) > self.max_entries or self.nbytes > self.max_bytes:
                evicted.append(self._entries.popitem(last=False)[0])
            return evicted

    def get(self, entry_id: str) -> Entry:
        """The entry (now the most recent), or a 404 saying it is gone."""
        with self._lock:
            entry = self._entries.get(entry_id)
            if entry is None:
                raise ViewerError(404, "no such image (evicted to make room for newer ones, or never uploaded): "
                                       "open it again")
            self._entries.move_to_end(entry_id)
            return entry

    def remove(self, entry_id: str) -> bool:
        with self._lock:
            return self._entries.pop(entry_id, None) is not None

    def __contains__(self, entry_id: str) -> bool:
        with self._lock:
            return entry_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self._entries.values())


def upload_name(header: str | None) -> str:
    """The client's file name (X-Filename, URL-encoded), reduced to its last part; only shown, never opened."""
    name = Path(unquote(header or "")).name.strip() or "upload"
    return name[:NAME_CHARS]


def download_stem(name: str) -> str:
    return SAFE_STEM.sub("_", Path(name).stem).strip("._") or "image"


def parse_window(top: float, left: float, height: float, width: float, out_width: int, out_height: int,
                 max_pixels: int, lr_size: tuple[int, int]
                 ) -> tuple[tuple[float, float, float, float], tuple[int, int]]:
    """A view request → ((top, left, height, width), (H, W)), or a 400/413 naming what is wrong; checked before any
    arithmetic: finite numbers, a window that overlaps the (h, w) image, and a zoom (output pixels per input pixel)
    within the range a render resolves (`zoom.MIN_ZOOM_LEVEL` to `zoom.MAX_ZOOM_LEVEL`)."""
    if not all(math.isfinite(v) for v in (top, left, height, width)) or height <= 0 or width <= 0:
        raise ViewerError(400, f"the window must be finite with a positive size, got top={top:g} left={left:g} "
                               f"height={height:g} width={width:g}")
    if out_width < 1 or out_height < 1:
        raise ViewerError(400, f"the view must be at least 1x1 pixels, got {out_width}x{out_height}")
    if out_width * out_height > max_pixels:
        raise ViewerError(413, f"a {out_width}x{out_height} view has {out_width * out_height:,} pixels, above the "
                               f"limit of {max_pixels:,}")
    h, w = lr_size
    if not (top < h and left < w and top + height > 0 and left + width > 0):
        raise ViewerError(400, f"the window top={top:g} left={left:g} height={height:g} width={width:g} lies outside "
                               f"the {w}x{h} image")
    for level in (out_height / height, out_width / width):
        if not zoom.MIN_ZOOM_LEVEL <= level <= zoom.MAX_ZOOM_LEVEL:
            raise ViewerError(400, f"a {out_width}x{out_height} view of a {width:g}x{height:g} window is a zoom of "
                                   f"x{level:.3g}, outside x{zoom.MIN_ZOOM_LEVEL:g} to x{zoom.MAX_ZOOM_LEVEL:g}")
    return (top, left, height, width), (out_height, out_width)


def full_size(lr_size: tuple[int, int], scale: str | None, size: str | None, max_pixels: int) -> tuple[int, int]:
    """The whole-image download's (H, W) from scale='S|SH,SW' or size='WxH', checked as demo.py checks them."""
    if (scale is None) == (size is None):
        raise ViewerError(400, "give one of scale=S|SH,SW or size=WxH")
    try:
        pair = scale_arg(scale) if scale is not None else size_arg(size)
        if scale is not None:
            return pipeline.target_size(lr_size, pair, None, max_pixels)
        return pipeline.target_size(lr_size, None, pair, max_pixels)
    except (argparse.ArgumentTypeError, UsageError) as exc:
        raise ViewerError(400 if isinstance(exc, argparse.ArgumentTypeError) else 413, str(exc)) from None


def finite_image(image: torch.Tensor, what: str) -> torch.Tensor:
    """`image` clamped to [0, 1] on the CPU; a non-finite render is an error, never a black picture."""
    if not bool(torch.isfinite(image).all()):
        raise ViewerError(500, f"the {what} has non-finite values (NaN or infinity): the model or its field is "
                               "broken")
    return image.clamp(0, 1).cpu()


def png_response(data: bytes, seconds: float, filename: str | None = None) -> Response:
    headers = {"X-Render-Seconds": f"{seconds:.4f}", "Cache-Control": "no-store"}
    if filename is not None:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    media = "image/png" if filename is None or filename.endswith(".png") else "application/octet-stream"
    return Response(data, media_type=media, headers=headers)


class Viewer:
    """The server's state: the model, the field cache, and one compute lock (renders and encodes take turns)."""

    def __init__(self, model: nn.Module, settings: pipeline.Settings, limits: Limits):
        self.model, self.settings, self.limits = model, settings, limits
        self.cache = FieldCache(limits.max_images, limits.max_cache_bytes)
        self.compute = threading.Lock()
        self.encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="viewer-encode")

    @contextlib.contextmanager
    def computing(self, what: str) -> Iterator[None]:
        """Hold the compute lock in inference mode; memory exhaustion becomes a 507 with advice."""
        with self.compute, torch.inference_mode():
            try:
                yield
            except ViewerError:
                raise
            except Exception as exc:  # noqa: BLE001  only memory exhaustion is expected; anything else re-raises
                if not cli.is_out_of_memory(exc):
                    raise
                raise ViewerError(507, f"out of memory while {what}; try a smaller view or size") from None

    def add(self, data: bytes, name: str) -> Entry:
        """Decode an upload (from memory) and queue its encode; the entry is returned while it encodes."""
        if not data:
            raise ViewerError(400, "the upload is empty: choose an image file")
        try:
            rgb, alpha = decode_image_with_alpha(data, name, self.limits.max_input_pixels)
        except ImageError as exc:
            raise ViewerError(400, str(exc)) from None
        entry = Entry(secrets.token_urlsafe(16), name, rgb, alpha)
        for old in self.cache.add(entry):
            log.info("evicted %s", old)
        self.encoder.submit(self._encode, entry)
        return entry

    def _encode(self, entry: Entry) -> None:
        def progress(done: int, total: int) -> None:
            entry.done, entry.total = done, total

        start = time.perf_counter()
        try:
            if entry.id not in self.cache:
                return  # evicted before its turn
            with self.computing("encoding"):
                field = pipeline.encode(self.model, entry.rgb[None].to(self.settings.device), self.settings, progress)
                try:
                    field.check_finite()
                except NonFiniteError:
                    raise ViewerError(500, f"encoding {entry.name} gave non-finite values (NaN or infinity)") from None
                entry.reach = zoom.field_reach(field)
            entry.field, entry.encode_seconds, entry.state = field, time.perf_counter() - start, READY
            log.info("encoded %s (%dx%d) in %.2f s", entry.name, entry.size[1], entry.size[0], entry.encode_seconds)
        except ViewerError as exc:
            entry.error, entry.state = str(exc), FAILED
        except Exception as exc:  # noqa: BLE001  the page must learn of any failure; the log keeps the traceback
            log.exception("encoding %s failed", entry.name)
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            entry.error, entry.state = f"encoding {entry.name} failed: {detail}", FAILED

    def ready(self, entry_id: str) -> Entry:
        entry = self.cache.get(entry_id)
        if entry.state == ENCODING:
            raise ViewerError(409, f"{entry.name} is still being encoded ({entry.done} of {entry.total})")
        if entry.state == FAILED:
            raise ViewerError(409, entry.error or "encoding failed")
        return entry

    def render_view(self, entry: Entry, window: tuple[float, float, float, float], size: tuple[int, int]
                    ) -> torch.Tensor:
        """(3, H, W) in [0, 1]: the LR window of the entry's field at `size`."""
        with self.computing("rendering the view"):
            out = zoom.render_window(entry.field, window, size, self.settings.backend, entry.reach)[0]
            return finite_image(out, "render")

    def render_full(self, entry: Entry, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        with self.computing("rendering the whole image"):
            out = finite_image(self.model.render(entry.field, size=size, backend=self.settings.backend)[0], "render")
        alpha = resize_bicubic(entry.alpha, size) if entry.alpha is not None else None
        return out, alpha


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with a 413 as soon as it passes `limit` bytes (never buffered beyond it)."""
    too_large = ViewerError(413, f"the upload is larger than the viewer's limit of {limit / MIB:g} MiB "
                                 "(--max-upload-mb)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, total = [], 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:  # the client went away mid-upload: nothing to keep, no one to answer
        raise ViewerError(400, "the upload was cut off (the client disconnected)") from None
    return b"".join(chunks)


def host_name(header: str) -> str:
    """The host of a Host header, without its port and an IPv6 address's brackets, in lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    """ASGI middleware that answers a request whose Host header names none of `allowed` (IPv4 or IPv6) with the
    API's JSON 400: a page of another site reaching the viewer by DNS rebinding names its own host."""

    def __init__(self, app: ASGIApp, allowed: list[str]):
        self.app, self.allowed = app, {host_name(h) for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope.get("headers") or ())
            host = host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.allowed:
                response = JSONResponse({"error": f"the Host header {host!r} is not this viewer's address "
                                                  f"(allowed: {', '.join(sorted(self.allowed))})"}, status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(model: nn.Module, settings: pipeline.Settings, limits: Limits = Limits(),
               allowed_hosts: list[str] | None = None) -> FastAPI:
    """The viewer's ASGI app around a loaded model; `allowed_hosts` (Host headers) guards against DNS rebinding."""
    viewer = Viewer(model, settings, limits)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        viewer.encoder.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="ContinuousSR viewer", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.viewer = viewer
    if allowed_hosts:
        app.add_middleware(HostCheck, allowed=allowed_hosts)

    @app.exception_handler(ViewerError)
    async def viewer_error(_: Request, exc: ViewerError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg')}" for e in exc.errors()]
        return JSONResponse({"error": "bad request: " + "; ".join(problems)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        """A failure no check foresaw: still the API's one-line JSON (the server logs the traceback)."""
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return JSONResponse({"error": f"internal error: {detail}"}, status_code=500)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:  # where browsers look for a page's icon
        return FileResponse(STATIC / "favicon.ico")

    @app.post("/api/images", status_code=201)
    async def upload(request: Request) -> dict[str, Any]:
        data = await read_body(request, limits.max_upload_bytes)
        name = upload_name(request.headers.get("x-filename"))
        return (await run_in_threadpool(viewer.add, data, name)).describe()

    @app.get("/api/images/{entry_id}")
    def status(entry_id: str) -> dict[str, Any]:
        return viewer.cache.get(entry_id).describe()

    @app.delete("/api/images/{entry_id}")
    def delete(entry_id: str) -> dict[str, Any]:
        if not viewer.cache.remove(entry_id):
            raise ViewerError(404, "no such image")
        return {"deleted": entry_id}

    @app.get("/api/images/{entry_id}/lr.png")
    def low_resolution(entry_id: str) -> Response:
        entry = viewer.cache.get(entry_id)
        start = time.perf_counter()
        data = encode_image(entry.rgb, None, ".png", compress_level=VIEW_PNG_COMPRESS_LEVEL)
        return png_response(data, time.perf_counter() - start)

    @app.get("/api/images/{entry_id}/view")
    def view(entry_id: str, top: float, left: float, height: float, width: float, out_width: int,
             out_height: int, method: str = SR) -> Response:
        if method not in (SR, BICUBIC):
            raise ViewerError(400, f"unknown method {method!r} (use {SR} or {BICUBIC})")
        entry = viewer.cache.get(entry_id)
        window, size = parse_window(top, left, height, width, out_width, out_height, limits.max_view_pixels,
                                    entry.size)
        start = time.perf_counter()
        if method == BICUBIC:  # from the input alone: available while the field is being encoded
            with torch.inference_mode():
                image = resize_bicubic_window(entry.rgb, window, size)
        else:
            image = viewer.render_view(viewer.ready(entry_id), window, size)
        data = encode_image(image, None, ".png", compress_level=VIEW_PNG_COMPRESS_LEVEL)
        return png_response(data, time.perf_counter() - start)

    @app.get("/api/images/{entry_id}/full")
    def full(entry_id: str, scale: str | None = None, size: str | None = None, format: str = "png") -> Response:
        suffix = "." + format.lower().lstrip(".")
        if suffix not in IMAGE_SUFFIXES:
            raise ViewerError(400, f"unknown format {format!r} (use one of {', '.join(IMAGE_SUFFIXES)})")
        entry = viewer.ready(entry_id)
        out_size = full_size(entry.size, scale, size, limits.max_pixels)
        start = time.perf_counter()
        rgb, alpha = viewer.render_full(entry, out_size)
        data = encode_image(rgb, alpha, suffix)
        filename = f"{download_stem(entry.name)}_{out_size[1]}x{out_size[0]}{suffix}"
        return png_response(data, time.perf_counter() - start, filename)

    return app
