"""`vre view STORE`: a local web page to scrub a store's frames and blend its modalities over the rgb.

A small stdlib HTTP server bound to 127.0.0.1 serves one page (PAGE: HTML + JavaScript, no external
files) and three kinds of data, each read from the store when asked; the page asks for /api/info
every 2 s, so it follows a run that is still writing:

    /api/info                    JSON: frames, fps, size, base modality, and per modality its kind,
                                 type, classes + palette, value_range and per-frame completion
    /frame/<name>/<t>.png        frame t of a modality, coloured by `preview.colorize` (the collage's
                                 functions); binary maps are transparent where off, to lie over rgb
    /api/range/<name>/<t>        JSON: per-channel min/max of the finite values of frame t
    /legend/<name>.png           flow's colour wheel (`preview.flow_legend`)

Nothing is written anywhere; a name or frame that does not exist is a 404.
"""
from __future__ import annotations

import http.server
import json
import re
import threading
import urllib.parse
from pathlib import Path

import cv2
import numpy as np

from video_pipeline.errors import VreError
from video_pipeline.preview import base_frame_name, class_palette, colorize, flow_legend
from video_pipeline.store import VideoStore

ROUTE = re.compile(r"^/(frame|api/range|legend)/([^/]+?)(?:/(\d+))?(\.png)?$")


def store_info(store: VideoStore) -> dict:
    """What the page needs to lay itself out (see the module docstring), as plain JSON values."""
    video = store.meta.get("video") or {}
    names = store.names
    attrs = {n: dict(store.array(n).attrs) for n in names}
    modalities = []
    for name in names:
        a, arr = attrs[name], store.array(name)
        entry = {"name": name, "kind": a.get("kind", "features"), "type": a.get("type"),
                 "channels": int(arr.shape[3]), "dtype": str(arr.dtype), "value_range": a.get("value_range"),
                 "done": "".join("1" if d else "0" for d in store.done_frames(name))}
        if entry["kind"] == "semantic":
            entry["classes"] = list(a.get("classes") or [])
            entry["palette"] = class_palette(a).tolist()
        modalities.append(entry)
    height, width = (store.array(names[0]).shape[1:3] if names else (video.get("height"), video.get("width")))
    return {"store": str(store.path), "n_frames": store.n_frames, "fps": video.get("fps"),
            "height": int(height), "width": int(width), "base": base_frame_name(attrs), "modalities": modalities}


def frame_png(store: VideoStore, name: str, index: int) -> bytes:
    """PNG bytes of frame `index` of modality `name`: RGB by `colorize`, binary maps RGBA with alpha
    0 where every channel is off (255 = where on)."""
    arr = store.read(name, np.array([index]))[0]
    attrs = dict(store.array(name).attrs)
    rgb = colorize(arr, attrs)
    if attrs.get("kind") == "binary":
        alpha = np.where((arr == 1).any(axis=-1), 255, 0).astype(np.uint8)
        image = np.dstack([rgb[..., ::-1], alpha])
    else:
        image = rgb[..., ::-1]
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return data.tobytes()


def frame_range(store: VideoStore, name: str, index: int) -> dict:
    """{"min": [...], "max": [...]} per channel over the finite values of one frame (null if none)."""
    arr = store.read(name, np.array([index]))[0].astype(np.float32)
    lo, hi = [], []
    for c in range(arr.shape[-1]):
        values = arr[..., c][np.isfinite(arr[..., c])]
        lo.append(float(values.min()) if values.size else None)
        hi.append(float(values.max()) if values.size else None)
    return {"min": lo, "max": hi}


