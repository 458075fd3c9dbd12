"""edges/canny and edges/pidinet: binary Canny maps, exact pixel-difference conversion, real PiDiNet."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_device
import torch
import torch.nn.functional as F

from experts.edges import Canny, PiDiNet, convert_pidinet, pdc_to_conv, pidinet_layout
from video_pipeline.errors import WeightsError
from video_pipeline.registry import get_expert

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
PIDINET_WEIGHTS = SHARED / "weights" / "pidinet_bsds_table5.pth"
DRONE_PHOTOS = sorted((SHARED / "data" / "uav_toledo").glob("*.jpg"))


def square_frame(size=64, lo=20, hi=44):
    """uint8 [1,size,size,3]: black with a white square covering rows/cols lo..hi-1."""
    frame = np.zeros((1, size, size, 3), dtype=np.uint8)
    frame[0, lo:hi, lo:hi] = 255
    return frame


def test_registered_under_contract_names():
    assert get_expert("edges/canny") is Canny
    assert get_expert("edges/pidinet") is PiDiNet


def test_canny_marks_only_the_square_border_with_ones():
    frames = np.concatenate([square_frame(), np.zeros((1, 64, 64, 3), np.uint8)])
    expert = Canny().bind("edges")
    spec = expert.output({})
    out = expert(frames, {})

    assert out.shape == (2, 64, 64, 1) and out.dtype == np.uint8 == np.dtype(spec.dtype)
    assert spec.kind == "binary" and set(np.unique(out)) == {0, 1}
    edges = out[0, :, :, 0].astype(bool)
    # Every edge pixel lies within one pixel of the square's outline ...
    yy, xx = np.nonzero(edges)
    dist_to_border = np.abs(np.stack([yy - 20, yy - 43, xx - 20, xx - 43])).min(0)
    inside_band = (yy >= 19) & (yy <= 44) & (xx >= 19) & (xx <= 44)
    assert inside_band.all() and (dist_to_border <= 1).all()
    # ... and the outline is traced on all four sides.
    for side in (edges[19:22, 24:40], edges[42:45, 24:40], edges[24:40, 19:22], edges[24:40, 42:45]):
        assert side.any(axis=0 if side.shape[0] == 3 else 1).all()
    assert not out[1].any()  # a flat frame has no edges


def test_canny_thresholds_and_blur_apply():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    busy = Canny(low=100, high=200)(noise, {}).sum()
    assert Canny(low=100, high=200, blur=5)(noise, {}).sum() < busy
    assert Canny(low=1000, high=2000)(noise, {}).sum() < busy


# --- pixel-difference convolutions: the conversion must equal the definition ---------------------

NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # flat 3x3 order, centre = 4
CLOCKWISE = [0, 1, 2, 5, 8, 7, 6, 3]


def pixel_difference_conv(op, x, weight, groups):
    """Direct definition of cv/cd/ad/rd on zero-padded x [N,C,H,W]; weight [O, C/groups, 3, 3]."""
    n, c, h, w = x.shape
    xp = F.pad(x, (2, 2, 2, 2))

    def at(dy, dx):
        return xp[:, :, 2 + dy:2 + dy + h, 2 + dx:2 + dx + w]

    if op == "cv":
        terms = [at(*d) for d in NEIGHBOURS]
    elif op == "cd":
        terms = [at(*d) - at(0, 0) for d in NEIGHBOURS]
    elif op == "ad":
        nxt = {k: CLOCKWISE[(i + 1) % 8] for i, k in enumerate(CLOCKWISE)}
        terms = [at(*NEIGHBOURS[k]) - at(*NEIGHBOURS[nxt[k]]) if k != 4 else torch.zeros_like(x)
                 for k in range(9)]
    else:  # rd: weight k (k = 1..8) scales x[2d] - x[d] for the k-th non-centre direction d
        directions = [d for d in NEIGHBOURS if d != (0, 0)]
        terms = [torch.zeros_like(x)] + [at(2 * dy, 2 * dx) - at(dy, dx) for dy, dx in directions]
    diffs = torch.stack(terms, dim=2)  # [N, C, 9, H, W]
    taps = weight.reshape(weight.shape[0], weight.shape[1], 9)
    if groups == 1:
        return torch.einsum("nckhw,ock->nohw", diffs, taps)
    return torch.einsum("nckhw,ck->nchw", diffs, taps[:, 0])


@pytest.mark.parametrize("op", ["cv", "cd", "ad", "rd"])
@pytest.mark.parametrize("channels,groups", [((3, 5), 1), ((6, 6), 6)])
def test_converted_kernel_equals_pixel_difference_definition(op, channels, groups):
    gen = torch.Generator().manual_seed(1)
    cin, cout = channels
    x = torch.randn(2, cin, 11, 13, generator=gen, dtype=torch.float64)
    weight = torch.randn(cout, cin // groups, 3, 3, generator=gen, dtype=torch.float64)
    kernel = pdc_to_conv(op, weight)
    assert kernel.shape[-1] == (5 if op == "rd" else 3)
    converted = F.conv2d(x, kernel, padding=kernel.shape[-1] // 2, groups=groups)
    torch.testing.assert_close(converted, pixel_difference_conv(op, x, weight, groups),
                               rtol=1e-12, atol=1e-12)


def test_convert_rejects_a_foreign_state_dict():
    state = {k: torch.zeros(shape) for k, shape in pidinet_layout().items()}
    del state["classifier.bias"]
    state["head.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="missing: classifier.bias; unexpected: head.weight"):
        convert_pidinet(state)
    state = {k: torch.zeros(shape) for k, shape in pidinet_layout().items()}
    state["init_block.weight"] = torch.zeros(30, 3, 3, 3)
    with pytest.raises(WeightsError, match="wrong shape: init_block.weight"):
        convert_pidinet(state)


def test_pidinet_without_weights_says_what_to_give():
    with pytest.raises(WeightsError, match="needs weights"):
        PiDiNet().bind("edges").setup(run_device())


# --- the released checkpoint on real drone imagery ---------------------------------------------

@pytest.fixture(scope="module")
def drone_frames():
    if len(DRONE_PHOTOS) < 2:
        pytest.skip(f"drone photos not found under {DRONE_PHOTOS and DRONE_PHOTOS[0].parent or SHARED}")
    photos = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in DRONE_PHOTOS[5:7]]
    return np.stack([cv2.resize(p, (320, 240), interpolation=cv2.INTER_AREA) for p in photos])


def test_pidinet_checkpoint_matches_the_architecture_exactly():
    if not PIDINET_WEIGHTS.is_file():
        pytest.skip(f"PiDiNet weights not found at {PIDINET_WEIGHTS}")
    state = torch.load(PIDINET_WEIGHTS, map_location="cpu", weights_only=True)["state_dict"]
    assert {k.removeprefix("module."): tuple(v.shape) for k, v in state.items()} == pidinet_layout()
    assert sum(v.numel() for v in state.values()) == 710_149


def test_pidinet_edges_follow_image_boundaries(drone_frames):
    if not PIDINET_WEIGHTS.is_file():
        pytest.skip(f"PiDiNet weights not found at {PIDINET_WEIGHTS}")
    expert = PiDiNet().bind("edges", weights_path=PIDINET_WEIGHTS)
    spec = expert.output({})
    expert.setup(run_device())
    out = expert(drone_frames, {})
    expert.teardown()

    assert out.shape == (2, 240, 320, 1) and out.dtype == np.float16 == np.dtype(spec.dtype)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    for frame, edge in zip(drone_frames, out[..., 0].astype(np.float32)):
        # Gradients at the scale of PiDiNet's few-pixel-wide edges, not of single-pixel noise.
        grey = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 1)
        magnitude = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
        strong = magnitude >= np.quantile(magnitude, 0.9)
        weak = magnitude <= np.quantile(magnitude, 0.5)
        assert edge[strong].mean() > 3 * edge[weak].mean()
        assert edge.max() > 0.9 and np.median(edge) < 0.2  # confident, and sparse


# --- DexiNed: the released checkpoint layout, and VRE's edges_dexined on the same weights ---------

def test_dexined_encodings():
    """fused: sigmoid of the last map; dronescapes: mean over the 7 maps of 1 - (s - min) * (max - min)."""
    from experts.edges import dexined_edges

    logits = [torch.zeros(1, 1, 2, 2) for _ in range(6)] + [torch.tensor([[[[0.0, 100.0], [-100.0, 0.0]]]])]
    torch.testing.assert_close(dexined_edges(logits, "fused"), torch.tensor([[[[0.5, 1.0], [0.0, 0.5]]]]))
    # six flat maps give 1 each; the last spans [0, 1]: 1 - s
    expected = (6 + 1 - torch.tensor([[[[0.5, 1.0], [0.0, 0.5]]]])) / 7
    torch.testing.assert_close(dexined_edges(logits, "dronescapes"), expected)


def test_dexined_agrees_with_vre_on_the_same_weights(tmp_path):
    """A random DexiNed saved as the released dexined.pth, loaded by edges/dexined and by VRE's
    DexiNed: the same `edges_dexined` values on a real drone frame (64x64)."""
    from conftest import run_vre_oracle
    from tiny_models import build_dexined

    from experts.edges import DexiNed, check_dexined, dexined_layout

    weights = build_dexined(tmp_path / "dexined")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    with pytest.raises(WeightsError, match="missing: block_cat.conv.bias"):
        check_dexined({k: v for k, v in state.items() if k != "block_cat.conv.bias"})
    assert sum(v.numel() for k, v in state.items() if k in dexined_layout()) > 35_000_000
    if not DRONE_PHOTOS:
        pytest.skip(f"drone photos not found under {SHARED / 'data' / 'uav_toledo'}")
    photo = cv2.cvtColor(cv2.imread(str(DRONE_PHOTOS[5])), cv2.COLOR_BGR2RGB)
    frames = cv2.resize(photo, (64, 64), interpolation=cv2.INTER_AREA)[None]

    expert = DexiNed().bind("edges", weights_path=weights)
    expert.setup(run_device())
    ours = expert(frames, {}).astype(np.float32)
    assert ours.shape == (1, 64, 64, 1)
    assert 0 <= ours.min() < ours.max() <= 1 and ours.std() > 1e-3

    theirs = run_vre_oracle(["edges/dexined"], {"frames": frames}, tmp_path,
                            {"edges/dexined": {"weights": str(weights)}})["edges/dexined"]
    # VRE keeps its 512x512 map; the dataset stores it resized to the frame, bilinearly.
    theirs = cv2.resize(theirs[0, :, :, 0].astype(np.float32), (64, 64), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(ours[0, :, :, 0], theirs, atol=2e-3)  # float16 storage
