"""Temporal consistency along stored flow: constant videos score 1, known synthetic shifts give the
values worked out by hand, chains of flows for delta > 1, class probabilities, and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_store
from video_pipeline.cli import main as vre_main
from video_pipeline.errors import VreError
from video_pipeline.phgmae.consistency import consistency, follow

T, H, W = 5, 12, 32
SHIFT = 2     # pixels per frame, to the right
PERIOD = 8    # stripes of 4 pixels, two classes


def stripes(t: int) -> np.ndarray:
    """uint8 [H, W]: vertical stripes of classes 0/1, 4 pixels wide, moved SHIFT pixels right per frame."""
    x = np.arange(W)
    return np.broadcast_to(((x - SHIFT * t) // (PERIOD // 2)) % 2, (H, W)).astype(np.uint8)


def flow_store(path: Path, labels: np.ndarray, flow_x: float, extra: dict | None = None) -> Path:
    """A store of a class map `labels` [T, H, W] and a constant flow (flow_x, 0) at every frame."""
    flow = np.zeros((len(labels), H, W, 2), np.float16)
    flow[..., 0] = flow_x
    arrays = {"labels": (labels[..., None], {"kind": "semantic", "channels": 1, "classes": ["a", "b"]}),
              "flow": (flow, {"kind": "flow", "channels": 2}), **(extra or {})}
    return write_store(path, arrays, shard_frames=2)


def test_a_constant_video_is_perfectly_consistent(tmp_path):
    labels = np.repeat(stripes(0)[None], T, axis=0)
    report = consistency([flow_store(tmp_path / "c.zarr", labels, 0.0)], "labels", "flow")
    assert report["measure"] == "agreement"
    assert report["overall"] == {"pairs": T - 1, "valid_share": 1.0, "agreement": 1.0}


def test_a_known_shift_followed_by_the_right_flow_agrees_everywhere_it_stays_in_view(tmp_path):
    labels = np.stack([stripes(t) for t in range(T)])
    store = flow_store(tmp_path / "s.zarr", labels, float(SHIFT))
    one = consistency([store], "labels", "flow", delta=1)["overall"]
    assert one["agreement"] == 1.0
    assert one["valid_share"] == pytest.approx((W - SHIFT) / W)     # the last SHIFT columns leave the frame
    two = consistency([store], "labels", "flow", delta=2)["overall"]
    assert two["pairs"] == T - 2 and two["agreement"] == 1.0
    assert two["valid_share"] == pytest.approx((W - 2 * SHIFT) / W)


def test_a_known_shift_with_a_wrong_flow_gives_the_expected_share(tmp_path):
    # Stripes 4 wide moved by 2 under a zero flow: exactly half of every frame changes label.
    labels = np.stack([stripes(t) for t in range(T)])
    report = consistency([flow_store(tmp_path / "w.zarr", labels, 0.0)], "labels", "flow")
    assert report["overall"]["agreement"] == pytest.approx(0.5)
    assert report["overall"]["valid_share"] == 1.0


def test_probabilities_compare_by_top_class_and_regression_by_absolute_difference(tmp_path):
    labels = np.stack([stripes(t) for t in range(T)])
    probs = np.stack([1 - labels, labels], axis=-1).astype(np.float16) * 0.8 + 0.1   # top class = label
    ramp = (np.arange(W)[None, None, :] - SHIFT * np.arange(T)[:, None, None]).astype(np.float16)
    ramp = np.broadcast_to(ramp, (T, H, W))[..., None].copy()  # moves with the flow: value(x + 2, t + 1) = value(x, t)
    extra = {"probs": (probs, {"kind": "semantic", "channels": 2, "classes": ["a", "b"]}),
             "ramp": (ramp, {"kind": "depth", "channels": 1})}
    store = flow_store(tmp_path / "p.zarr", labels, float(SHIFT), extra)
    assert consistency([store], "probs", "flow")["overall"]["agreement"] == 1.0
    moving = consistency([store], "ramp", "flow")
    assert moving["measure"] == "mean_abs_diff" and moving["overall"]["mean_abs_diff"] == pytest.approx(0.0)
    still = flow_store(tmp_path / "q.zarr", labels, 0.0, extra)
    assert consistency([still], "ramp", "flow")["overall"]["mean_abs_diff"] == pytest.approx(SHIFT)


def test_follow_chains_flows_and_drops_pixels_that_leave():
    flows = [np.full((4, 6, 2), (1.0, 0.0), np.float32), np.full((4, 6, 2), (0.0, 1.0), np.float32)]
    x, y, valid = follow(flows)
    assert x[0, 0] == 1 and y[0, 0] == 1
    assert valid[:3, :5].all() and not valid[3].any() and not valid[:, 5].any()
    flows[1][0, 1] = np.nan
    assert not follow(flows)[2][0, 0]


def test_frames_not_computed_are_left_out_per_store(tmp_path):
    labels = np.stack([stripes(t) for t in range(T)])
    a = flow_store(tmp_path / "a.zarr", labels, float(SHIFT))
    b = flow_store(tmp_path / "b.zarr", labels, 0.0)
    from video_pipeline.store import VideoStore

    VideoStore.open(b, "r+").clear("labels", np.array([2]))           # frame 2 of b: not computed
    report = consistency([a, b], "labels", "flow")
    assert report["stores"][str(a)]["pairs"] == T - 1 and report["stores"][str(b)]["pairs"] == T - 3
    assert report["overall"]["pairs"] == 2 * T - 4
    assert report["overall"]["agreement"] == pytest.approx(
        (1.0 * (T - 1) * (W - SHIFT) + 0.5 * (T - 3) * W) / ((T - 1) * (W - SHIFT) + (T - 3) * W))


def test_cli(tmp_path, capsys):
    labels = np.stack([stripes(t) for t in range(T)])
    store = flow_store(tmp_path / "s.zarr", labels, float(SHIFT))
    assert vre_main(["consistency", str(store), "--modality", "labels", "--flow", "flow", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["overall"]["agreement"] == 1.0
    assert vre_main(["consistency", str(store), "--modality", "labels", "--flow", "flow"]) == 0
    assert "overall" in capsys.readouterr().out
    assert vre_main(["consistency", str(store), "--modality", "labels", "--flow", "flow", "--delta", "9"]) == 2
    assert "no frame pair" in capsys.readouterr().err
    assert vre_main(["consistency", str(store), "--modality", "labels", "--flow", "labels"]) == 2
    assert "2 (dx, dy)" in capsys.readouterr().err
    with pytest.raises(VreError, match="has no modality 'nope'"):
        consistency([store], "nope", "flow")
