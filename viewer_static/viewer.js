"use strict";
// The ContinuousSR viewer page: upload an image (encoded once on the server), then zoom and pan. Each view is
// drawn at once as bicubic of the input (the canvas's own high-quality scaling), and replaced by the server's
// render of exactly the visible window at the screen's resolution when it arrives. While the image encodes, that
// bicubic is all there is: a preview, labelled as one, that can already be zoomed and panned. One render is in
// flight at a time; when it returns, the newest view is requested. The zoom is in CSS pixels per input pixel;
// renders are at device pixels (zoom x devicePixelRatio output pixels per input pixel).

const ZOOM_MIN_LOG2 = -3;
const ZOOM_MAX_LOG2 = 7;
const WHEEL_ZOOM_RATE = 0.0015;   // per wheel pixel: one notch (100 px) zooms by e^0.15 ≈ x1.16
const WHEEL_LINE_PX = 33;         // wheel events counted in lines: pixels per line
const KEY_ZOOM_STEP = 2 ** 0.25;
const RENDER_DELAY_MS = 50;       // wait this long after the last change before asking for a render
const POLL_MS = 200;              // encode progress polling
const DIVIDER_GRAB_PX = 8;        // CSS px either side of the split line that drag the line, not the image
const SIDE_GAP_PX = 4;            // CSS px between side-by-side panes
const BACKGROUND = "#202124";
const DIVIDER_COLOUR = "#ffffff";
const REVOKE_MS = 10000;

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const viewControls = ["zoom", "fit"].map($);                     // usable from the preview on
const downloadControls = ["download-view", "download-full"].map($);  // once the image is encoded

const state = {
  image: null,    // {id, name, width, height, state: encoding | ready, lr: ImageBitmap}
  cx: 0, cy: 0,   // the view's centre, in input pixels
  zoom: 1,        // CSS pixels per input pixel
  mode: "sr",     // sr | split | side | bicubic
  split: 0.5,     // the split line, as a fraction of the pane's width
  renders: {sr: null, bicubic: null},  // the last server render of each method: its request, bitmap and blob
  inflight: null,
  failed: new Set(),                   // requests that failed (not retried for the same view)
  timer: 0,
  drag: null,
};

const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const dpr = () => window.devicePixelRatio || 1;
const zoomText = (z) => "x" + z.toFixed(z < 10 ? 2 : 1);

function setStatus(text) { $("status").textContent = text; }
function showError(text) { $("error").textContent = text; }
function clearError() { $("error").textContent = ""; }

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON: fall through */ }
  return `${response.status} ${response.statusText}`;
}

async function fetchOk(url, options) {
  const response = await fetch(url, options);
  if (!response.ok) throw new Error(await errorMessage(response));
  return response;
}

// ------------------------------------------------------------------------------------------ geometry
function panes() {
  // The canvas areas (device pixels) that show the view: one, or bicubic and ContinuousSR side by side.
  const W = canvas.width, H = canvas.height;
  if (state.mode === "side") {
    const w = Math.floor((W - Math.round(SIDE_GAP_PX * dpr())) / 2);
    return [{x: 0, w, h: H, kind: "bicubic"}, {x: W - w, w, h: H, kind: "sr"}];
  }
  return [{x: 0, w: W, h: H, kind: state.mode}];
}

function viewRequest(pane, method) {
  // The visible part of the image in `pane`: its pixel rectangle in the pane, the input window it shows, and
  // the URL that renders it with `method` (sr or bicubic); null when the image is out of view.
  const image = state.image;
  if (!image) return null;
  const s = state.zoom * dpr();
  const axis = (centre, paneSize, imageSize) => {
    const lo = Math.max(0, Math.floor(paneSize / 2 - centre * s));
    const hi = Math.min(paneSize, Math.ceil(paneSize / 2 + (imageSize - centre) * s));
    return hi > lo ? {lo, n: hi - lo, start: centre + (lo - paneSize / 2) / s} : null;
  };
  const x = axis(state.cx, pane.w, image.width), y = axis(state.cy, pane.h, image.height);
  if (!x || !y) return null;
  const query = {top: y.start, left: x.start, height: y.n / s, width: x.n / s, out_width: x.n, out_height: y.n};
  const url = `/api/images/${image.id}/view?` + new URLSearchParams({...query, method});
  return {...query, method, x: x.lo, y: y.lo, s, url, key: url};
}

// What each pane shows: [method, from, to] layers, from/to the fraction of the pane's width they cover.
function layers(pane) {
  if (!encoded()) return [["bicubic", 0, 1]];  // the preview, until the image has a field to render
  if (pane.kind === "split") return [["bicubic", 0, state.split], ["sr", state.split, 1]];
  return [[pane.kind, 0, 1]];
}

