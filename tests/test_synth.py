"""Synthetic clips: deterministic textured scenes, frame-number stamps, virtual flights with known
flow, lossless writing, image folders and deliberately broken files."""
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from video_pipeline import synth

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
PHOTO = SHARED / "data" / "uav_toledo" / "DJI_0061.jpg"


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture
def photo():
    if not PHOTO.is_file():
        pytest.skip(f"shared drone photo not found at {PHOTO}")
    return PHOTO


def test_scene_is_deterministic_textured_and_moving():
    a = synth.scene_frames(12, (64, 96), seed=1)
    assert a.shape == (12, 64, 96, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, synth.scene_frames(12, (64, 96), seed=1))
    assert not np.array_equal(a, synth.scene_frames(12, (64, 96), seed=2))
    gray = cv2.cvtColor(a[0], cv2.COLOR_RGB2GRAY)
    assert cv2.Canny(gray, 50, 150).mean() > 5  # plenty of edges
    for t in range(11):  # every frame moves, by a few pixels
        (dx, dy), _ = cv2.phaseCorrelate(*(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32)
                                           for f in a[t:t + 2]))
        assert 0.3 < np.hypot(dx, dy) < 8


def test_stamp_survives_lossy_coding_and_resizing(tmp_path):
    frames = synth.scene_frames(20, (96, 160), stamp=True)
    assert [synth.read_stamp(f) for f in frames] == list(range(20))
    decoded = decode(synth.write_clip(frames, tmp_path / "s.mp4"))
    assert not np.array_equal(decoded, frames)  # lossy ...
    assert [synth.read_stamp(f) for f in decoded] == list(range(20))  # ... yet readable
    small = [cv2.resize(f, (80, 48), interpolation=cv2.INTER_AREA) for f in decoded]
    assert [synth.read_stamp(f) for f in small] == list(range(20))
    frame = frames[0].copy()
    synth.stamp_number(frame, 1023)
    assert synth.read_stamp(frame) == 1023
    with pytest.raises(ValueError, match="0..1023"):
        synth.stamp_number(frame, 1024)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_lossless_clip_keeps_every_pixel(tmp_path, suffix):
    frames = synth.scene_frames(10, (64, 96), seed=4)
    path = synth.make_clip(tmp_path / f"l{suffix}", n_frames=10, size=(64, 96), seed=4, lossless=True)
    np.testing.assert_array_equal(decode(path), frames)


def test_make_clip_is_h264_yuv420p_with_keyframes(tmp_path):
    path = synth.make_clip(tmp_path / "c.mp4", n_frames=30, size=(64, 96), fps=25, keyint=10)
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 25
        packets = [p for p in c.demux(stream) if p.size]
    assert len(packets) == 30 and sum(p.is_keyframe for p in packets) >= 3
    assert any(p.pts != p.dts for p in packets)  # B-frames: stored order differs from shown order


def test_flight_moves_the_window_by_the_step(photo):
    frames = synth.flight_frames(photo, 6, (90, 120), (3, 5))
    assert frames.shape == (6, 90, 120, 3)
    for t in range(5):  # whole-pixel steps are exact crops: the content moves by -step
        np.testing.assert_array_equal(frames[t + 1][:-3, :-5], frames[t][3:, 5:])
    flow = synth.flight_flow((90, 120), (3, 5))
    assert flow.shape == (90, 120, 2) and flow.dtype == np.float32
    assert (flow[..., 0] == -5).all() and (flow[..., 1] == -3).all()


def test_subpixel_flight_matches_its_flow(photo):
    frames = synth.flight_frames(photo, 2, (128, 128), (1.5, -2.25)).astype(np.float32)
    g0, g1 = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames)
    (dx, dy), _ = cv2.phaseCorrelate(g0, g1)
    expected = synth.flight_flow((128, 128), (1.5, -2.25))[0, 0]
    assert dx == pytest.approx(expected[0], abs=0.2) and dy == pytest.approx(expected[1], abs=0.2)


def test_flight_leaving_the_photo_is_refused(photo):
    with pytest.raises(ValueError, match="leaves the 900x1200 photo"):
        synth.flight_frames(photo, 100, (180, 320), (0, 20))


def test_flight_clip_and_folder(tmp_path, photo):
    frames = synth.flight_frames(photo, 5, (64, 96), (2, 3))
    clip = synth.make_flight_clip(photo, tmp_path / "f.mkv", 5, (64, 96), (2, 3), lossless=True)
    np.testing.assert_array_equal(decode(clip), frames)
    folder = synth.write_image_folder(frames, tmp_path / "pngs")
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == [f"frame_{t:05d}.png" for t in range(5)]
    read = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    np.testing.assert_array_equal(np.stack(read), frames)


def test_truncate_keeps_the_head(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 4)
    cut = synth.truncate(src, tmp_path / "cut.bin", 0.25)
    assert cut.read_bytes() == src.read_bytes()[:256]


def test_miscounted_mp4_claims_more_frames_than_it_holds(tmp_path):
    clip = synth.make_clip(tmp_path / "c.mp4", n_frames=12, size=(32, 48))
    wrong = synth.miscount_mp4(clip, tmp_path / "wrong.mp4", extra=50)
    with av.open(str(wrong)) as c:
        assert c.streams.video[0].frames == 62
        assert sum(1 for p in c.demux(video=0) if p.size) == 12
    np.testing.assert_array_equal(decode(wrong), decode(clip))
    not_mp4 = tmp_path / "c.mkv"
    synth.make_clip(not_mp4, n_frames=3, size=(32, 48))
    with pytest.raises(ValueError, match="stts"):
        synth.miscount_mp4(not_mp4, tmp_path / "x.mp4")