def make_handler(store: VideoStore):
    """The request handler class serving `store` (GET only)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            path = urllib.parse.urlsplit(self.path).path
            if path in ("/", "/index.html"):
                return self.reply(200, PAGE.encode(), "text/html; charset=utf-8")
            if path == "/api/info":
                return self.reply(200, json.dumps(store_info(store)).encode(), "application/json")
            m = ROUTE.match(path)
            if not m or urllib.parse.unquote(m[2]) not in store.names:
                return self.reply(404, b"not found", "text/plain")
            kind, name, index = m[1], urllib.parse.unquote(m[2]), m[3]
            if kind == "legend":
                ok, data = cv2.imencode(".png", flow_legend(128)[..., ::-1])
                return self.reply(200, data.tobytes(), "image/png")
            if index is None or not 0 <= int(index) < store.n_frames or not store.done_frames(name)[int(index)]:
                return self.reply(404, b"frame not computed", "text/plain")
            if kind == "frame":
                return self.reply(200, frame_png(store, name, int(index)), "image/png")
            return self.reply(200, json.dumps(frame_range(store, name, int(index))).encode(), "application/json")

        def reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")  # a run may still be writing the store
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet: the terminal shows the URL, not every request
            pass

    return Handler


class ViewServer:
    """The page's server for one store, on 127.0.0.1:`port` (0: any free port)."""

    def __init__(self, store_path: str | Path, port: int = 0):
        self.store = VideoStore.open(store_path, "r")
        try:
            self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), make_handler(self.store))
        except OSError as err:
            raise VreError(f"port {port}: cannot serve on 127.0.0.1 ({err.strerror or err}); "
                           f"choose another with --port (0 picks a free one)") from None
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> "ViewServer":
        """Serve from a daemon thread (tests, notebooks); `close` stops it."""
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


