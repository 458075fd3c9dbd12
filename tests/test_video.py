"""The frame reader: exact indices whatever the container says, selections, random access, next
frames, image folders, and broken inputs (missing, not a video, empty, truncated, cut mid-read)."""
import threading
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from video_pipeline import synth
from video_pipeline.errors import DecodeError, VideoError, VreError
from video_pipeline.video import FrameIndex, Video, parse_frames, partner_frames

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
N = 40
SIZE = (96, 160)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """The same 40 stamped frames (frame number in the top band) in several containers."""
    root = tmp_path_factory.mktemp("clips")
    frames = synth.scene_frames(N, SIZE, seed=3, stamp=True)
    out = {"frames": frames}
    for name in ("mp4", "mkv", "h264"):
        out[name] = synth.write_clip(frames, root / f"clip.{name}")
    out["avi"] = synth.write_clip(frames, root / "clip.avi", codec="mpeg4")
    out["miscounted"] = synth.miscount_mp4(out["mp4"], root / "miscounted.mp4", extra=100)
    out["lossless"] = synth.write_clip(frames, root / "lossless.mp4", lossless=True)
    return out


def stamps(frames: np.ndarray) -> list[int]:
    return [synth.read_stamp(f) for f in frames]


def container_frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return c.streams.video[0].frames


def read_all(video: Video, groups, **kw):
    """Batches as a list, plus the DecodeError that ended them (or None)."""
    got, error = [], None
    try:
        for batch in video.batches(groups, **kw):
            got.append(batch)
    except DecodeError as err:
        error = err
    return got, error


# ------------------------------------------------------------------------ index and exact frames
@pytest.mark.parametrize("kind", ["mp4", "mkv", "h264", "avi", "miscounted"])
def test_every_frame_comes_with_its_own_index(clips, kind):
    video = Video.open(clips[kind])
    assert video.n_frames == N
    assert (video.height, video.width) == SIZE and video.fps == pytest.approx(24, rel=1e-3)
    groups = [np.arange(0, 13), np.arange(13, 27), np.arange(27, N)]
    got, error = read_all(video, groups)
    assert error is None
    assert [b.indices.tolist() for b in got] == [g.tolist() for g in groups]
    for batch in got:
        assert batch.frames.dtype == np.uint8 and batch.frames.shape == (len(batch.indices), *SIZE, 3)
        assert stamps(batch.frames) == batch.indices.tolist()


def test_frame_count_is_demuxed_not_read_from_the_container(clips):
    assert container_frame_count(clips["miscounted"]) == N + 100  # the header lies
    assert container_frame_count(clips["mkv"]) == 0  # Matroska has no frame count
    assert Video.open(clips["miscounted"]).n_frames == N
    assert Video.open(clips["mkv"]).n_frames == N
    raw = Video.open(clips["h264"])  # no timestamps at all: frames are counted
    assert raw.n_frames == N and raw.index.counted


def test_lossless_clip_decodes_to_the_source_pixels(clips):
    video = Video.open(clips["lossless"])
    (batch,), _ = read_all(video, [np.arange(N)])
    np.testing.assert_array_equal(batch.frames, clips["frames"])


def test_random_access_equals_sequential_decoding(clips):
    for kind in ("mp4", "mkv", "h264"):
        video = Video.open(clips[kind])
        assert video.index.keyframe.sum() >= (1 if kind == "h264" else 3)  # real seeks for mp4/mkv
        (sequential,), _ = read_all(video, [np.arange(N)])
        wanted = [35, 2, 20, 2, 13, N - 1, 0]
        np.testing.assert_array_equal(video.read(wanted), sequential.frames[wanted])


def test_lossless_random_access_is_exact(clips):
    video = Video.open(clips["lossless"])
    wanted = [33, 5, 24, 25, 12]
    np.testing.assert_array_equal(video.read(wanted), clips["frames"][wanted])


