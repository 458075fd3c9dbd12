"""flow/farneback and flow/raft: pixel flow to the next frame, and the last-frame convention."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_device
import torch

from experts.flow import RAFT, RAFT_WEIGHTS, Farneback
from video_pipeline.errors import WeightsError
from video_pipeline.registry import get_expert
from video_pipeline.testing import next_frame_deps

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
PHOTO = SHARED / "data" / "uav_toledo" / "DJI_0066.jpg"


def sliding_clip(step, n=3, size=(160, 224), origin=(300, 400)):
    """A virtual flight: crops of a real drone photo, the window moving `step` = (dy, dx) px per frame.

    Returns uint8 RGB [n, H, W, 3]; the scene content moves by -step, so the true flow (dx, dy) from
    each frame to the next is (-step[1], -step[0]).
    """
    if not PHOTO.is_file():
        pytest.skip(f"drone photo not found at {PHOTO}")
    photo = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)
    (h, w), (y0, x0) = size, origin
    return np.stack([photo[y0 + i * step[0]:y0 + i * step[0] + h, x0 + i * step[1]:x0 + i * step[1] + w]
                     for i in range(n)])


def runner_deps(frames):
    """What the runner hands a needs_next_frame expert: the next frame, the previous for the last."""
    return next_frame_deps(frames)


def interior_median(flow, margin=24):
    """Median (dx, dy) of [H,W,2] away from the borders (where content leaves the window)."""
    return np.median(flow[margin:-margin, margin:-margin].astype(np.float32).reshape(-1, 2), axis=0)


def test_registered_under_contract_names():
    assert get_expert("flow/farneback") is Farneback and get_expert("flow/raft") is RAFT
    assert Farneback.needs_next_frame and RAFT.needs_next_frame


@pytest.mark.parametrize("step", [(0, 4), (3, -2)])
def test_farneback_recovers_the_window_motion(step):
    frames = sliding_clip(step)
    expert = Farneback().bind("flow")
    spec = expert.output({})
    out = expert(frames, runner_deps(frames))

    assert out.shape == (3, 160, 224, 2) and out.dtype == np.float16 == np.dtype(spec.dtype)
    assert spec.kind == "flow"
    truth = np.array([-step[1], -step[0]], dtype=np.float32)  # (dx, dy)
    for i in range(3):  # frame 2 is last: flow to frame 1, negated, stands in for the forward flow
        np.testing.assert_allclose(interior_median(out[i]), truth, atol=0.5, err_msg=f"frame {i}")


def test_farneback_at_reduced_scale_reports_full_resolution_pixels():
    frames = sliding_clip((0, 6))
    out = Farneback(scale=0.5)(frames, runner_deps(frames))
    assert out.shape == (3, 160, 224, 2)
    for i in range(3):
        np.testing.assert_allclose(interior_median(out[i]), [-6, 0], atol=0.5, err_msg=f"frame {i}")


def test_farneback_last_frame_sign_is_applied():
    frames = sliding_clip((0, 4), n=2)
    same_pair = {"next_frames": frames[[1, 1]], "next_sign": np.array([1, -1], dtype=np.float32)}
    out = Farneback()(frames[[0, 0]], same_pair)
    np.testing.assert_array_equal(out[1], -out[0])


@pytest.mark.parametrize("delta", [3, -2])
def test_farneback_delta_through_the_runner(tmp_path, delta):
    """`delta: k` through a real run (image folder, shards of 4 frames): every stored frame holds the
    flow to frame i+k, k times the per-frame motion; where the clip has no frame i+k, the flow to
    frame i-k, negated, stands in (the same motion). The array's attrs name the frame step."""
    from video_pipeline.recipe import load_recipe
    from video_pipeline.runner import RunOptions, run
    from video_pipeline.store import VideoStore
    from video_pipeline.synth import write_image_folder

    step = (0, 3)  # the window moves 3 px right per frame: content moves (dx, dy) = (-3, 0)
    frames = sliding_clip(step, n=9)
    folder = write_image_folder(frames, tmp_path / "flight")
    recipe = tmp_path / "flow.yaml"
    recipe.write_text(f"shard_frames: 4\nexperts:\n  flow:\n    type: flow/farneback\n    params: {{delta: {delta}}}\n")
    run(load_recipe(recipe), folder, tmp_path / "s.zarr", RunOptions(progress=False))
    store = VideoStore.open(tmp_path / "s.zarr", "r")
    flow = store.read("flow", np.arange(9)).astype(np.float32)
    attrs = store.array("flow").attrs
    assert attrs["delta"] == delta and attrs["direction"] == f"frame t -> frame t{delta:+d}"
    for i in range(9):
        np.testing.assert_allclose(interior_median(flow[i]), [-3 * delta, 0], atol=0.6, err_msg=f"frame {i}")
    # the same pairs, computed directly: the stored frames are exactly the expert's output on them
    np.testing.assert_array_equal(flow.astype(np.float16), Farneback(delta=delta)(frames, next_frame_deps(frames, delta)))


def test_flow_delta_must_be_a_non_zero_whole_number():
    for bad in (0, 1.5, True, "2"):
        with pytest.raises(ValueError, match="delta must be a non-zero whole number"):
            Farneback(delta=bad)


