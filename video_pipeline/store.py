"""VideoStore: one zarr v3 group per video, one array per modality, shard-level progress flags.

Layout (design contract):
    <video>.zarr/
      attrs["video_pipeline"]   {schema_version, version, recipe, recipe_sha256, video, created}
      <name>                    [T, H, W, C], dimension_names (frame, y, x, <name>_channel), chunk =
                                1 frame, shard = shard_frames frames, Blosc zstd or the recipe's codec
                                (`array_codecs`); attrs: provenance.
                                One channel dimension per modality, so `xarray.open_zarr(store)`
                                opens the whole store as one Dataset (stores written before name
                                it `channel`; nothing here reads dimension names, so they still open)
      _progress/<name>          uint8 [n_shards]: 1 once that shard is fully computed and durable
      _frames/<name>            uint8 [T]: 1 once that frame is durable (frame-subset runs fill
                                single frames; a shard's flag is set when all its frames are done)
      _index/pts, _index/keyframe   the demuxed frame index of the video (int64, bool [T]), plus
                                    _index/counted, _index/truncated (bool [1], see video.FrameIndex)
      _index/frame_number       int64 [T], only in imported sparse stores: the original frame
                                number of each position (see `VideoStore.frame_numbers`)

Durability order for a shard: data written (zarr writes each object to a temporary file and renames
it), then its `_progress` flag (if the shard is complete), then its `_frames` entries, which runs
plan from. A killed run can only leave frames whose `_frames` entry is 0: they are recomputed, and
rewriting them sets every flag again. (Flags in the other order would leave a shard whose frames
are all done, so no run writes it again, and whose `_progress` flag stays 0.) Both flags are only
ever set over written data. Temporary `*.partial` files left by a kill are removed on open.
Every writer owns whole shards, and every flag array has one chunk per shard, so concurrent writers
never touch the same object.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import shutil
import sys
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from numcodecs import blosc
from zarr.codecs import BloscCodec

from video_pipeline.codecs import DEFAULT as DEFAULT_CODEC
from video_pipeline.codecs import CodecSpec
from video_pipeline.errors import StoreError

SCHEMA_VERSION = 1
META_KEY = "video_pipeline"
PRIVATE_GROUPS = ("_progress", "_frames", "_index")
# zarr's LocalStore writes each object to `<key without suffix>.<uuid4 hex>.partial`, then renames it
TEMP_FILE = re.compile(r"\.[0-9a-f]{32}\.partial$")
FLAG_GROUPS = ("_progress", "_frames")  # one flag array per modality in each
FRAME_NUMBER = "_index/frame_number"


def array_codecs(codec: CodecSpec | None = None, kind: str | None = None) -> dict:
    """The codec chain of one modality array, as `create_array` keyword arguments
    {serializer, compressors}: the one place every array's chain is built.

    Blosc zstd level 1 by default: camera pixels are high-entropy (a 960x540 drone frame shrinks
    only ~12% at any level) while levels >= 3 cost 3x the time; labels and masks compress >20x
    already at level 1. Blosc (zstd or lz4) uses byte shuffle, bit shuffle for binary maps (0/1 in
    a byte: bit planes compress to half the size, twice as fast). `jpegxl` is an array -> bytes
    codec (`codecs.JpegXlCodec`), lossless, for uint8 images.
    """
    codec = codec or DEFAULT_CODEC
    if codec.name == "jpegxl":
        from video_pipeline.codecs import JpegXlCodec

        return {"serializer": JpegXlCodec(effort=codec.effort), "compressors": ()}
    shuffle = "bitshuffle" if kind == "binary" else "shuffle"
    return {"serializer": "auto", "compressors": (BloscCodec(cname=codec.name, clevel=codec.level, shuffle=shuffle),)}


def dimension_names(name: str) -> tuple[str, str, str, str]:
    """zarr dimension names of modality `name`: its channel axis is its own (`<name>_channel`), since
    modalities differ in channel count and xarray requires one length per dimension name."""
    return ("frame", "y", "x", f"{name}_channel")


@dataclass(frozen=True)
class ArraySpec:
    """Shape and provenance of one modality array: [n_frames, height, width, channels]."""

    name: str
    channels: int
    dtype: str
    attrs: Mapping
    codec: CodecSpec | None = None  # None: the default (Blosc zstd level 1)

    @property
    def fill_value(self):
        return 255 if self.dtype == "uint8" else float("nan")


def shard_bounds(shard: int, shard_frames: int, n_frames: int) -> tuple[int, int]:
    """[start, stop) frame range of shard number `shard`."""
    start = shard * shard_frames
    return start, min(start + shard_frames, n_frames)


def shard_groups(frames: np.ndarray, shard_frames: int) -> dict[int, np.ndarray]:
    """Split sorted frame indices int64 [K] into {shard number: indices in that shard}."""
    if len(frames) == 0:
        return {}
    shards = frames // shard_frames
    cuts = np.flatnonzero(np.diff(shards)) + 1
    return {int(chunk[0] // shard_frames): chunk for chunk in np.split(frames, cuts)}


def contiguous_runs(indices: np.ndarray) -> list[tuple[int, int, int]]:
    """Sorted indices [K] -> [(position in indices, start, stop)] of consecutive runs."""
    cuts = np.flatnonzero(np.diff(indices) != 1) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(indices)]])
    return [(int(a), int(indices[a]), int(indices[b - 1]) + 1) for a, b in zip(starts, stops)]


def store_name(path: str | Path) -> str:
    """The video name of a store: its folder name without `.zarr`."""
    name = Path(path).name
    return name[:-5] if name.endswith(".zarr") else name


@contextmanager
def writing(path: Path, what: str):
    """Turn an OSError while writing `what` (a full disk, a read-only or vanished folder) into a
    StoreError naming the store; what was written before stays valid, so a rerun resumes."""
    try:
        yield
    except OSError as err:
        raise StoreError(f"{path}: cannot write {what} ({err.strerror or err}); free space or choose "
                         f"another -o, then rerun to resume") from None


class VideoStore:
    """A store of one video: created or opened with `VideoStore.open`.

    Writing API used by the runner: `ensure_array`, `write_frames`, `mark_done`, `record_skips`;
    `write_array` writes a whole array in one call, `remove` deletes one with its flags.
    Reading API: `names`, `name in store`, `array`, `read`, `reader`, `done_frames`, `done_shards`,
    `frame_numbers`, `meta`. No other module touches the zarr group: the layout lives here.
    """

    def __init__(self, path: Path, group: zarr.Group):
        self.path = path
        self.group = group
        self._writers: dict[str, zarr.Array] = {}

    # ----------------------------------------------------------------- open / create
    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> "VideoStore":
        """Open an existing store ('r' or 'r+'), or create one ('a': open or create, 'w': replace)."""
        path = Path(path)
        if mode in ("r", "r+"):
            if not (path / "zarr.json").is_file():
                raise StoreError(f"{path}: not a video-pipeline store (no zarr.json); "
                                 f"create it with `vre run RECIPE VIDEO -o {path}`")
        else:
            refuse_foreign(path)
        if mode == "w" and path.exists():
            shutil.rmtree(path)
        if mode != "r":
            try:
                path.mkdir(parents=True, exist_ok=True)
                probe = path / f".vre-write-test-{os.getpid()}"  # concurrent openers: one each
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as err:
                raise StoreError(f"{path}: output is not writable ({err.strerror}); "
                                 f"choose another location with -o") from None
            if mode in ("a", "w"):  # the opener owns the store (lock held): leftovers are stale
                remove_partials(path)
        try:
            group = zarr.open_group(str(path), mode="r" if mode == "r" else "a", zarr_format=3)
        except Exception as err:
            raise StoreError(f"{path}: cannot open as a zarr v3 group ({type(err).__name__}: {err})") from None
        if mode != "r" and META_KEY not in group.attrs and any(True for _ in group.array_keys()):
            raise StoreError(f"{path}: is a zarr group not written by video-pipeline; "
                             f"refusing to write into it (choose another -o)")
        return cls(path, group)

    # ----------------------------------------------------------------- metadata
    @property
    def meta(self) -> dict:
        """The root attrs["video_pipeline"] dict ({} for a new store)."""
        return dict(self.group.attrs.get(META_KEY, {}))

    def set_meta(self, meta: dict) -> None:
        """Replace attrs["video_pipeline"] (one small atomic JSON write)."""
        with writing(self.path, "the store metadata"):
            self.group.attrs[META_KEY] = json.loads(json.dumps(meta))

    def init_meta(self, recipe: dict, recipe_sha256: str, video: dict, version: str,
                  shard_frames: int, resolution: tuple[int, int]) -> None:
        """Write the root metadata of a new store (or refresh the recipe of an existing one)."""
        meta = self.meta
        meta.update({"schema_version": SCHEMA_VERSION, "version": version, "recipe": recipe,
                     "recipe_sha256": recipe_sha256, "video": video,
                     "shard_frames": int(shard_frames), "resolution": list(resolution)})
        meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        self.set_meta(meta)

    @property
    def n_frames(self) -> int:
        return int(self.meta["video"]["n_frames"])

    @property
    def shard_frames(self) -> int:
        return int(self.meta["shard_frames"])

    @property
    def n_shards(self) -> int:
        return math.ceil(self.n_frames / self.shard_frames)

    @property
    def names(self) -> list[str]:
        """Modality arrays in the store (recipe order when known, else sorted)."""
        present = {k for k in self.group.array_keys()}
        order = list(self.meta.get("recipe", {}).get("experts", {}))
        return [n for n in order if n in present] + sorted(present - set(order))

    def __contains__(self, name: str) -> bool:
        """Whether modality array `name` exists."""
        return name in self.group and name.split("/")[0] not in PRIVATE_GROUPS

    def array(self, name: str) -> zarr.Array:
        try:
            return self.group[name]
        except KeyError:
            raise StoreError(f"{self.path}: has no modality '{name}' (it has: "
                             f"{', '.join(self.names) or 'none'})") from None

    # ----------------------------------------------------------------- frame index
    def save_index(self, arrays: Mapping[str, np.ndarray], time_base: float) -> None:
        """Store the demuxed frame index (`_index/<key>` arrays) and the file facts it belongs to."""
        with writing(self.path, "the frame index"):
            for key, values in arrays.items():
                self.group.create_array(f"_index/{key}", data=np.asarray(values), overwrite=True)
            self.group.require_group("_index").attrs["time_base"] = float(time_base)

    def load_index(self) -> tuple[dict[str, np.ndarray], float] | None:
        """The stored frame index, or None (also for one a killed run left half written: `save_index`
        writes `time_base` last, after every array)."""
        if "_index" not in self.group:
            return None
        grp = self.group["_index"]
        if "time_base" not in grp.attrs:
            return None
        arrays = {k: grp[k][...] for k in grp.array_keys()}
        return arrays, float(grp.attrs.get("time_base", 0.0))

    def frame_numbers(self) -> np.ndarray:
        """int64 [T]: the frame number of each stored position (the positions themselves, unless the
        store keeps a frame-number table `_index/frame_number`, as imported sparse stores do)."""
        if FRAME_NUMBER in self.group:
            return self.group[FRAME_NUMBER][:].astype(np.int64)
        return np.arange(self.n_frames, dtype=np.int64)

    def set_frame_numbers(self, numbers: np.ndarray) -> None:
        """Store the original frame number of each position, int64 [T] (imported sparse stores)."""
        with writing(self.path, "the frame numbers"):
            self.group.create_array(FRAME_NUMBER, data=np.asarray(numbers, np.int64), overwrite=True)

    # ----------------------------------------------------------------- arrays
    def ensure_array(self, spec: ArraySpec, height: int, width: int) -> zarr.Array:
        """Create modality array `spec.name` (and its flags) if missing; return it.

        An existing array with another shape/dtype is a StoreError (the recipe check should have
        caught it before). Attrs are refreshed (provenance of the latest run).
        """
        n, sf = self.n_frames, self.shard_frames
        shape = (n, height, width, spec.channels)
        if spec.name in self.group:
            arr = self.group[spec.name]
            if tuple(arr.shape) != shape or str(arr.dtype) != spec.dtype:
                raise StoreError(f"{self.path}/{spec.name}: stored as {tuple(arr.shape)} {arr.dtype}, "
                                 f"the recipe now makes {shape} {spec.dtype}; use --overwrite or another -o")
        with writing(self.path, f"modality '{spec.name}'"):
            if spec.name not in self.group:
                arr = self.group.create_array(
                    spec.name, shape=shape, dtype=spec.dtype, chunks=(1, height, width, spec.channels),
                    shards=(sf, height, width, spec.channels),
                    **array_codecs(spec.codec, spec.attrs.get("kind")),
                    fill_value=spec.fill_value, dimension_names=dimension_names(spec.name))
            arr.attrs.put(json.loads(json.dumps(dict(spec.attrs))))
            for flags, length, chunk in (("_progress", self.n_shards, 1), ("_frames", n, sf)):
                key = f"{flags}/{spec.name}"
                if key not in self.group:
                    self.group.create_array(key, shape=(length,), dtype="uint8", chunks=(chunk,),
                                            fill_value=0, compressors=None)
        return arr

    def remove(self, name: str) -> None:
        """Delete modality array `name` and its flags (nothing if it is absent), flags first: a kill
        in between leaves an array no flag calls done, which a run recomputes."""
        with writing(self.path, f"modality '{name}'"):
            for key in (*(f"{flags}/{name}" for flags in FLAG_GROUPS), name):
                if key in self.group:
                    del self.group[key]
        self._writers.pop(name, None)

    def write_array(self, spec: ArraySpec, data: np.ndarray, frames: np.ndarray | None = None) -> None:
        """Create array `spec.name` if missing and write data [K,H,W,C] at sorted frame indices
        `frames` int64 [K] (default: every frame, K = T), a shard at a time, flagging them done."""
        frames = np.arange(self.n_frames) if frames is None else np.asarray(frames, np.int64)
        self.ensure_array(spec, *data.shape[1:3])
        row = 0
        for idx in shard_groups(frames, self.shard_frames).values():
            self.write_frames(spec.name, idx, data[row:row + len(idx)])
            self.mark_done(spec.name, idx)
            row += len(idx)

    def write_frames(self, name: str, indices: np.ndarray, data: np.ndarray) -> None:
        """Write data [K,H,W,C] at sorted frame `indices` [K] (all in one shard)."""
        arr = self._writers.get(name)
        if arr is None:
            # every computed chunk is data, even one equal to the fill value: skip zarr's
            # per-chunk "is it empty?" comparison, which costs about as much as compressing
            arr = self._writers[name] = self.group[name].with_config({"write_empty_chunks": True})
        for pos, start, stop in contiguous_runs(indices):
            arr[start:stop] = data[pos:pos + stop - start]

    def mark_done(self, name: str, indices: np.ndarray) -> None:
        """Flag frames `indices` (all in one shard) durable; set the shard flag if it is complete."""
        frames = self.group[f"_frames/{name}"]
        shard = int(indices[0]) // self.shard_frames
        start, stop = shard_bounds(shard, self.shard_frames, self.n_frames)
        done = frames[start:stop]
        done[indices - start] = 1
        if done.all():
            self.group[f"_progress/{name}"][shard] = 1
        frames[start:stop] = done

    def clear(self, name: str, indices: np.ndarray | None = None) -> None:
        """Forget frames (all when `indices` is None) of `name` so they are recomputed (--overwrite)."""
        if name not in self.group:
            return
        if indices is None:
            with writing(self.path, f"the flags of '{name}'"):
                for flags in ("_progress", "_frames"):  # the shard flags first, as in `remove`
                    if f"{flags}/{name}" in self.group:
                        self.group[f"{flags}/{name}"][:] = 0
            return
        frames = self.group[f"_frames/{name}"]
        done = frames[:]
        done[indices] = 0
        frames[:] = done
        shards = np.unique(indices // self.shard_frames)
        progress = self.group[f"_progress/{name}"]
        for s in shards:
            progress[int(s)] = 0

    def record_skips(self, skipped: Mapping[str, str]) -> None:
        """Record `--on-error skip` reasons {expert name: why} in the root metadata and on each
        skipped expert's array (when it exists)."""
        if not skipped:
            return
        meta = self.meta
        meta.setdefault("skipped", {}).update(skipped)
        self.set_meta(meta)
        for name, why in skipped.items():
            if name in self:
                with writing(self.path, f"modality '{name}'"):
                    self.array(name).attrs["skipped"] = why

    def done_frames(self, name: str) -> np.ndarray:
        """bool [T]: frames of `name` that are durable (all False if the array does not exist)."""
        key = f"_frames/{name}"
        if key not in self.group:
            return np.zeros(self.n_frames, dtype=bool)
        return self.group[key][:].astype(bool)

    def done_shards(self, name: str) -> np.ndarray:
        """bool [n_shards]: shards of `name` marked complete."""
        key = f"_progress/{name}"
        if key not in self.group:
            return np.zeros(self.n_shards, dtype=bool)
        return self.group[key][:].astype(bool)

    def read(self, name: str, indices: np.ndarray) -> np.ndarray:
        """Read frames `indices` (sorted) of `name`: [K,H,W,C]."""
        arr = self.group[name]
        parts = [arr[start:stop] for _, start, stop in contiguous_runs(indices)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def reader(self, name: str) -> "FrameReader":
        """A fast reader of single frames of `name` (see FrameReader)."""
        if name not in self:
            self.array(name)  # the StoreError naming the modalities
        return FrameReader(self.path, name)

    def summary(self) -> dict:
        """JSON-safe description for `vre inspect`: modalities, shapes, dtypes, completion, provenance."""
        meta = self.meta
        out = {"path": str(self.path), "video": meta.get("video"), "version": meta.get("version"),
               "created": meta.get("created"), "recipe_sha256": meta.get("recipe_sha256"),
               "shard_frames": meta.get("shard_frames"), "modalities": {}}
        for name in self.names:
            arr = self.group[name]
            done = self.done_frames(name)
            attrs = dict(arr.attrs)
            out["modalities"][name] = {
                "shape": list(arr.shape), "dtype": str(arr.dtype), "type": attrs.get("type"),
                "kind": attrs.get("kind"), "frames_done": int(done.sum()), "n_frames": int(len(done)),
                "shards_done": int(self.done_shards(name).sum()), "n_shards": self.n_shards,
                "deps": attrs.get("deps", []), "weights": attrs.get("weights"),
                "params": attrs.get("params", {}), "skipped": attrs.get("skipped"),
                "bytes": dir_size(self.path / name)}
        return out


_EMPTY = 2 ** 64 - 1  # offset/size of a chunk that was never written (zarr sharding spec)


class FrameReader:
    """Reads one frame [H,W,C] of a modality array, in its stored dtype, into a reused buffer.

    VideoStore writes every array in one layout: one chunk per frame inside shards of `shard_frames`
    frames, Blosc-compressed. Through zarr's generic path a single-frame read costs several
    milliseconds of Python, async hand-offs and copies; here the frame's chunk is located with the
    shard index (zarr v3 sharding: little-endian uint64 (offset, size) pairs at the end of the shard
    file, then a crc32c) and decoded straight into the buffer. Arrays in any other layout, or on a
    big-endian machine, are read through zarr.
    """

    def __init__(self, store_path: Path, name: str):
        self.root = store_path / name
        self.array = zarr.open_array(str(self.root), mode="r", zarr_format=3)
        shape = tuple(self.array.shape)
        self.buffer = np.empty(shape[1:], dtype=self.array.dtype)
        self.fill = self.array.fill_value
        self.shard_frames = self._direct_layout(json.loads((self.root / "zarr.json").read_text()), shape)
        self.indexes: dict[tuple, np.ndarray] = {}

    @staticmethod
    def _direct_layout(meta: dict, shape: tuple) -> int | None:
        """Frames per shard if the array has store.py's layout (readable directly), else None."""
        try:
            (codec,) = meta["codecs"]
            conf = codec["configuration"]
            inner = [c["name"] for c in conf["codecs"]]
            index = [c["name"] for c in conf["index_codecs"]]
            endian = {c.get("configuration", {}).get("endian", "little")
                      for c in conf["codecs"] + conf["index_codecs"] if c["name"] == "bytes"}
            shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
            ok = (len(shape) == 4 and codec["name"] == "sharding_indexed" and inner == ["bytes", "blosc"]
                  and index == ["bytes", "crc32c"] and endian == {"little"}
                  and conf.get("index_location", "end") == "end"
                  and list(conf["chunk_shape"]) == [1, *shape[1:]] and list(shard[1:]) == list(shape[1:])
                  and meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
                  and meta["data_type"] in ("uint8", "float16", "float32") and sys.byteorder == "little")
        except (KeyError, TypeError, ValueError):
            return None
        return int(shard[0]) if ok else None

    def read(self, position: int, fresh: bool = False) -> np.ndarray:
        """Frame at `position` [H,W,C]: a new array if `fresh`, else the reader's buffer (which the
        next read overwrites)."""
        out = np.empty_like(self.buffer) if fresh else self.buffer
        if self.shard_frames is None:
            out[...] = self.array[position]
            return out
        shard, k = divmod(position, self.shard_frames)
        path = self.root / "c" / str(shard) / "0" / "0" / "0"  # shards span whole frames
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            out.fill(self.fill)
            return out
        try:
            st = os.fstat(fd)
            key = (shard, st.st_size, st.st_mtime_ns)  # a rewritten shard has a new index
            index = self.indexes.get(key)
            if index is None:
                nbytes = self.shard_frames * 16
                raw = os.pread(fd, nbytes, st.st_size - nbytes - 4)
                index = np.frombuffer(raw, dtype="<u8").reshape(self.shard_frames, 2)
                if len(self.indexes) > 64:
                    self.indexes.clear()
                self.indexes[key] = index
            offset, size = int(index[k, 0]), int(index[k, 1])
            if offset == _EMPTY:
                out.fill(self.fill)
                return out
            chunk = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        blosc.decompress(chunk, out)
        return out


def dir_size(path: Path) -> int:
    """Total bytes of the files under `path` (a store may be written meanwhile: a writer's temporary
    file can be renamed away between listing and measuring it)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except FileNotFoundError:
                pass
    return total


def remove_partials(path: Path) -> int:
    """Delete the temporary files (`<name>.<32 hex>.partial`, see TEMP_FILE) a killed zarr writer
    left in store `path`; returns how many. Call only on a folder `store_owner` calls ours: nothing
    else is ever deleted."""
    removed = 0
    for root, _, files in os.walk(path):
        for f in files:
            if TEMP_FILE.search(f):
                try:
                    os.unlink(os.path.join(root, f))
                except FileNotFoundError:
                    continue
                removed += 1
    return removed


def store_owner(path: Path) -> str:
    """Who owns folder `path`: 'none' (absent, empty, or only a killed first write's temporaries),
    'ours' (a store of this package, or one killed before its metadata was written), or 'foreign'
    (anything else: a user's folder, a file, another program's zarr group)."""
    if not path.exists():
        return "none"
    if not path.is_dir():
        return "foreign"
    try:
        entries = [e.name for e in os.scandir(path)]
    except OSError:
        return "foreign"
    rest = [e for e in entries if not TEMP_FILE.search(e) and not e.startswith(".vre-write-test-")]
    if not rest:
        return "none"
    if "zarr.json" not in rest:
        return "foreign"
    try:
        node = json.loads((path / "zarr.json").read_bytes())
    except (OSError, ValueError):
        node = None
    if not isinstance(node, dict) or node.get("node_type") != "group":
        return "foreign"
    attrs = node.get("attributes")
    if isinstance(attrs, dict) and META_KEY in attrs:
        return "ours"
    # a run killed after creating the group and before writing its metadata leaves just zarr.json
    return "ours" if rest == ["zarr.json"] else "foreign"


def refuse_foreign(path: Path) -> None:
    """StoreError unless `path` may become or stays a store of ours: a write (or a cleanup of
    temporaries) never happens in a folder this package did not create."""
    if store_owner(path) != "foreign":
        return
    if not path.is_dir():
        raise StoreError(f"{path}: exists and is not a folder; choose another -o for the store")
    try:
        sample = sorted(e.name for e in os.scandir(path))[:3]
    except OSError:
        sample = []
    raise StoreError(f"{path}: exists and is not a store written by vre (it holds "
                     f"{', '.join(repr(e) for e in sample)}{', ...' if len(sample) == 3 else ''}); "
                     f"vre never writes into a folder it did not create: choose another -o")