def test_groups_with_gaps_and_backward_jumps(clips):
    video = Video.open(clips["mp4"])
    groups = [[1, 3, 30], [31, 39], [2, 14], [15]]
    got, error = read_all(video, groups)
    assert error is None and [stamps(b.frames) for b in got] == groups


def test_resize_to_the_recipe_resolution(clips):
    video = Video.open(clips["lossless"])
    (down,), _ = read_all(video, [[0, 7]], size=(48, 80))
    expected = [cv2.resize(clips["frames"][i], (80, 48), interpolation=cv2.INTER_AREA) for i in (0, 7)]
    np.testing.assert_array_equal(down.frames, np.stack(expected))
    (up,), _ = read_all(video, [[7]], size=(120, 200))
    np.testing.assert_array_equal(up.frames[0], cv2.resize(clips["frames"][7], (200, 120),
                                                             interpolation=cv2.INTER_LINEAR))
    assert stamps(up.frames) == [7]


def test_index_round_trips_through_arrays(clips, tmp_path):
    video = Video.open(clips["mp4"])
    arrays = video.index.to_arrays()
    assert arrays["pts"].dtype == np.int64 and arrays["keyframe"].dtype == bool
    index = FrameIndex.from_arrays({k: np.asarray(v) for k, v in arrays.items()}, video.index.time_base)
    np.testing.assert_array_equal(index.pts, video.index.pts)
    np.testing.assert_array_equal(index.keyframe, video.index.keyframe)
    again = Video.open(clips["mp4"], index=index)
    assert again.n_frames == N
    np.testing.assert_array_equal(again.read([21, 4]), video.read([21, 4]))
    info = video.info()
    assert info == {"path": str(clips["mp4"]), "n_frames": N, "fps": 24.0,
                    "height": SIZE[0], "width": SIZE[1]}


def test_a_stored_index_with_its_facts_opens_without_probing_the_file(clips, monkeypatch):
    import av

    video = Video.open(clips["mp4"])
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: pytest.fail("the file was probed"))
    again = Video.open(clips["mp4"], index=video.index, facts=video.info())
    assert (again.n_frames, again.fps, again.height, again.width) == (N, 24.0, *SIZE)
    monkeypatch.setattr(av, "open", real_open)
    np.testing.assert_array_equal(again.read([21, 4]), video.read([21, 4]))  # decodes as before
    # facts without a usable size or rate: the file is probed, as without them
    assert Video.open(clips["mp4"], index=video.index, facts={"height": 2, "fps": 0}).width == SIZE[1]


# ------------------------------------------------------------------------ next frames (flow)
def test_next_frames_pair_each_frame_with_the_one_after(clips):
    video = Video.open(clips["mkv"])
    got, error = read_all(video, [np.arange(0, 20), np.arange(20, N)], steps=[1])
    assert error is None
    for batch in got:
        assert batch.partners[1][0].shape == batch.frames.shape and batch.partners[1][1].dtype == np.float32
        expected = [i + 1 if i < N - 1 else i - 1 for i in batch.indices]
        assert stamps(batch.partners[1][0]) == expected
        assert batch.partners[1][1].tolist() == [1.0 if i < N - 1 else -1.0 for i in batch.indices]


def test_next_frames_with_a_stride(clips):
    video = Video.open(clips["mp4"])
    (batch,), _ = read_all(video, [parse_frames(None, 13, N)], steps=[1])
    assert batch.indices.tolist() == [0, 13, 26, 39]
    assert stamps(batch.frames) == [0, 13, 26, 39]
    assert stamps(batch.partners[1][0]) == [1, 14, 27, 38]
    assert batch.partners[1][1].tolist() == [1, 1, 1, -1]


def test_a_single_frame_video_is_its_own_next_frame(tmp_path, clips):
    folder = synth.write_image_folder(clips["frames"][:1], tmp_path / "one")
    (batch,), _ = read_all(Video.open(folder), [[0]], steps=[1])
    np.testing.assert_array_equal(batch.partners[1][0], batch.frames)
    assert batch.partners[1][1].tolist() == [0.0]