PAGE = r"""<!doctype html>
<html><head><meta charset="utf-8"><title>vre view</title>
<style>
 body { font: 14px system-ui, sans-serif; background: #1e1e1e; color: #ddd; margin: 12px; }
 #top { display: flex; gap: 12px; align-items: center; margin-bottom: 8px; }
 #frame { flex: 1; }
 canvas#view { background: #000; width: 100%; max-width: 960px; image-rendering: pixelated; }
 th { text-align: left; font-weight: normal; color: #999; padding: 3px 8px; }
 table { border-collapse: collapse; margin-top: 8px; }
 td { padding: 3px 8px; vertical-align: middle; border-top: 1px solid #333; }
 .strip { height: 10px; width: 300px; }
 .swatch { display: inline-block; width: 12px; height: 12px; margin: 0 3px 0 8px; vertical-align: middle; }
 .missing { color: #e88; }
 .legend img { width: 48px; height: 48px; vertical-align: middle; }
</style></head>
<body>
<div id="top"><b id="title"></b>
 <input type="range" id="frame" min="0" value="0" step="1">
 <span>frame <b id="index">0</b> / <span id="last"></span></span></div>
<canvas id="view"></canvas>
<table id="layers"><tr><th>modality (shown)</th><th>opacity</th><th>frames computed</th>
 <th>this frame</th><th>values in this frame</th><th>legend</th></tr></table>
<script>
"use strict";
let info = null, drawing = 0;
const FOLLOW_MS = 2000;   // how often the page asks which frames are computed
const layers = {};   // name -> {on, alpha, row elements}
const view = document.getElementById("view"), ctx = view.getContext("2d");
const slider = document.getElementById("frame");

function loadImage(url) {
  return new Promise(resolve => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => resolve(null);
    img.src = url;
  });
}

function completionStrip(done) {
  const c = document.createElement("canvas");
  c.className = "strip"; c.width = done.length; c.height = 1;
  const g = c.getContext("2d");
  for (let t = 0; t < done.length; t++) {
    g.fillStyle = done[t] === "1" ? "#4c4" : "#733"; g.fillRect(t, 0, 1, 1);
  }
  return c;
}

function legendOf(m) {
  const cell = document.createElement("td"); cell.className = "legend";
  if (m.classes && m.classes.length) {
    m.classes.forEach((name, i) => {
      const s = document.createElement("span"); s.className = "swatch";
      const [r, g, b] = m.palette[i] || [0, 0, 0];
      s.style.background = `rgb(${r},${g},${b})`;
      cell.append(s, name);
    });
  } else if (m.kind === "flow") {
    const img = document.createElement("img"); img.src = `legend/${encodeURIComponent(m.name)}.png`;
    img.title = "direction of motion (hue), speed relative to the frame's largest (saturation)";
    cell.append(img, " direction, speed");
  }
  return cell;
}

function buildRows() {
  const table = document.getElementById("layers");
  for (const m of info.modalities) {
    const row = document.createElement("tr");
    const on = document.createElement("input"); on.type = "checkbox"; on.id = `on-${m.name}`;
    on.checked = m.name === info.base || (!info.base && m === info.modalities[0]);
    const alpha = document.createElement("input"); alpha.type = "range"; alpha.id = `alpha-${m.name}`;
    alpha.min = 0; alpha.max = 100; alpha.value = m.name === info.base ? 100 : 60;
    const state = document.createElement("td"); state.id = `state-${m.name}`;
    const range = document.createElement("td"); range.id = `range-${m.name}`;
    const label = document.createElement("label"); label.htmlFor = on.id;
    label.textContent = `${m.name} (${m.kind}, ${m.channels}x${m.dtype})`;
    const completion = document.createElement("td"); completion.id = `done-${m.name}`;
    const cells = [[on, label], [alpha]];
    for (const parts of cells) { const td = document.createElement("td"); td.append(...parts); row.append(td); }
    row.append(completion, state, range, legendOf(m));
    table.append(row);
    layers[m.name] = {on, alpha, state, range, completion, m};
    showCompletion(layers[m.name]);
    on.addEventListener("change", draw); alpha.addEventListener("input", draw);
  }
}

function showCompletion(l) {
  const done = [...l.m.done].filter(d => d === "1").length;
  l.completion.replaceChildren(completionStrip(l.m.done), ` ${done}/${l.m.done.length}`);
}

async function follow() {   // a run may still be writing the store: refresh what is computed
  const fresh = await (await fetch("api/info")).json();
  let changed = false;
  for (const m of fresh.modalities) {
    const l = layers[m.name];
    if (l && l.m.done !== m.done) { l.m.done = m.done; showCompletion(l); changed = true; }
  }
  if (changed) await draw();
}

async function draw() {
  const t = Number(slider.value), ticket = ++drawing;
  document.getElementById("index").textContent = t;
  const order = Object.values(layers).filter(l => l.on.checked)
    .sort((a, b) => (b.m.name === info.base) - (a.m.name === info.base));   // the base first
  const images = await Promise.all(order.map(l => l.m.done[t] === "1"
    ? loadImage(`frame/${encodeURIComponent(l.m.name)}/${t}.png`) : Promise.resolve(null)));
  const ranges = await Promise.all(Object.values(layers).map(l => l.m.done[t] === "1"
    ? fetch(`api/range/${encodeURIComponent(l.m.name)}/${t}`).then(r => r.json()) : Promise.resolve(null)));
  if (ticket !== drawing) return;   // a newer frame was asked meanwhile
  ctx.globalAlpha = 1; ctx.fillStyle = "#000"; ctx.fillRect(0, 0, view.width, view.height);
  order.forEach((l, i) => {
    if (!images[i]) return;
    ctx.globalAlpha = Number(l.alpha.value) / 100;
    ctx.drawImage(images[i], 0, 0, view.width, view.height);
  });
  ctx.globalAlpha = 1;
  Object.values(layers).forEach((l, i) => {
    const done = l.m.done[t] === "1";
    l.state.textContent = done ? "computed" : "not computed (fill value)";
    l.state.className = done ? "" : "missing";
    const r = ranges[i], fmt = v => v === null ? "-" : Number(v.toPrecision(4));
    l.range.textContent = r ? r.min.map((lo, c) => `${fmt(lo)}..${fmt(r.max[c])}`).join(" ") : "";
    if (l.m.value_range) l.range.textContent += ` (declared ${l.m.value_range.join("..")})`;
  });
  document.body.dataset.drawn = String(t);
  document.body.dataset.draws = String(Number(document.body.dataset.draws || 0) + 1);
}

async function main() {
  info = await (await fetch("api/info")).json();
  document.getElementById("title").textContent = info.store;
  document.getElementById("last").textContent = info.n_frames - 1;
  slider.max = Math.max(0, info.n_frames - 1);
  view.width = info.width; view.height = info.height;
  buildRows();
  slider.addEventListener("input", draw);
  await draw();
  setInterval(follow, FOLLOW_MS);
}
main();
</script></body></html>
"""
