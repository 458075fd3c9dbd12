"""Previews: each kind drawn by its pure colorize function, collages of a store as PNG and MP4."""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from conftest import vre
from video_pipeline.errors import StoreError, VreError
from video_pipeline.expert import OutputSpec
from video_pipeline.preview import (MASK_COLOURS, MISSING_GREY, binary_to_rgb, colorize, depth_to_rgb,
                                    features_to_rgb, flow_legend, flow_to_rgb, flow_wheel, grid, make_preview,
                                    normals_to_rgb, semantic_to_rgb, tile_size)
from video_pipeline.store import ArraySpec, VideoStore

T, H, W = 5, 72, 128
CLASSES = ("land", "water", "sky")
PALETTE = ((0, 200, 0), (0, 0, 255), (0, 255, 255))


def hue(rgb) -> int:
    """OpenCV hue (0..179) of one RGB colour."""
    return int(cv2.cvtColor(np.uint8([[rgb]]), cv2.COLOR_RGB2HSV)[0, 0, 0])


# ------------------------------------------------------------------------------------ pure functions
def test_flow_legend_is_the_wheel_flow_to_rgb_draws():
    key = flow_legend(65)                                   # centre pixel (32, 32) is no motion
    assert tuple(key[32, 32]) == (255, 255, 255) and tuple(key[0, 0]) == (32, 32, 32)
    for (y, x), vector in {(32, 64): (1, 0), (0, 32): (0, -1), (32, 0): (-1, 0), (64, 32): (0, 1)}.items():
        assert tuple(key[y, x]) == tuple(flow_to_rgb(np.array([[vector]], np.float32), max_magnitude=1)[0, 0])


def test_flow_colour_wheel_hue_is_direction_and_saturation_is_magnitude():
    directions = {"right": (1, 0), "down": (0, 1), "left": (-1, 0), "up": (0, -1)}
    flow = np.array([[directions[d] for d in directions]], np.float32) * 4      # [1, 4, 2]
    rgb = flow_to_rgb(flow, max_magnitude=4)
    hues = [hue(c) for c in rgb[0]]
    assert len(set(hues)) == 4                                   # four directions, four hues
    assert tuple(rgb[0, 0]) == (255, 0, 0)                       # rightward: the wheel's start, red
    assert abs(hues[0] - hues[2]) > 60                           # opposite directions, far hues
    # no motion is white; half the maximum is half as saturated; NaN is black
    still = flow_to_rgb(np.array([[[0, 0], [2, 0], [4, 0], [np.nan, 0]]], np.float32), max_magnitude=4)
    assert tuple(still[0, 0]) == (255, 255, 255)
    sat = cv2.cvtColor(still[:, :3], cv2.COLOR_RGB2HSV)[0, :, 1].astype(int)
    assert sat[0] == 0 and abs(sat[1] - 128) <= 2 and sat[2] == 255
    assert tuple(still[0, 3]) == (0, 0, 0)
    # default scale: the longest vector of the frame is fully saturated
    assert tuple(flow_to_rgb(flow[:, :1] * 10)[0, 0]) == (255, 0, 0)
    wheel = flow_wheel()
    assert wheel.shape == (55, 3) and wheel.min() >= 0 and wheel.max() <= 1


def test_depth_is_a_monotonic_colormap_robust_to_outliers():
    ramp = np.linspace(1, 50, 200, dtype=np.float32)[None].repeat(4, 0)
    ramp[0, 0] = 1e6                                             # one wild pixel
    ramp[1, 1] = np.nan
    rgb = depth_to_rgb(ramp)
    lightness = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[2].astype(int)
    assert (np.diff(lightness[5:-5]) >= -1).all()               # inferno brightens with the value
    assert lightness[-5] - lightness[5] > 150                   # the outlier does not flatten the ramp
    assert tuple(rgb[1, 1]) == (0, 0, 0)                        # missing depth is black


def test_semantic_uses_the_palette_and_fill_is_black():
    labels = np.array([[0, 1, 2, 255]], np.uint8)[..., None]
    rgb = semantic_to_rgb(labels, np.array(PALETTE, np.uint8))
    assert [tuple(c) for c in rgb[0]] == [*PALETTE, (0, 0, 0)]
    probs = np.zeros((1, 2, 3), np.float16)
    probs[0, 0, 2] = probs[0, 1, 1] = 0.9
    rgb = semantic_to_rgb(probs, np.array(PALETTE, np.uint8))                    # argmax of probabilities
    assert [tuple(c) for c in rgb[0]] == [PALETTE[2], PALETTE[1]]