@pytest.fixture(scope="module")
def raft_small_weights(tmp_path_factory):
    """A randomly initialised torchvision raft_small state dict saved as a plain file."""
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("raft") / "raft_small_random.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    return path


def test_raft_runs_at_any_size_and_honours_the_last_frame_sign(raft_small_weights):
    rng = np.random.default_rng(0)
    frame_a, frame_b = rng.integers(0, 256, (2, 1, 44, 70, 3), dtype=np.uint8)  # not multiples of 8
    frames = np.concatenate([frame_a, frame_a])
    deps = {"next_frames": np.concatenate([frame_b, frame_b]),
            "next_sign": np.array([1, -1], dtype=np.float32)}
    expert = RAFT(model="small", num_flow_updates=2).bind("flow", weights_path=raft_small_weights)
    spec = expert.output({})
    expert.setup(run_device())
    out = expert(frames, deps)
    expert.teardown()

    assert out.shape == (2, 44, 70, 2) and out.dtype == np.float16 == np.dtype(spec.dtype)
    assert np.isfinite(out).all() and np.abs(out).max() > 0
    np.testing.assert_allclose(out[1].astype(np.float32), -out[0].astype(np.float32), atol=1e-3)


def test_raft_with_weights_of_the_other_variant_says_which_to_use(raft_small_weights):
    expert = RAFT(model="large").bind("flow", weights_path=raft_small_weights)
    with pytest.raises(WeightsError, match=f"not a torchvision raft_large.*{RAFT_WEIGHTS['large']}"):
        expert.setup(run_device())


def test_raft_rejects_a_file_that_is_not_a_checkpoint(tmp_path):
    junk = tmp_path / "raft.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="raft.pth"):
        RAFT(model="small").bind("flow", weights_path=junk).setup(run_device())


@pytest.mark.parametrize("delta, uhd", [(1, False), (2, False), (-1, True)])
def test_rife_agrees_with_vre_on_the_same_weights(tmp_path, delta, uhd):
    """A random IFNet saved as the released flownet.ckpt, loaded by flow/rife and by VRE's FlowRife:
    the same `opticalflow_rife` values on real drone frames (60x90: RIFE pads to 64x96), for VRE's
    frame step `delta` (frames paired as our runner pairs them) and its `uhd` option. Compared where
    both tools pair the same frames (VRE pairs frames beyond the video's ends with the last/first)."""
    from conftest import run_vre_oracle
    from tiny_models import build_rife

    from experts.flow import RIFE, check_rife

    weights = build_rife(tmp_path / "rife")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    with pytest.raises(WeightsError, match="missing: block3.conv1.bias"):
        check_rife({k: v for k, v in state.items() if k != "module.block3.conv1.bias"})
    photos = sorted((Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "uav_toledo").glob("*.jpg"))
    if len(photos) < 8:
        pytest.skip("drone photos not found under ../shared/data/uav_toledo")
    frames = np.stack([cv2.resize(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), (90, 60),
                                  interpolation=cv2.INTER_AREA) for p in photos[5:8]])
    expert = RIFE(units="dronescapes", delta=delta, uhd=uhd).bind("flow", weights_path=weights.parent)
    expert.setup(run_device())
    ours = expert(frames, next_frame_deps(frames, delta)).astype(np.float32)
    assert ours.shape == (3, 60, 90, 2) and ours.std() > 1e-4

    theirs = run_vre_oracle(["optical-flow/rife"], {"frames": frames}, tmp_path, {"optical-flow/rife": {
        "compute_backward_flow": False, "uhd": uhd, "delta": delta, "weights": str(weights)}})["optical-flow/rife"]
    assert theirs.shape == ((3, 14, 29, 2) if uhd else (3, 30, 45, 2))  # uhd: IFNet's odd grid on 32x48
    both = [i for i in range(3) if 0 <= i + delta < 3]  # frames both tools pair with frame i + delta
    # the dataset stores VRE's map resized to the frame, bilinearly
    theirs = np.stack([cv2.resize(theirs[i], (90, 60), interpolation=cv2.INTER_LINEAR) for i in both])
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(ours[both], theirs, atol=2e-3 * scale + 1e-4)  # float16 storage


def test_rife_pixels_are_the_dronescapes_values_rescaled(tmp_path):
    """On a 64x96 frame (no padding) the half-resolution grid is 32x48: pixels = 2 x (dx * 32, dy * 48)."""
    from tiny_models import build_rife

    from experts.flow import RIFE

    weights = build_rife(tmp_path / "rife")
    rng = np.random.default_rng(0)
    frames = np.stack([cv2.GaussianBlur(f, (0, 0), 3) for f in rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)])
    deps = {"next_frames": frames[1:], "next_sign": np.ones(1, np.float32)}
    out = {}
    for units, backward in (("pixels", False), ("dronescapes", False), ("pixels", True)):
        expert = RIFE(units=units, backward=backward).bind("flow", weights_path=weights)
        expert.setup(run_device())
        out[units, backward] = expert(frames[:1], deps).astype(np.float32)
    np.testing.assert_allclose(out["pixels", False], out["dronescapes", False] * [64, 96], rtol=2e-3, atol=1e-3)
    assert np.abs(out["pixels", True] - out["pixels", False]).mean() > 1e-2