function srPane() { return panes().find((pane) => pane.kind !== "bicubic") || null; }

function encoded() { return !!state.image && state.image.state === "ready"; }

function neededRequests() {
  // The server renders the current view needs, ContinuousSR first; plain "sr" mode shows no bicubic but the
  // canvas's own placeholder.
  const requests = [];
  for (const pane of panes()) {
    for (const [method] of layers(pane)) {
      const req = viewRequest(pane, method);
      if (req && !requests.some((r) => r.key === req.key)) requests.push(req);
    }
  }
  return requests.sort((a, b) => (a.method === "sr" ? 0 : 1) - (b.method === "sr" ? 0 : 1));
}

// ------------------------------------------------------------------------------------------ drawing
function drawLayer(pane, req, from, to) {
  // A server render for `req` clipped to [from, to) of the pane: exact when it answers this view, moved when it
  // answers the same zoom elsewhere (a pan); otherwise the placeholder beneath stays. True if exact.
  const render = state.renders[req.method];
  if (!render) return false;
  ctx.save();
  ctx.beginPath();
  const x0 = pane.x + Math.round(from * pane.w), x1 = pane.x + Math.round(to * pane.w);
  ctx.rect(x0, 0, x1 - x0, pane.h);
  ctx.clip();
  let exact = false;
  if (render.key === req.key) {
    ctx.drawImage(render.bitmap, pane.x + req.x, req.y);
    exact = true;
  } else if (Math.abs(render.s - req.s) <= 1e-9 * req.s) {
    ctx.drawImage(render.bitmap, Math.round(pane.x + pane.w / 2 + (render.left - state.cx) * req.s),
                  Math.round(pane.h / 2 + (render.top - state.cy) * req.s));
  }
  ctx.restore();
  return exact;
}

function draw() {
  ctx.fillStyle = BACKGROUND;
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  $("hint").hidden = !!state.image;
  $("preview").hidden = !state.image || encoded();
  if (!state.image) {
    canvas.dataset.state = "empty";
    return;
  }
  let exact = true;
  for (const pane of panes()) {
    const req = viewRequest(pane, "sr");
    if (!req) continue;
    ctx.save();
    ctx.beginPath();
    ctx.rect(pane.x, 0, pane.w, pane.h);
    ctx.clip();
    // The placeholder: the input scaled by the canvas itself (bicubic-like), at once, and over it the server's
    // bicubic where there is one (the preview's, until the first ContinuousSR render arrives).
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(state.image.lr, req.left, req.top, req.width, req.height,
                  pane.x + req.x, req.y, req.out_width, req.out_height);
    drawLayer(pane, viewRequest(pane, "bicubic"), 0, 1);
    for (const [method, from, to] of layers(pane)) {
      exact = drawLayer(pane, viewRequest(pane, method), from, to) && exact;
    }
    if (pane.kind === "split") {
      ctx.fillStyle = DIVIDER_COLOUR;
      ctx.fillRect(pane.x + Math.round(state.split * pane.w) - Math.round(dpr()), 0,
                   Math.max(1, Math.round(2 * dpr())), pane.h);
    }
    ctx.restore();
  }
  // For tests and tools: what the canvas shows, and where the render on the ContinuousSR side sits (the preview
  // shows bicubic there).
  canvas.dataset.state = !exact ? "placeholder" : encoded() ? "rendered" : "preview";
  const pane = srPane(), req = pane && viewRequest(pane, layers(pane).at(-1)[0]);
  if (exact && req) {
    Object.assign(canvas.dataset, {renderUrl: req.url, renderX: pane.x + req.x, renderY: req.y,
                                   renderWidth: req.out_width, renderHeight: req.out_height});
  }
}

// ------------------------------------------------------------------------------------------ rendering
function scheduleRender() {
  clearTimeout(state.timer);
  state.timer = setTimeout(requestRender, RENDER_DELAY_MS);
}

function nextRequest() {
  return neededRequests().find((req) => {
    const render = state.renders[req.method];
    return !(render && render.key === req.key) && !state.failed.has(req.key);
  }) || null;
}

async function requestRender() {
  const req = nextRequest();
  if (!req || state.inflight) return;  // an answer in flight schedules the next request
  state.inflight = req;
  const start = performance.now();
  try {
    const response = await fetchOk(req.url);
    const blob = await response.blob();
    const bitmap = await createImageBitmap(blob);
    const ms = performance.now() - start;
    state.renders[req.method] = {...req, bitmap, blob, ms};
    if (req.method === "sr") {
      const server = 1000 * Number(response.headers.get("X-Render-Seconds"));
      setStatus(`${zoomText(state.zoom)}: view ${req.out_width}x${req.out_height} rendered in ` +
                `${ms.toFixed(0)} ms (server ${server.toFixed(0)} ms)`);
    }
    clearError();
    draw();
  } catch (error) {
    state.failed.add(req.key);
    showError(error.message);
  } finally {
    state.inflight = null;
    if (nextRequest()) scheduleRender();
  }
}