def test_binary_is_drawn_over_the_frame():
    frame = np.full((2, 3, 3), 100, np.uint8)
    mask = np.array([[1, 0, 255], [0, 1, 0]], np.uint8)[..., None]
    out = binary_to_rgb(mask, frame)
    on, off = mask[..., 0] == 1, mask[..., 0] != 1
    assert (out[off] == 100).all()                              # off (and the 255 fill): the frame
    expected = np.round(0.4 * 100 + 0.6 * np.array(MASK_COLOURS[0]))
    assert (out[on] == expected).all()
    alone = binary_to_rgb(mask)                                 # no frame: opaque on black
    assert (alone[on] == MASK_COLOURS[0]).all() and (alone[off] == 0).all()


def test_normals_features_and_images():
    normals = np.array([[[0.5, 0.5, 1.0], [0.0, 1.0, 0.5]]], np.float16)
    assert [tuple(c) for c in normals_to_rgb(normals)[0]] == [(128, 128, 255), (0, 255, 128)]
    feats = np.array([[[0.0], [1.0], [2.0]]], np.float16)       # 2.0 is clipped to the range
    viridis = cv2.applyColorMap(np.uint8([[0, 255]]), cv2.COLORMAP_VIRIDIS)[0, :, ::-1]
    out = features_to_rgb(feats, value_range=(0, 1))
    assert tuple(out[0, 0]) == tuple(viridis[0]) and tuple(out[0, 2]) == tuple(viridis[1])
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    assert (colorize(grey, {"kind": "image"}) == grey).all()
    for kind, channels in [("image", 3), ("depth", 1), ("normals", 3), ("flow", 2), ("binary", 2),
                           ("semantic", 1), ("features", 5)]:
        out = colorize(np.zeros((4, 6, channels), np.uint8 if kind in ("image", "binary", "semantic")
                                else np.float16), {"kind": kind})
        assert out.shape == (4, 6, 3) and out.dtype == np.uint8, kind


def test_tiles_are_capped_and_even():
    assert tile_size(540, 960) == (270, 480)
    assert tile_size(72, 128) == (72, 128)
    assert all(v % 2 == 0 for v in tile_size(45, 81))
    collage = grid([np.zeros((*tile_size(540, 960), 3), np.uint8)] * 11)   # 10 modalities + a legend
    assert collage.shape == (810, 1920, 3)