@pytest.mark.parametrize("steps", [[3], [-2], [-1, 1, 4]])
def test_frame_steps_pair_each_frame_across_groups_without_decoding_twice(clips, steps, monkeypatch):
    """Frame i pairs with i+k (or i-k with sign -1 where the video has no frame i+k) for every step
    asked for, across group boundaries; the partners a step reaches into the next group are kept,
    so the stream is decoded once from the start (no seek back)."""
    from video_pipeline import video as video_module

    restarts = []
    real = video_module._StreamReader.restart
    monkeypatch.setattr(video_module._StreamReader, "restart", lambda self, k: (restarts.append(k), real(self, k)))
    video = Video.open(clips["mkv"])
    got, error = read_all(video, [np.arange(0, 10), np.arange(10, 20), np.arange(20, N)], steps=steps)
    assert error is None and restarts == [0]
    for batch in got:
        assert sorted(batch.partners) == sorted(steps)
        for k, (partner, sign) in batch.partners.items():
            inside = [0 <= i + k < N for i in batch.indices]
            assert stamps(partner) == [i + k if ok else i - k for i, ok in zip(batch.indices, inside)]
            assert sign.dtype == np.float32 and sign.tolist() == [1.0 if ok else -1.0 for ok in inside]


def test_partner_frames_on_a_video_shorter_than_the_step(clips):
    partner, sign = partner_frames(np.arange(3), 3, 5)  # no frame i+5 nor i-5: the last frame, scaled
    assert partner.tolist() == [2, 2, 2] and np.allclose(sign, [2 / 5, 1 / 5, 0])
    partner, sign = partner_frames(np.arange(3), 3, -5)
    assert partner.tolist() == [0, 0, 0] and np.allclose(sign, [0, 1 / 5, 2 / 5])
    with pytest.raises(ValueError, match="frame step"):
        next(Video.open(clips["mkv"]).batches([[0]], steps=[0]))


# ------------------------------------------------------------------------ --frames / --stride
def test_parse_frames_ranges_lists_and_stride():
    assert parse_frames(None, 1, 5).tolist() == [0, 1, 2, 3, 4]
    assert parse_frames(["2..5"], 1, 10).tolist() == [2, 3, 4]
    assert parse_frames(["7.."], 1, 10).tolist() == [7, 8, 9]
    assert parse_frames(["..3"], 1, 10).tolist() == [0, 1, 2]
    assert parse_frames(["9", "1", "5", "1"], 1, 10).tolist() == [1, 5, 9]
    assert parse_frames(["0..3", "8"], 1, 10).tolist() == [0, 1, 2, 8]
    assert parse_frames(None, 3, 10).tolist() == [0, 3, 6, 9]
    assert parse_frames(["2..9"], 2, 10).tolist() == [2, 4, 6, 8]
    assert parse_frames(["1", "2", "5", "7"], 2, 10).tolist() == [1, 5]
    assert parse_frames(["0..10"], 1, 10).dtype == np.int64


@pytest.mark.parametrize("spec, stride, words", [
    (["12"], 1, ["12", "0..9"]),
    (["5..11"], 1, ["5..11", "0..9"]),
    (["10.."], 1, ["10..", "0..9"]),
    (["4..4"], 1, ["4..4", "no frame"]),
    (["-1"], 1, ["-1", "A..B"]),
    (["1-3"], 1, ["1-3"]),
    (None, 0, ["--stride", "0"]),
])
def test_parse_frames_errors_name_the_value_and_the_range(spec, stride, words):
    with pytest.raises(VreError) as err:
        parse_frames(spec, stride, 10)
    assert all(w in str(err.value) for w in words) and "\n" not in str(err.value)