function viewChanged() {
  draw();
  scheduleRender();
}

// ------------------------------------------------------------------------------------------ zoom and pan
function setZoom(zoom, anchorX, anchorY) {
  // Zoom to `zoom`, keeping the input point under the anchor (CSS px from the canvas's top-left) in place.
  if (!state.image) return;
  zoom = clamp(zoom, 2 ** ZOOM_MIN_LOG2, 2 ** ZOOM_MAX_LOG2);
  const ratio = dpr();
  const pane = panes().find((p) => anchorX * ratio < p.x + p.w) || panes()[0];
  const ax = anchorX - (pane.x + pane.w / 2) / ratio, ay = anchorY - pane.h / 2 / ratio;
  state.cx += ax / state.zoom - ax / zoom;
  state.cy += ay / state.zoom - ay / zoom;
  state.zoom = zoom;
  $("zoom").value = Math.log2(zoom);
  $("zoom-value").textContent = zoomText(zoom);
  viewChanged();
}

function centreAnchor() {
  const pane = srPane() || panes()[0];
  return [(pane.x + pane.w / 2) / dpr(), pane.h / 2 / dpr()];
}

function fit() {
  if (!state.image) return;
  const pane = panes()[0];
  state.cx = state.image.width / 2;
  state.cy = state.image.height / 2;
  const zoom = Math.min(pane.w / state.image.width, pane.h / state.image.height) / dpr();
  state.zoom = clamp(zoom, 2 ** ZOOM_MIN_LOG2, 2 ** ZOOM_MAX_LOG2);
  setZoom(state.zoom, ...centreAnchor());
}

function nearDivider(event) {
  if (state.mode !== "split") return false;
  const pane = panes()[0];
  return Math.abs(event.offsetX * dpr() - (pane.x + state.split * pane.w)) <= DIVIDER_GRAB_PX * dpr();
}

canvas.addEventListener("wheel", (event) => {
  if (!state.image) return;
  event.preventDefault();
  const pixels = event.deltaY * (event.deltaMode === WheelEvent.DOM_DELTA_LINE ? WHEEL_LINE_PX : 1);
  setZoom(state.zoom * Math.exp(-pixels * WHEEL_ZOOM_RATE), event.offsetX, event.offsetY);
}, {passive: false});

canvas.addEventListener("pointerdown", (event) => {
  if (!state.image || event.button !== 0) return;
  canvas.setPointerCapture(event.pointerId);
  state.drag = {divider: nearDivider(event), x: event.clientX, y: event.clientY};
  canvas.classList.toggle("panning", !state.drag.divider);
});

canvas.addEventListener("pointermove", (event) => {
  const drag = state.drag;
  if (!drag) {
    canvas.classList.toggle("divider", nearDivider(event));
    return;
  }
  if (drag.divider) {
    const pane = panes()[0];
    state.split = clamp((event.offsetX * dpr() - pane.x) / pane.w, 0, 1);
    draw();
    return;
  }
  state.cx -= (event.clientX - drag.x) / state.zoom;
  state.cy -= (event.clientY - drag.y) / state.zoom;
  drag.x = event.clientX;
  drag.y = event.clientY;
  viewChanged();
});

function endDrag() {
  state.drag = null;
  canvas.classList.remove("panning");
}
canvas.addEventListener("pointerup", endDrag);
canvas.addEventListener("pointercancel", endDrag);

$("zoom").addEventListener("input", (event) => setZoom(2 ** Number(event.target.value), ...centreAnchor()));
$("fit").addEventListener("click", fit);
$("mode").addEventListener("change", (event) => {
  state.mode = event.target.value;
  viewChanged();
});

window.addEventListener("keydown", (event) => {
  if (!state.image || event.target.tagName === "INPUT") return;
  if (event.key === "+" || event.key === "=") setZoom(state.zoom * KEY_ZOOM_STEP, ...centreAnchor());
  else if (event.key === "-") setZoom(state.zoom / KEY_ZOOM_STEP, ...centreAnchor());
  else if (event.key === "0") fit();
});

new ResizeObserver(() => {
  const stage = $("stage");
  canvas.width = Math.max(1, Math.round(stage.clientWidth * dpr()));
  canvas.height = Math.max(1, Math.round(stage.clientHeight * dpr()));
  viewChanged();
}).observe($("stage"));

// ------------------------------------------------------------------------------------------ images
function current(id) { return !!state.image && state.image.id === id; }