# ------------------------------------------------------------------------------------ stores
def make_store(path: Path, fps: float = 12.0) -> tuple[VideoStore, dict[str, np.ndarray]]:
    """A store written through the store API: one modality of each kind; 'edges' lacks frames 3 and 4,
    'semantic' frame 4."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    frames = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    data = {
        "rgb": (OutputSpec(3, "image"), "color/rgb", frames),
        "depth": (OutputSpec(1, "depth"), "depth/hf",
                  np.broadcast_to((yy + 1.0)[None, ..., None], (T, H, W, 1)).astype(np.float16)),
        "semantic": (OutputSpec(1, "semantic", classes=CLASSES, palette=PALETTE), "semantic/hf",
                     np.broadcast_to((xx * 3 // W)[None, ..., None], (T, H, W, 1)).astype(np.uint8)),
        "flow": (OutputSpec(2, "flow"), "flow/farneback", np.ones((T, H, W, 2), np.float16)),
        "normals": (OutputSpec(3, "normals"), "normals/svd", np.full((T, H, W, 3), 0.5, np.float16)),
        "edges": (OutputSpec(1, "binary"), "edges/canny",
                  np.broadcast_to((xx % 8 == 0)[None, ..., None], (T, H, W, 1)).astype(np.uint8)),
    }
    store = VideoStore.open(path, "w")
    recipe = {"experts": {n: {"type": t} for n, (_, t, _) in data.items()}}
    video = {"path": "clip.mp4", "n_frames": T, "fps": fps, "height": H, "width": W}
    store.init_meta(recipe, "0" * 64, video, "test", 4, (H, W))
    for name, (spec, type_name, values) in data.items():
        attrs = {"type": type_name, **spec.to_attrs()}
        done = {"edges": np.arange(3), "semantic": np.arange(4)}.get(name, np.arange(T))
        store.write_array(ArraySpec(name, spec.channels, spec.dtype, attrs), values[done], done)
    return store, {n: v for n, (_, _, v) in data.items()}


def tile_at(collage: np.ndarray, i: int, cols: int = 3) -> np.ndarray:
    r, c = divmod(i, cols)
    return collage[r * H:(r + 1) * H, c * W:(c + 1) * W]


def read_png(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]


def test_png_collage_draws_every_modality_by_kind(tmp_path):
    store, data = make_store(tmp_path / "s.zarr")
    out = make_preview(store, tmp_path / "p.png", frames=np.array([1]))
    png = read_png(out)
    # 6 modalities + the semantic and flow legends = 8 tiles in a 3 x 3 grid of 72x128 tiles
    assert png.shape == (3 * H, 3 * W, 3)
    below_label = slice(H // 2, H)
    assert (tile_at(png, 0)[below_label] == data["rgb"][1][below_label]).all()       # rgb as is
    semantic = tile_at(png, 2)[below_label]
    assert tuple(semantic[5, 2]) == PALETTE[0] and tuple(semantic[5, W - 3]) == PALETTE[2]
    legend = tile_at(png, 3)
    assert all(np.all(legend == colour, axis=-1).sum() >= 25 for colour in PALETTE)  # a swatch per class
    wheel = tile_at(png, 5)                                                          # flow's key
    side = H - 24
    assert (wheel[H - side - 4:H - 4, (W - side) // 2:(W + side) // 2] == flow_legend(side)).all()
    assert (tile_at(png, 6)[below_label] == 128).all()                                # normals 0.5
    edges = tile_at(png, 7)[below_label]
    assert tuple(edges[0, 0]) != tuple(data["rgb"][1][H // 2, 0])                     # overlaid on rgb
    assert tuple(edges[0, 1]) == tuple(data["rgb"][1][H // 2, 1])
    # a frame a modality has not computed is a grey "missing" tile; the layout stays the same
    png4 = read_png(make_preview(store, tmp_path / "p4.png", frames=np.array([4])))
    assert png4.shape == png.shape
    for missing in (tile_at(png4, 2), tile_at(png4, 7)):
        assert np.mean(np.all(missing == MISSING_GREY, axis=-1)) > 0.6
    assert (tile_at(png4, 3) == legend).all()
    assert (tile_at(png4, 0)[below_label] == data["rgb"][4][below_label]).all()


def test_mp4_has_every_frame_at_the_store_fps(tmp_path):
    store, _ = make_store(tmp_path / "s.zarr", fps=12.0)
    out = make_preview(store, tmp_path / "p.mp4")
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.average_rate == 12
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert stream.format.name == "yuv420p"
    assert len(frames) == T and frames[0].shape == (3 * H, 3 * W, 3)
    assert not (tmp_path / "p.mp4.partial").exists()
    two = make_preview(store, tmp_path / "two.mp4", frames=np.array([3, 1]))
    with av.open(str(two)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 2


def test_preview_errors_are_one_line(tmp_path):
    store, _ = make_store(tmp_path / "s.zarr")
    with pytest.raises(VreError, match=r"\.mp4 .* or \.png"):
        make_preview(store, tmp_path / "p.gif")
    with pytest.raises(VreError, match="0..4"):
        make_preview(store, tmp_path / "p.png", frames=np.array([7]))
    empty = VideoStore.open(tmp_path / "e.zarr", "w")
    empty.init_meta({"experts": {}}, "0" * 64, {"path": "v", "n_frames": 2, "fps": 1, "height": 2, "width": 2},
                    "test", 2, (2, 2))
    with pytest.raises(StoreError, match="no modalities"):
        make_preview(empty, tmp_path / "e.png")


def test_vre_preview_command(tmp_path):
    make_store(tmp_path / "s.zarr")
    res = vre("preview", str(tmp_path / "s.zarr"), "-o", str(tmp_path / "p.png"), "--frames", "2")
    assert res.returncode == 0, res.stderr
    assert read_png(tmp_path / "p.png").shape == (3 * H, 3 * W, 3)
    bad = vre("preview", str(tmp_path / "s.zarr"), "-o", str(tmp_path / "p.gif"))
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and ".png" in bad.stderr