# ------------------------------------------------------------------------ image folders
def test_image_folder_is_a_video(tmp_path, clips):
    folder = synth.write_image_folder(clips["frames"][:12], tmp_path / "pngs")
    (folder / "notes.txt").write_text("not an image")  # ignored
    video = Video.open(folder)
    assert video.is_folder and video.n_frames == 12 and video.fps == 1.0
    assert (video.height, video.width) == SIZE
    got, error = read_all(video, [[0, 1, 2], [5, 11]], steps=[1])
    assert error is None
    np.testing.assert_array_equal(got[0].frames, clips["frames"][:3])  # PNG is lossless
    assert stamps(got[1].partners[1][0]) == [6, 10]
    np.testing.assert_array_equal(video.read([11, 3], size=(48, 80))[1],
                                  cv2.resize(clips["frames"][3], (80, 48), interpolation=cv2.INTER_AREA))


def test_image_folder_of_real_drone_photos():
    folder = SHARED / "data" / "uav_toledo"
    if not folder.is_dir():
        pytest.skip(f"shared drone photos not found at {folder}")
    video = Video.open(folder)
    names = sorted(p.name for p in folder.glob("*.jpg"))
    assert video.n_frames == len(names) == 47 and (video.height, video.width) == (900, 1200)
    frames = video.read([46, 0], size=(90, 120))
    photo = cv2.cvtColor(cv2.imread(str(folder / names[46])), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(frames[0], cv2.resize(photo, (120, 90), interpolation=cv2.INTER_AREA))


def test_real_drone_video_frames_match_their_photos():
    """uav_toledo.mp4 holds the 47 photos in order: frame i must look like photo i, not i +- 1."""
    clip, folder = SHARED / "data" / "uav_toledo.mp4", SHARED / "data" / "uav_toledo"
    if not clip.is_file() or not folder.is_dir():
        pytest.skip(f"shared drone video not found at {clip}")
    video = Video.open(clip)
    assert video.n_frames == 47 and video.fps == 2.0
    photos = Video.open(folder).read(range(0, 9), size=(72, 96)).astype(np.int16)
    frames = video.read([3, 7], size=(72, 96)).astype(np.int16)
    for frame, i in zip(frames, (3, 7)):
        errors = np.abs(photos - frame).mean(axis=(1, 2, 3))
        assert int(np.argmin(errors)) == i


def test_mixed_size_folder_names_the_first_odd_image(tmp_path, clips):
    folder = synth.write_image_folder(clips["frames"][:4], tmp_path / "mixed")
    big = cv2.resize(clips["frames"][0], (SIZE[1] * 2, SIZE[0] * 2))
    cv2.imwrite(str(folder / "frame_00002b.png"), big)
    cv2.imwrite(str(folder / "frame_00003b.png"), big)
    with pytest.raises(VideoError, match=r"frame_00002b\.png: is 320x192 but frame_00000\.png is 160x96"):
        Video.open(folder)


def test_unreadable_image_and_empty_folder(tmp_path, clips):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoError, match="without images"):
        Video.open(empty)
    folder = synth.write_image_folder(clips["frames"][:3], tmp_path / "bad")
    (folder / "frame_00001.png").write_text("this is text, not a PNG")
    with pytest.raises(VideoError, match=r"frame_00001\.png: unreadable image"):
        Video.open(folder)


def test_image_broken_after_opening_stops_at_its_frame(tmp_path, clips):
    """Frames before the failure come out (each paired with a readable neighbour), then the error."""
    folder = synth.write_image_folder(clips["frames"][:10], tmp_path / "later")
    video = Video.open(folder)
    (folder / "frame_00006.png").write_bytes(b"\x89PNG broken")
    got, error = read_all(video, [np.arange(0, 5), np.arange(5, 10)], steps=[1])
    assert error is not None and error.frame == 6
    assert "frame_00006.png" in str(error) and str(folder) in str(error)
    assert [b.indices.tolist() for b in got] == [[0, 1, 2, 3, 4], [5]]
    assert stamps(got[1].partners[1][0]) == [4] and got[1].partners[1][1].tolist() == [-1.0]


# ------------------------------------------------------------------------ broken inputs
def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        Video.open(tmp_path / "nope.mp4")