async function waitEncoded(info) {
  // Poll the encode's progress until it ends, or until another image replaces this one (then its info as is).
  const progress = $("progress");
  const start = performance.now();
  progress.hidden = false;
  while (info.state === "encoding" && current(info.id)) {
    progress.max = info.total;
    progress.value = info.done;
    const seconds = ((performance.now() - start) / 1000).toFixed(0);
    setStatus(info.total > 1 ? `encoding: tile ${info.done} of ${info.total}, ${seconds} s`
                             : `encoding, ${seconds} s`);
    await sleep(POLL_MS);
    info = await (await fetchOk(`/api/images/${info.id}`)).json();
  }
  if (current(info.id)) progress.hidden = true;
  if (info.state === "failed") throw new Error(info.error || "encoding failed");
  return info;
}

function showImage(image) {
  // Put `image` on the page (null: none): a new one without renders yet, or the same one now encoded.
  if (!image || !current(image.id)) Object.assign(state, {renders: {sr: null, bicubic: null}, failed: new Set()});
  state.image = image;
  viewControls.forEach((control) => { control.disabled = !image; });
  downloadControls.forEach((control) => { control.disabled = !encoded(); });
  const name = $("name");
  name.textContent = !image ? "" : `${image.name} (${image.width}x${image.height}` +
    (encoded() ? `, encoded in ${image.encode_seconds.toFixed(1)} s)` : ")");
  name.title = name.textContent;
  document.title = image ? `${image.name} – ContinuousSR viewer` : "ContinuousSR viewer";
}

async function openFile(file) {
  // Upload `file` and show its preview at once; the previous image stays until the upload is accepted.
  if (!file) return;
  clearError();
  setStatus(`uploading ${file.name}…`);
  let info, lr;
  try {
    const response = await fetchOk("/api/images", {method: "POST", body: file,
                                                   headers: {"X-Filename": encodeURIComponent(file.name)}});
    info = await response.json();
    lr = await createImageBitmap(await (await fetchOk(`/api/images/${info.id}/lr.png`)).blob());
  } catch (error) {
    showError(error.message);
    setStatus("");
    return;
  }
  if (state.image) fetch(`/api/images/${state.image.id}`, {method: "DELETE"});  // one image per page
  showImage({...info, lr});
  fit();
  try {
    info = await waitEncoded(info);
    if (!current(info.id)) return;
    showImage({...info, lr});
    viewChanged();
  } catch (error) {
    if (!current(info.id)) return;
    showError(error.message);
    setStatus("");
    $("progress").hidden = true;
    showImage(null);  // the previous image is gone from the server already
    draw();
  }
}

$("file").addEventListener("change", (event) => {
  openFile(event.target.files[0]);
  event.target.value = "";
});

const stage = $("stage");
stage.addEventListener("dragover", (event) => {
  event.preventDefault();
  stage.classList.add("dragover");
});
stage.addEventListener("dragleave", () => stage.classList.remove("dragover"));
stage.addEventListener("drop", (event) => {
  event.preventDefault();
  stage.classList.remove("dragover");
  openFile(event.dataTransfer.files[0]);
});

// ------------------------------------------------------------------------------------------ downloads
function stem(name) { return name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9._-]+/g, "_") || "image"; }

function save(blob, filename) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = filename;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), REVOKE_MS);
}

$("download-view").addEventListener("click", async () => {
  const pane = srPane() || panes()[0];
  const req = viewRequest(pane, pane.kind === "bicubic" ? "bicubic" : "sr");
  if (!req) return showError("the image is out of view: nothing to download");
  try {
    const render = state.renders[req.method];
    const blob = render && render.key === req.key ? render.blob : await (await fetchOk(req.url)).blob();
    save(blob, `${stem(state.image.name)}_view_${zoomText(state.zoom)}_${req.method}.png`);
    clearError();
  } catch (error) {
    showError(error.message);
  }
});

$("download-full").addEventListener("click", async () => {
  const kind = $("full-kind").value, value = $("full-value").value.trim();
  const url = `/api/images/${state.image.id}/full?` + new URLSearchParams({[kind]: value, format: "png"});
  const progress = $("progress");
  progress.removeAttribute("value");  // indeterminate
  progress.hidden = false;
  setStatus(`rendering ${state.image.name} at ${kind} ${value}…`);
  try {
    const response = await fetchOk(url);
    const disposition = response.headers.get("Content-Disposition") || "";
    const match = disposition.match(/filename="([^"]+)"/);
    save(await response.blob(), match ? match[1] : `${stem(state.image.name)}_sr.png`);
    setStatus(`saved ${match ? match[1] : "the image"} (rendered in ` +
              `${Number(response.headers.get("X-Render-Seconds")).toFixed(2)} s)`);
    clearError();
  } catch (error) {
    showError(error.message);
    setStatus("");
  } finally {
    progress.hidden = true;
  }
});
