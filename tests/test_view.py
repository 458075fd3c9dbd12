"""`vre view` (a local web page over a store) in a real headless Chromium, and `vre preview --png`."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from tests.browser import Page, find_chromium
from tests.conftest import write_store
from video_pipeline import cli
from video_pipeline.preview import MASK_COLOURS, colorize, flow_legend
from video_pipeline.store import ArraySpec, VideoStore
from video_pipeline.view import ViewServer

T, H, W = 6, 24, 32
CLASSES = ["land", "water", "sky"]
PALETTE = [[0, 200, 0], [0, 0, 255], [0, 255, 255]]


def make_store(path):
    """rgb different in every frame, flow, a 3-class map, and edges computed for frames 0..2 only."""
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.stack([np.stack([(xx * 8 + t * 20) % 256, yy * 10, np.full_like(xx, 40 * t)], -1)
                    for t in range(T)]).astype(np.uint8)
    flow = np.broadcast_to(np.stack([xx - W / 2, yy - H / 2], -1)[None], (T, H, W, 2)).astype(np.float16)
    sem = np.broadcast_to((xx * 3 // W)[None, ..., None], (T, H, W, 1)).astype(np.uint8)
    write_store(path, {"rgb": (rgb, {"kind": "image", "type": "color/rgb", "value_range": [0, 255]}),
                       "flow": (flow, {"kind": "flow"}),
                       "semantic": (sem, {"kind": "semantic", "classes": CLASSES, "palette": PALETTE})})
    edges = ((xx + yy) % 5 == 0)[None, ..., None].repeat(3, 0).astype(np.uint8)
    VideoStore.open(path, "r+").write_array(ArraySpec("edges", 1, "uint8", {"kind": "binary"}), edges,
                                            np.arange(3))
    return rgb, edges


@pytest.fixture
def served(tmp_path):
    rgb, edges = make_store(tmp_path / "s.zarr")
    server = ViewServer(tmp_path / "s.zarr", port=0).start()
    yield server, rgb, edges
    server.close()


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read(), r.headers["Content-Type"]


def test_the_server_serves_frames_coloured_as_the_preview(served):
    server, rgb, edges = served
    info = json.loads(get(server.url + "api/info")[0])
    assert info["n_frames"] == T and info["base"] == "rgb" and (info["height"], info["width"]) == (H, W)
    modalities = {m["name"]: m for m in info["modalities"]}
    assert modalities["edges"]["done"] == "111000" and modalities["semantic"]["classes"] == CLASSES
    png, kind = get(server.url + "frame/flow/2.png")
    flow = VideoStore.open(server.store.path).read("flow", np.array([2]))[0]
    assert kind == "image/png"
    assert (cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1] == colorize(flow, {"kind": "flow"})).all()
    binary = cv2.imdecode(np.frombuffer(get(server.url + "frame/edges/1.png")[0], np.uint8), cv2.IMREAD_UNCHANGED)
    assert binary.shape == (H, W, 4) and ((binary[..., 3] == 255) == (edges[1, ..., 0] == 1)).all()
    assert json.loads(get(server.url + "api/range/rgb/3")[0]) == {
        "min": [float(rgb[3, ..., c].min()) for c in range(3)], "max": [float(rgb[3, ..., c].max()) for c in range(3)]}
    for missing in ("frame/edges/4.png", "frame/nope/1.png", "frame/rgb/6.png", "frame/../zarr.json"):
        with pytest.raises(urllib.error.HTTPError) as err:
            get(server.url + missing)
        assert err.value.code == 404
    assert server.httpd.server_address[0] == "127.0.0.1"


def test_chromium_scrubs_frames_and_blends_modalities_over_the_rgb(served):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    server, rgb, edges = served
    page = Page(server.url, chromium)
    try:
        pixels = "Array.from(document.getElementById('view').getContext('2d').getImageData(0, 0, %d, %d).data)" % (W, H)

        def drawn(t: int) -> np.ndarray:
            page.wait_for(f"document.body.dataset.drawn === '{t}'")
            return np.array(page.evaluate(pixels), np.int16).reshape(H, W, 4)[..., :3]

        def redrawn_after(script: str) -> np.ndarray:
            """Run `script` (which makes the page draw again) and read the canvas once it has."""
            before = int(page.wait_for("document.body.dataset.draws"))
            page.evaluate(script)
            page.wait_for(f"Number(document.body.dataset.draws) > {before}")
            return np.array(page.evaluate(pixels), np.int16).reshape(H, W, 4)[..., :3]

        def move_slider(t: int) -> None:
            page.evaluate(f"(() => {{ const s = document.getElementById('frame'); s.value = {t}; "
                          f"s.dispatchEvent(new Event('input')); }})()")

        assert np.abs(drawn(0) - rgb[0]).max() <= 1                       # the first frame's rgb
        move_slider(4)
        assert np.abs(drawn(4) - rgb[4]).max() <= 1                       # scrubbed to frame 4
        assert page.evaluate("document.getElementById('index').textContent") == "4"
        # edges over the rgb, fully opaque: edge pixels in the mask colour, the rest still the rgb
        redrawn_after("(() => { const a = document.getElementById('alpha-edges'); a.value = 100; "
                      "const on = document.getElementById('on-edges'); on.checked = true; "
                      "on.dispatchEvent(new Event('change')); })()")
        assert page.evaluate("document.getElementById('state-edges').textContent").startswith("not computed")
        move_slider(1)
        shown, on = drawn(1), edges[1, ..., 0] == 1
        assert np.abs(shown[on] - np.array(MASK_COLOURS[0])).max() <= 1
        assert np.abs(shown[~on] - rgb[1][~on]).max() <= 1
        # semantic at half opacity over it: a blend of the class colour and what lay beneath
        blended = redrawn_after("(() => { const a = document.getElementById('alpha-semantic'); a.value = 50; "
                                "const on = document.getElementById('on-semantic'); on.checked = true; "
                                "on.dispatchEvent(new Event('change')); })()")
        assert page.evaluate("document.body.dataset.drawn") == "1"
        expected = (shown[0, 0] + np.array(PALETTE[0])) / 2
        assert np.abs(blended[0, 0] - expected).max() <= 2
        # legends, value ranges, completion
        text = page.evaluate("document.getElementById('layers').innerText")
        assert all(c in text for c in CLASSES) and "3/6" in text and "6/6" in text
        assert page.evaluate("document.getElementById('range-rgb').textContent").startswith(
            f"{rgb[1, ..., 0].min()}..{rgb[1, ..., 0].max()}")
        assert page.wait_for("document.querySelector('.legend img') && document.querySelector('.legend img').naturalWidth") == 128
        # a run writes the missing edges frames meanwhile: the page follows (completion, state, pixels)
        VideoStore.open(server.store.path, "r+").write_array(
            ArraySpec("edges", 1, "uint8", {"kind": "binary"}), edges[:3], np.arange(3, 6))
        page.wait_for("document.getElementById('done-edges').textContent.trim() === '6/6'", timeout=20)
        move_slider(4)
        page.wait_for("document.getElementById('state-edges').textContent === 'computed'")
    finally:
        page.close()


def test_png_folders_hold_every_computed_frame_and_the_legends(tmp_path, capsys):
    rgb, edges = make_store(tmp_path / "s.zarr")
    png = tmp_path / "png"
    assert cli.main(["preview", str(tmp_path / "s.zarr"), "--png", str(png)]) == 0
    assert sorted(p.name for p in (png / "rgb").iterdir()) == [f"{t:06d}.png" for t in range(T)]
    assert sorted(p.name for p in (png / "edges").iterdir()) == [f"{t:06d}.png" for t in range(3)]
    assert (cv2.imread(str(png / "rgb" / "000004.png"))[..., ::-1] == rgb[4]).all()
    assert (cv2.imread(str(png / "legend" / "flow.png"))[..., ::-1] == flow_legend(256)).all()
    assert (png / "legend" / "semantic.png").is_file()
    assert cli.main(["preview", str(tmp_path / "s.zarr"), "--png", str(png), "--frames", "1"]) == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    capsys.readouterr()
    assert cli.main(["preview", str(tmp_path / "s.zarr"), "--png", str(mine)]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not written by `vre preview --png`" in err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