def test_text_file_named_mp4(tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_text("definitely not a video\n" * 20)
    with pytest.raises(VideoError, match=r"fake\.mp4: not a video"):
        Video.open(fake)


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        Video.open(tmp_path / "empty.mp4")


def test_audio_only_file_has_no_video_track(tmp_path):
    path = tmp_path / "sound.wav"
    with av.open(str(path), "w") as c:
        stream = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            c.mux(packet)
    with pytest.raises(VideoError, match="no video track"):
        Video.open(path)


def test_mp4_cut_inside_its_header_is_a_video_error(tmp_path, clips):
    data = Path(clips["mp4"]).read_bytes()
    for keep in (data.find(b"moov") + 60, data.find(b"stsz") + 20):  # header cut short
        cut = tmp_path / "head.mp4"
        cut.write_bytes(data[:keep])
        with pytest.raises(VideoError) as err:
            Video.open(cut)
        assert str(err.value).startswith(f"{cut}: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("kind", ["mp4", "avi"])
def test_truncated_clip_yields_frames_before_the_cut_then_fails(tmp_path, clips, kind):
    cut = synth.truncate(clips[kind], tmp_path / f"cut.{kind}", 0.6)
    video = Video.open(cut)
    assert video.index.truncated and 5 < video.n_frames < N
    f = video.n_frames - 1
    got, error = read_all(video, [np.arange(0, 16), np.arange(16, video.n_frames)], steps=[1])
    assert error is not None and error.frame == f
    assert f"cut.{kind}" in str(error) and f"frame {f}" in str(error) and "\n" not in str(error)
    indices = np.concatenate([b.indices for b in got])
    assert indices.tolist() == list(range(f))  # every frame before the cut
    for batch in got:
        assert stamps(batch.frames) == batch.indices.tolist()
    assert got[-1].partners[1][1][-1] == -1  # the last readable frame pairs with the one before
    # a selection that stays before the cut reads without error
    assert stamps(video.read([0, f - 1])) == [0, f - 1]


@pytest.mark.parametrize("kind", ["mp4", "mkv"])
def test_cut_that_loses_b_frames_keeps_indices_exact(tmp_path, clips, kind):
    """Cut right after a reference frame that is shown after frames stored later: those frames
    are gone, and the reference frame must not take their indices."""
    with av.open(str(clips[kind])) as c:
        packets = [(p.pts, p.pos, p.size) for p in c.demux(video=0) if p.size]
    j = next(j for j in range(N // 2, N - 1) if packets[j][0] > packets[j + 1][0])
    data = Path(clips[kind]).read_bytes()
    path = tmp_path / f"bcut.{kind}"
    path.write_bytes(data[: packets[j + 1][1]])  # up to the next packet: packet j stays whole
    video = Video.open(path)
    assert video.index.truncated
    got, error = read_all(video, [np.arange(video.n_frames)])
    assert error is not None and error.frame == video.n_frames - 1
    (batch,) = got
    assert stamps(batch.frames) == list(range(video.n_frames - 1))
    every = sorted(p for p, _, _ in packets)
    kept = sorted(p for p, _, _ in packets[: j + 1])
    assert video.n_frames - 1 == next(i for i, (a, b) in enumerate(zip(kept, every)) if a != b)


# ------------------------------------------------------------------------ the decoding thread
def decoding_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("vre-decode")]


def test_closing_early_stops_the_thread(clips):
    video = Video.open(clips["mp4"])
    gen = video.batches([[i] for i in range(N)], queue_size=1)
    first = next(gen)
    assert stamps(first.frames) == [0] and len(decoding_threads()) == 1
    gen.close()
    assert decoding_threads() == []
    for batch in video.batches([[i] for i in range(N)], size=(48, 80)):
        break  # a for loop left early, the generator then dropped
    del batch
    import gc

    gc.collect()
    assert decoding_threads() == []


def test_bad_groups_are_refused(clips):
    video = Video.open(clips["mp4"])
    with pytest.raises(ValueError, match="increasing"):
        next(video.batches([[3, 2]]))
    with pytest.raises(ValueError, match="0..39"):
        next(video.batches([[38, 40]]))
