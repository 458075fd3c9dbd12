"""VideoStore: one zarr v3 group per video, one array per modality, shard-level progress flags.

Layout (design contract):
    <video>.zarr/
      attrs["video_pipeline"]   {schema_version, version, recipe, recipe_sha256, video, created}
      <name>                    [T, H, W, C], dimension_names (frame, y, x, <name>_channel), chunk =
                                1 frame, shard = shard_frames frames, the recipe's codec (default
                                Blosc zstd for label maps and masks, lz4 otherwise: `array_codecs`);
                                attrs: provenance.
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
      _npz/<name>               int64 [T, S, 10], imported stores only: the zip facts of each frame's
                                file in each of S split folders and its subfolder (see
                                importer.FACTS_WIDTH; -1: none)

Durability order for a shard: data written (zarr writes each object to a temporary file and renames
it), then its `_progress` flag (if the shard is complete), then its `_frames` entries, which runs
plan from. A killed run can only leave frames whose `_frames` entry is 0: they are recomputed, and
rewriting them sets every flag again. (Flags in the other order would leave a shard whose frames
are all done, so no run writes it again, and whose `_progress` flag stays 0.) Both flags are only
ever set over written data. zarr's temporary files left by a kill (`<name>.<32 hex>.partial`) are
removed on open, only in a folder that is a store of ours (`store_owner`). Every chunk carries a
crc32c; `check_shards` finds damaged shards cheaply (every run) or by reading them (`vre verify`).
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
import threading
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from video_pipeline.codecs import CodecSpec
from video_pipeline.codecs import resolve as resolve_codec
from video_pipeline.errors import StoreError

SCHEMA_VERSION = 1
META_KEY = "video_pipeline"
PRIVATE_GROUPS = ("_progress", "_frames", "_index", "_npz")
# zarr's LocalStore writes each object to `<key without suffix>.<uuid4 hex>.partial`, then renames it
TEMP_FILE = re.compile(r"\.[0-9a-f]{32}\.partial$")
FLAG_GROUPS = ("_progress", "_frames")  # one flag array per modality in each
FRAME_NUMBER = "_index/frame_number"


def load_zarr():
    """zarr, imported on first use, with this package's JPEG-XL codec registered. A store's
    metadata, node listing, flags and frame index are read from their files (`VideoStore`), so a
    rerun that finds nothing to do never imports zarr (~0.4 s of a 2-core machine's start-up)."""
    import zarr

    from video_pipeline import jpegxl  # noqa: F401  (registers the codec with zarr)

    return zarr


def array_codecs(codec: CodecSpec | None = None, kind: str | None = None, dtype: str | None = None) -> dict:
    """The codec chain of one modality array, as `create_array` keyword arguments
    {serializer, compressors}: the one place every array's chain is built.

    `codec` "auto" (the default) resolves per kind and dtype (`codecs.resolve`): Blosc zstd level 1
    for uint8 label maps and masks, Blosc lz4 otherwise. Blosc (zstd or lz4) uses byte shuffle, bit shuffle
    for binary maps (0/1 in a byte: bit planes compress to half the size, twice as fast). `jpegxl`
    is an array -> bytes codec (`jpegxl.JpegXlCodec`), lossless, for uint8 images.

    Every chain ends with zarr v3's standard `crc32c` codec (read by every zarr v3 reader): each
    stored chunk carries a checksum, so a damaged chunk fails its read instead of decoding to wrong
    values (`VideoStore.check_shards`, `vre verify`). Keep it the last bytes-to-bytes codec.
    """
    from zarr.codecs import BloscCodec, Crc32cCodec

    codec = resolve_codec(codec, kind, dtype)
    if codec.name == "jpegxl":
        from video_pipeline.jpegxl import JpegXlCodec

        return {"serializer": JpegXlCodec(effort=codec.effort), "compressors": (Crc32cCodec(),)}
    shuffle = "bitshuffle" if kind == "binary" else "shuffle"
    return {"serializer": "auto", "compressors": (BloscCodec(cname=codec.name, clevel=codec.level, shuffle=shuffle),
                                                  Crc32cCodec())}


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
    codec: CodecSpec | None = None  # None: the default ("auto": zstd 1 for labels/masks, else lz4)

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

    The zarr group is opened on first use (`group`). Metadata and the node listing are read from
    the nodes' zarr.json files, and flags and the frame index (1-D arrays stored raw, see
    `plain_1d`) from their chunk files: what a rerun needs to find that nothing is left to do.
    """

    def __init__(self, path: Path, attrs: dict, mode: str = "r", group=None):
        self.path = path
        self.mode = mode
        self._attrs = attrs  # the root group's attributes, as zarr.json holds them
        self._group = group
        self._writers: dict = {}
        self._shard_io: dict = {}
        self._layouts: dict[str, bool] = {}  # `_plain_flags` answers
        self.repaired: list[str] = []  # damaged nodes `open` removed (mode 'a'), for the run to say

    @property
    def group(self):
        """The zarr group of the store (zarr.Group), opened on first use."""
        if self._group is None:
            try:
                self._group = load_zarr().open_group(str(self.path), mode="r" if self.mode == "r" else "a",
                                                 zarr_format=3)
            except Exception as err:
                raise StoreError(f"{self.path}: cannot open as a zarr v3 group ({type(err).__name__}: "
                                 f"{str(err)[:200]})") from None
        return self._group

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
        if (path / "zarr.json").is_file():
            store = cls(path, root_attributes(path), mode)
        else:  # a new store ('a' or 'w'): zarr creates the group
            store = cls(path, {}, mode)
            store.group  # noqa: B018  (creates it, or says why it cannot)
        attrs = store._attrs
        why = meta_problem(attrs.get(META_KEY)) if META_KEY in attrs else None
        if why:
            raise StoreError(f"{path}/zarr.json: damaged store metadata ({why}); the store cannot be "
                             f"read or resumed: make it again with `vre run` into another -o")
        damaged = damaged_nodes(path)
        if damaged and mode in ("r", "r+"):
            key, why = damaged[0]
            raise StoreError(f"{path}/{key}/zarr.json: damaged ({why}); `vre run` with the store's recipe "
                             f"rebuilds it")
        for key, _ in damaged:  # ours and unreadable: drop it (flags first), the run recomputes it
            with writing(path, f"'{key}'"):
                for flags in FLAG_GROUPS if "/" not in key and key not in PRIVATE_GROUPS else ():
                    shutil.rmtree(path / flags / key, ignore_errors=True)
                shutil.rmtree(path / key, ignore_errors=True)
        if mode != "r" and META_KEY not in attrs and store._children("", "array"):
            raise StoreError(f"{path}: is a zarr group not written by video-pipeline; "
                             f"refusing to write into it (choose another -o)")
        store.repaired = [f"{key} ({why}): removed, to be recomputed" for key, why in damaged]
        return store

    # ----------------------------------------------------------------- metadata
    @property
    def meta(self) -> dict:
        """The root attrs["video_pipeline"] dict ({} for a new store)."""
        return dict(self._attrs.get(META_KEY, {}))

    def set_meta(self, meta: dict) -> None:
        """Replace attrs["video_pipeline"] (one small atomic JSON write)."""
        value = json.loads(json.dumps(meta))
        with writing(self.path, "the store metadata"):
            self.group.attrs[META_KEY] = value
        self._attrs = {**self._attrs, META_KEY: value}

    def init_meta(self, recipe: dict, recipe_sha256: str, video: dict, version: str,
                  shard_frames: int, resolution: tuple[int, int]) -> None:
        """Write the root metadata of a new store (or refresh the recipe of an existing one); a store
        whose metadata already says all this is not written."""
        meta = self.meta
        meta.update({"schema_version": SCHEMA_VERSION, "version": version, "recipe": recipe,
                     "recipe_sha256": recipe_sha256, "video": video,
                     "shard_frames": int(shard_frames), "resolution": list(resolution)})
        meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        if json.loads(json.dumps(meta)) != self.meta:
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
        present = set(self._children("", "array"))
        order = list(self.meta.get("recipe", {}).get("experts", {}))
        return [n for n in order if n in present] + sorted(present - set(order))

    def __contains__(self, name: str) -> bool:
        """Whether modality array `name` exists."""
        return name.split("/")[0] not in PRIVATE_GROUPS and self._node(name) is not None

    def _node(self, key: str) -> dict | None:
        """The zarr.json of node `key` ("" for the root), or None where there is none (or it is
        unreadable: `open` removed or refused such nodes)."""
        try:
            node = json.loads((self.path / key / "zarr.json").read_bytes())
        except (OSError, ValueError):
            return None
        return node if isinstance(node, dict) and node.get("node_type") in ("array", "group") else None

    def _children(self, key: str, node_type: str) -> list[str]:
        """Sorted names of the child nodes of `key` ("" for the root) of `node_type`."""
        try:
            entries = [e.name for e in os.scandir(self.path / key) if e.is_dir()]
        except OSError:
            return []
        return sorted(n for n in entries if (self._node(f"{key}/{n}" if key else n) or {}).get("node_type") == node_type)

    def _read_1d(self, key: str, damaged_reads_as_fill: bool = False) -> np.ndarray:
        """All of 1-D array `key`: from its chunk files when it is stored raw (`plain_1d`: flags,
        the frame index), else through zarr. A chunk file of the wrong length is a StoreError, or
        reads as the fill value with `damaged_reads_as_fill` (flags: nothing done there, so a run
        recomputes those frames and writes the chunk again)."""
        node = self._node(key)
        dtype = plain_1d(node) if node else None
        if dtype is None:
            return self.group[key][...]
        (n,), (chunk,) = node["shape"], node["chunk_grid"]["configuration"]["chunk_shape"]
        out = np.full(math.ceil(n / chunk) * chunk, node.get("fill_value") or 0, dtype=dtype)
        for c in range(math.ceil(n / chunk)):
            try:
                data = (self.path / key / "c" / str(c)).read_bytes()
            except FileNotFoundError:
                continue  # never written: the fill value
            if len(data) != chunk * dtype.itemsize:
                if damaged_reads_as_fill:
                    continue
                raise StoreError(f"{self.path}/{key}/c/{c}: damaged ({len(data)} bytes, a chunk holds "
                                 f"{chunk * dtype.itemsize}); `vre run` on the store rebuilds it")
            out[c * chunk:(c + 1) * chunk] = np.frombuffer(data, dtype)
        return out[:n]

    def array(self, name: str):
        try:
            return self.group[name]
        except KeyError:
            raise StoreError(f"{self.path}: has no modality '{name}' (it has: "
                             f"{', '.join(self.names) or 'none'})") from None

    # ----------------------------------------------------------------- frame index
    def save_index(self, arrays: Mapping[str, np.ndarray], time_base: float) -> None:
        """Store the demuxed frame index (`_index/<key>` arrays) and the file facts it belongs to.
        An index stored before is rewritten (raw, as stores made before this layout did not keep it):
        it counts as absent from the start until `time_base` is written again, last."""
        with writing(self.path, "the frame index"):
            grp = self.group.require_group("_index")
            if "time_base" in grp.attrs:
                del grp.attrs["time_base"]
            for key, values in arrays.items():  # raw, one chunk: read without zarr (`_read_1d`)
                values = np.asarray(values)
                self.group.create_array(f"_index/{key}", data=values, chunks=(max(len(values), 1),),
                                        compressors=None, overwrite=True)
            self.group.require_group("_index").attrs["time_base"] = float(time_base)

    def has_index(self, raw: bool = False) -> bool:
        """Whether the store holds a complete frame index (see `load_index`); with `raw`, one whose
        arrays are all stored raw, so it is read without zarr (stores made before kept it
        compressed: a run rewrites it)."""
        if "time_base" not in ((self._node("_index") or {}).get("attributes") or {}):
            return False
        return not raw or all(plain_1d(self._node(f"_index/{k}")) is not None
                              for k in self._children("_index", "array"))

    def load_index(self) -> tuple[dict[str, np.ndarray], float] | None:
        """The stored frame index, or None (also for one a killed run left half written: `save_index`
        writes `time_base` last, after every array)."""
        attrs = (self._node("_index") or {}).get("attributes") or {}
        if "time_base" not in attrs:
            return None
        arrays = {k: self._read_1d(f"_index/{k}") for k in self._children("_index", "array")}
        return arrays, float(attrs["time_base"])

    def frame_numbers(self) -> np.ndarray:
        """int64 [T]: the frame number of each stored position (the positions themselves, unless the
        store keeps a frame-number table `_index/frame_number`, as imported sparse stores do)."""
        if self._node(FRAME_NUMBER) is not None:
            return self._read_1d(FRAME_NUMBER).astype(np.int64)
        return np.arange(self.n_frames, dtype=np.int64)

    def set_frame_numbers(self, numbers: np.ndarray) -> None:
        """Store the original frame number of each position, int64 [T] (imported sparse stores)."""
        with writing(self.path, "the frame numbers"):
            numbers = np.asarray(numbers, np.int64)
            self.group.create_array(FRAME_NUMBER, data=numbers, chunks=(max(len(numbers), 1),),
                                    compressors=None, overwrite=True)
    # ----------------------------------------------------------------- imported files
    def set_file_facts(self, name: str, table: np.ndarray) -> None:
        """Keep the zip facts of the files an import read for `name`: int64 [T, S, 10] (position,
        split folder in `meta["imported_from"]["split_folders"]` order, `ZipFacts.pack()`; -1 where
        none; the last column: the subfolder, see importer.FACTS_WIDTH), so an export rewrites
        those files byte for byte."""
        table = np.asarray(table, np.int64)
        with writing(self.path, f"the file facts of '{name}'"):
            arr = self.group.create_array(f"_npz/{name}", shape=table.shape, dtype="int64", overwrite=True,
                                          chunks=(self.shard_frames, *table.shape[1:]), fill_value=-1)
            arr[...] = table

    def file_facts(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray | None:
        """Rows [start, stop) of the table `set_file_facts` kept for `name` (one chunk per shard), or None."""
        key = f"_npz/{name}"
        return self.group[key][start:stop] if key in self.group else None

    # ----------------------------------------------------------------- arrays
    def ensure_array(self, spec: ArraySpec, height: int, width: int):
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
                    **array_codecs(spec.codec, spec.attrs.get("kind"), spec.dtype),
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
        self._shard_io.pop(name, None)
        self._layouts.pop(f"flags:{name}", None)

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
        shard = int(indices[0]) // self.shard_frames
        start, stop = shard_bounds(shard, self.shard_frames, self.n_frames)
        if len(indices) == stop - start:  # the whole shard: encoded and written directly
            if name not in self._shard_io:
                from video_pipeline.shards import ShardIO

                self._shard_io[name] = ShardIO.of(self.group[name])
            io = self._shard_io[name]
            if io is not None:
                io.write_shard(self.shard_path(name, shard), data)
                return
        arr = self._writers.get(name)
        if arr is None:
            # every computed chunk is data, even one equal to the fill value: skip zarr's
            # per-chunk "is it empty?" comparison, which costs about as much as compressing
            arr = self._writers[name] = self.group[name].with_config({"write_empty_chunks": True})
        for pos, start, stop in contiguous_runs(indices):
            arr[start:stop] = data[pos:pos + stop - start]

    def mark_done(self, name: str, indices: np.ndarray) -> None:
        """Flag frames `indices` (all in one shard) durable; set the shard flag if it is complete."""
        shard = int(indices[0]) // self.shard_frames
        start, stop = shard_bounds(shard, self.shard_frames, self.n_frames)
        if len(indices) == stop - start and self._plain_flags(name):
            from zarr.storage import _local

            # the whole shard: its two flag chunks written as files, in the durability order, each
            # by zarr's own atomic write (zarr's path reads, then writes, through its event loop:
            # ~12 ms of CPU per shard and array, mostly holding the GIL the experts need)
            pad = np.zeros(self.shard_frames, np.uint8)
            pad[:stop - start] = 1
            for key, chunk in ((f"_progress/{name}", b"\x01"), (f"_frames/{name}", pad.tobytes())):
                path = self.path / key / "c" / str(shard)
                path.parent.mkdir(parents=True, exist_ok=True)
                with _local._atomic_write(path, "wb") as f:
                    f.write(chunk)
            return
        frames = self.group[f"_frames/{name}"]
        done = frames[start:stop]
        done[indices - start] = 1
        if done.all():
            self.group[f"_progress/{name}"][shard] = 1
        frames[start:stop] = done

    def _plain_flags(self, name: str) -> bool:
        """Whether both flag arrays of `name` have the layout `ensure_array` gives them (uint8, one
        chunk per shard, stored raw under `c/<shard>`), so a whole shard's flags can be written as
        files; checked once per array."""
        key = f"flags:{name}"
        if key not in self._layouts:
            ok = True
            for flags, chunk in (("_progress", 1), ("_frames", self.shard_frames)):
                node = self._node(f"{flags}/{name}")
                ok &= (node is not None and plain_1d(node) == np.dtype("uint8")
                       and node["chunk_grid"]["configuration"]["chunk_shape"] == [chunk])
            self._layouts[key] = ok
        return self._layouts[key]

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
        if self._node(key) is None:
            return np.zeros(self.n_frames, dtype=bool)
        return self._read_1d(key, damaged_reads_as_fill=True).astype(bool)

    def done_shards(self, name: str) -> np.ndarray:
        """bool [n_shards]: shards of `name` marked complete."""
        key = f"_progress/{name}"
        if self._node(key) is None:
            return np.zeros(self.n_shards, dtype=bool)
        return self._read_1d(key, damaged_reads_as_fill=True).astype(bool)

    def read(self, name: str, indices: np.ndarray) -> np.ndarray:
        """Read frames `indices` (sorted) of `name`: [K,H,W,C]. A chunk that fails its checksum or
        does not decode is a StoreError naming the shard."""
        arr = self.group[name]
        parts = []
        for _, start, stop in contiguous_runs(indices):
            try:
                parts.append(arr[start:stop])
            except Exception as err:  # zarr raises codec errors as ValueError, RuntimeError, ...
                raise damaged_error(self.path / name, start // self.shard_frames, read_failure(err)) from None
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    # ----------------------------------------------------------------- integrity
    def flagged_shards(self, name: str, done: np.ndarray | None = None) -> np.ndarray:
        """bool [n_shards]: shards of `name` holding a frame some flag calls done (`done`: its
        `done_frames`, when the caller has read them already)."""
        flagged = self.done_shards(name).copy()
        frames = np.flatnonzero(self.done_frames(name) if done is None else done)
        flagged[frames // self.shard_frames] = True
        return flagged

    def orphan_flags(self) -> list[str]:
        """Names with flag arrays but no modality array (its folder or zarr.json was deleted)."""
        names = set()
        for flags in FLAG_GROUPS:
            names |= set(self._children(flags, "array"))
        return sorted(n for n in names if n not in self)

    def repair_flags(self, name: str) -> bool:
        """Recreate a deleted `_progress/<name>` from `_frames/<name>` (a shard is done when all its
        frames are), or a deleted `_frames/<name>` from `_progress/<name>`; both gone: nothing is
        done. True if something was recreated."""
        have = {f: self._node(f"{f}/{name}") is not None for f in FLAG_GROUPS}
        if all(have.values()) or name not in self:
            return False
        n, sf = self.n_frames, self.shard_frames
        frames = self.done_frames(name) if have["_frames"] else np.repeat(self.done_shards(name), sf)[:n]
        progress = np.array([frames[a:b].all() for a, b in
                             (shard_bounds(s, sf, n) for s in range(self.n_shards))], dtype=bool)
        with writing(self.path, f"the flags of '{name}'"):
            for flags, length, chunk, values in (("_progress", self.n_shards, 1, progress),
                                                 ("_frames", n, sf, frames)):
                if not have[flags]:  # data of the recreated flags first, then (for _frames) the plan
                    arr = self.group.create_array(f"{flags}/{name}", shape=(length,), dtype="uint8",
                                                  chunks=(chunk,), fill_value=0, compressors=None)
                    arr[:] = values.astype(np.uint8)
        return True

    def check_shards(self, name: str, full: bool = False) -> list[tuple[int, str]]:
        """[(shard, why)] of the shards of `name` that some flag calls done but that are damaged.

        Cheap (full=False): the shard file exists, is long enough for its index, the index passes
        its checksum and points inside the file, and every flagged frame has a chunk. Full: also
        every flagged shard is read and decoded (each chunk's crc32c checked where it has one).
        Arrays not in store.py's layout get only the full check."""
        if name not in self:
            self.array(name)  # the StoreError naming the modalities
        try:
            meta = json.loads((self.path / name / "zarr.json").read_bytes())
            shape = tuple(meta["shape"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            return [(-1, f"its zarr.json is unreadable ({err})")]
        layout = shard_layout(meta, shape)
        done = self.done_frames(name)
        flagged = self.flagged_shards(name, done)
        n, sf = self.n_frames, self.shard_frames  # properties parse the metadata: once, not per shard
        direct = layout is not None and layout.frames == sf
        reader = self.reader(name) if full else None
        bad = []
        for shard in range(math.ceil(n / sf)):
            start, stop = shard_bounds(shard, sf, n)
            why = None
            if direct:  # also unflagged shard files: a damaged one would fail the next write into it
                path = self.shard_path(name, shard)
                if flagged[shard] or path.exists():
                    why = _check_shard_file(path, layout, done[start:stop])
            if not flagged[shard]:
                if why and why != "missing":
                    bad.append((shard, why))
                continue
            if why is None and full:
                try:
                    if reader.layout is not None:  # every chunk through its codecs, crc32c checked
                        for position in range(start, stop):
                            reader.read(position)
                    else:
                        self.array(name)[start:stop]
                except DamagedShard as err:
                    why = err.why
                except Exception as err:
                    why = read_failure(err)
            if why:
                bad.append((shard, why))
        return bad

    def require_intact(self, names=None) -> None:
        """StoreError naming the first damaged shard (cheap check, see `check_shards`) of modalities
        `names` (default: all): readers call it so a missing or truncated shard is never read back
        as fill values under a done flag."""
        for name in self.names if names is None else [n for n in names if n in self]:
            flagged = self.flagged_shards(name)
            bad = [(s, why) for s, why in self.check_shards(name) if s < 0 or flagged[s]]
            if bad:
                shard, why = bad[0]
                more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                raise StoreError(f"{self.path}: shard {shard} of '{name}' is damaged ({why}){more}; rerun "
                                 f"`vre run` on this store: it recomputes damaged shards")

    def shard_path(self, name: str, shard: int) -> Path:
        """The file of shard `shard` of `name` (store.py's layout: shards span whole frames)."""
        return self.path / name / "c" / str(shard) / "0" / "0" / "0"

    def forget_shards(self, name: str, shards) -> None:
        """Delete the (damaged) files of `shards` of `name`, then clear their flags, so a run
        recomputes them (a kill in between leaves flags over a missing file, which the next check
        finds again)."""
        shards = [int(s) for s in shards]
        if not shards:
            return
        n, sf = self.n_frames, self.shard_frames
        idx = np.concatenate([np.arange(*shard_bounds(s, sf, n)) for s in shards])
        with writing(self.path, f"the flags of '{name}'"):
            for s in shards:
                self.shard_path(name, s).unlink(missing_ok=True)
            self.clear(name, idx)

    def cache_attr(self, name: str, key: str, value) -> None:
        """Set attrs[key] of modality array `name` to JSON-safe `value` (a cache, such as statistics),
        also through a store opened read-only. Raises OSError or ValueError where it cannot be written."""
        load_zarr().open_array(str(self.path / name), mode="r+", zarr_format=3).attrs[key] = value

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
    """Reads frames [H,W,C] of a modality array in their stored dtype: one (`read`) or many straight
    into given arrays, shard by shard (`read_into`, the training loader's batch path).

    VideoStore writes every array in one layout: one chunk per frame inside shards of `shard_frames`
    frames. Through zarr's generic path a single-frame read costs several milliseconds of Python,
    async hand-offs and copies; here the frame's chunk is located with the shard index (zarr v3
    sharding: little-endian uint64 (offset, size) pairs at the end of the shard file, then a
    crc32c) and decoded by the array's own codecs (`shards.ShardIO.decode_into`: the chunk's crc32c
    checked, Blosc straight into the destination frame, JPEG-XL). Arrays in any other layout, or on a big-endian
    machine, are read through zarr.
    """

    def __init__(self, store_path: Path, name: str):
        self.root = store_path / name
        from video_pipeline.shards import ShardIO

        self.array = load_zarr().open_array(str(self.root), mode="r", zarr_format=3)
        self.fill = self.array.fill_value
        meta = json.loads((self.root / "zarr.json").read_text())
        layout = shard_layout(meta, tuple(self.array.shape))
        self.io = ShardIO.of(self.array) if layout is not None else None
        self.layout = layout if self.io is not None else None
        self.indexes: dict[tuple, np.ndarray] = {}
        self.local = threading.local()  # .buffer: the chunk being decoded, one per thread

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def read(self, position: int) -> np.ndarray:
        """Frame at `position` [H,W,C], a new array. A damaged chunk or index is a StoreError."""
        out = np.empty(self.frame_shape, self.dtype)
        self.read_into([position], [out])
        return out

    def read_into(self, positions, outs) -> None:
        """Frames at `positions` (ints, any order) into `outs` (one writable C-contiguous array
        [H,W,C] of the stored dtype per position), each shard file opened once however many of its
        frames are asked. Frames never written read as the fill value; a damaged chunk or index is
        a StoreError naming the shard."""
        if self.layout is None:
            for position, out in zip(positions, outs):
                out[...] = self.array[int(position)]
            return
        by_shard: dict[int, list] = {}
        for position, out in zip(positions, outs):
            by_shard.setdefault(int(position) // self.layout.frames, []).append((int(position), out))
        for shard, wanted in by_shard.items():
            self._read_shard(shard, wanted)

    def _read_shard(self, shard: int, wanted: list) -> None:
        path = self.root / "c" / str(shard) / "0" / "0" / "0"  # shards span whole frames
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            for _, out in wanted:
                out[...] = self.fill
            return
        try:
            st = os.fstat(fd)
            key = (shard, st.st_size, st.st_mtime_ns)  # a rewritten shard has a new index
            index = self.indexes.get(key)
            if index is None:
                index, why = read_shard_index(fd, st.st_size, self.layout)
                if why:
                    raise damaged_error(self.root, shard, why)
                if len(self.indexes) > 64:
                    self.indexes.clear()
                self.indexes[key] = index
            for position, out in wanted:
                offset, size = (int(v) for v in index[position % self.layout.frames])
                if offset == _EMPTY:
                    out[...] = self.fill
                    continue
                buffer = getattr(self.local, "buffer", b"")
                if len(buffer) < size:  # one buffer per reader and thread: no new pages per chunk
                    buffer = self.local.buffer = bytearray(size + (size >> 3))
                chunk = memoryview(buffer)[:size]
                if os.preadv(fd, [chunk], offset) != size:
                    raise damaged_error(self.root, shard, f"frame {position}: truncated")
                try:
                    self.io.decode_into(chunk, out)
                except Exception as err:  # the chunk's checksum, or a chunk that no longer decodes
                    raise damaged_error(self.root, shard, f"frame {position}: {read_failure(err)}") from None
        finally:
            os.close(fd)


@dataclass(frozen=True)
class ShardLayout:
    """Where the chunks of one shard of an array in store.py's layout are.

    frames: frames (chunks) per shard; inner: codec names of each chunk; chunk_crc: chunks end
    with a crc32c; index_bytes: size of the shard index at the end of the file (16 bytes per chunk,
    plus 4 for its crc32c when index_crc)."""

    frames: int
    inner: list
    chunk_crc: bool
    index_crc: bool

    @property
    def index_bytes(self) -> int:
        return self.frames * 16 + (4 if self.index_crc else 0)


def shard_layout(meta: dict, shape: tuple) -> ShardLayout | None:
    """The layout of an array from its zarr.json `meta` and `shape`, if it is store.py's: 4-D,
    sharded, one chunk per frame, shards spanning whole frames, index little-endian at the end,
    '/'-separated chunk keys; else None (read such arrays through zarr)."""
    try:
        (codec,) = meta["codecs"]
        conf = codec["configuration"]
        inner = [c["name"] for c in conf["codecs"]]
        index = [c["name"] for c in conf["index_codecs"]]
        endian = {(c.get("configuration") or {}).get("endian", "little")
                  for c in conf["codecs"] + conf["index_codecs"] if c["name"] == "bytes"}
        shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
        ok = (len(shape) == 4 and codec["name"] == "sharding_indexed"
              and index in (["bytes"], ["bytes", "crc32c"]) and endian <= {"little"}
              and conf.get("index_location", "end") == "end"
              and list(conf["chunk_shape"]) == [1, *shape[1:]] and list(shard[1:]) == list(shape[1:])
              and meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
              and sys.byteorder == "little")
        if not ok:
            return None
        return ShardLayout(int(shard[0]), inner, bool(inner) and inner[-1] == "crc32c", index[-1] == "crc32c")
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def split_crc(data: bytes) -> tuple[bytes, str | None]:
    """(payload, None) if `data` ends with the crc32c of the rest, else (b"", why)."""
    import google_crc32c

    if len(data) < 4:
        return b"", "shorter than its checksum"
    payload = data[:-4]
    if google_crc32c.value(payload) != int.from_bytes(data[-4:], "little"):
        return b"", "checksum mismatch"
    return payload, None


def read_shard_index(fd: int, file_size: int, layout: ShardLayout) -> tuple[np.ndarray | None, str | None]:
    """(index uint64 [frames, 2] of (offset, size), None) of the open shard file `fd`, or
    (None, why) when the file is too short, the index fails its checksum or points past the data."""
    if file_size < layout.index_bytes:
        return None, f"truncated ({file_size} bytes, its index alone takes {layout.index_bytes})"
    raw = os.pread(fd, layout.index_bytes, file_size - layout.index_bytes)
    if layout.index_crc:
        raw, why = split_crc(raw)
        if why:
            return None, f"index {why}"
    index = np.frombuffer(raw, dtype="<u8").reshape(layout.frames, 2)
    used = index[:, 0] != _EMPTY
    if np.any(index[used, 0] + index[used, 1] > file_size - layout.index_bytes):
        return None, "truncated (its index points past the data)"
    return index, None


def _check_shard_file(path: Path, layout: ShardLayout, done: np.ndarray) -> str | None:
    """Why the shard file at `path` cannot hold the frames `done` (bool [frames] of the shard)
    flags call done, or None. Reads only its size and index."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"unreadable ({err.strerror})"
    try:
        index, why = read_shard_index(fd, os.fstat(fd).st_size, layout)
    finally:
        os.close(fd)
    if why:
        return why
    absent = np.flatnonzero(done & (index[: len(done), 0] == _EMPTY))
    if len(absent):
        return f"{len(absent)} frame(s) flagged done have no data"
    return None


def read_failure(err: Exception) -> str:
    """A short reason for a chunk that zarr could not read (checksum or decoder error)."""
    text = str(err)
    if "checksum" in text.lower():
        return "checksum mismatch"
    return f"does not decode ({type(err).__name__}: {text[:100]})"


class DamagedShard(StoreError):
    """A shard whose data fails its checksum or does not decode; `why` says how."""

    def __init__(self, message: str, why: str = ""):  # why "": re-raised from a DataLoader worker
        super().__init__(message)
        self.why = why


def damaged_error(root: Path, shard: int, why: str) -> DamagedShard:
    store, name = root.parent, root.name
    return DamagedShard(f"{store}: shard {shard} of '{name}' is damaged ({why}); run `vre verify {store}`, "
                        f"then rerun `vre run` on it to recompute that shard", why)


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


def root_attributes(path: Path) -> dict:
    """The attributes of the zarr v3 group at `path`, from its zarr.json; StoreError where that is
    not zarr v3 group metadata."""
    try:
        node = json.loads((path / "zarr.json").read_bytes())
    except (OSError, ValueError) as err:
        raise StoreError(f"{path}: cannot open as a zarr v3 group ({type(err).__name__}: "
                         f"{str(err)[:200]})") from None
    if not isinstance(node, dict) or node.get("zarr_format") != 3 or node.get("node_type") != "group" \
            or not isinstance(node.get("attributes", {}), dict):
        raise StoreError(f"{path}: cannot open as a zarr v3 group (its zarr.json is not zarr v3 group "
                         f"metadata)")
    return dict(node.get("attributes") or {})


def plain_1d(node: dict) -> np.dtype | None:
    """The dtype of a 1-D integer or bool array stored raw, from its zarr.json `node`: regular
    chunks in files `c/<i>`, only the `bytes` codec (little-endian where the values take more than
    a byte, on a little-endian machine). None for any other array (read it through zarr)."""
    try:
        dtype = np.dtype(node["data_type"])  # zarr v3 names these as numpy does: bool, uint8, int64
        codecs = node["codecs"]
        endian = (codecs[0].get("configuration") or {}).get("endian") if codecs else None
        ok = (node.get("node_type") == "array" and len(node["shape"]) == 1 and dtype.kind in "biu"
              and node["chunk_grid"]["name"] == "regular"
              and len(node["chunk_grid"]["configuration"]["chunk_shape"]) == 1
              and node["chunk_grid"]["configuration"]["chunk_shape"][0] >= 1
              and [c["name"] for c in codecs] == ["bytes"] and not node.get("storage_transformers")
              and (dtype.itemsize == 1 or (endian == "little" and sys.byteorder == "little"))
              and node["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}})
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None
    return dtype if ok else None


def meta_problem(meta) -> str | None:
    """What makes root metadata `meta` (attrs["video_pipeline"]) unusable, or None."""
    if not isinstance(meta, dict):
        return f"video_pipeline is a {type(meta).__name__}, not a mapping"
    video = meta.get("video")
    if not isinstance(video, dict):
        return "video_pipeline.video is not a mapping"
    n = video.get("n_frames")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        return "video_pipeline.video.n_frames is not a frame count"
    sf = meta.get("shard_frames")
    if not isinstance(sf, int) or isinstance(sf, bool) or sf < 1:
        return "video_pipeline.shard_frames is not a positive integer"
    recipe = meta.get("recipe", {})
    if not isinstance(recipe, dict) or not isinstance(recipe.get("experts", {}), dict):
        return "video_pipeline.recipe is not a recipe mapping"
    return None


def damaged_nodes(path: Path) -> list[tuple[str, str]]:
    """[(key, why)] of the nodes of store `path` (modality arrays, flag and index groups and their
    arrays) whose zarr.json is not readable zarr v3 metadata."""
    out = []

    def check(key: str) -> str | None:
        try:
            node = json.loads((path / key / "zarr.json").read_bytes())
        except FileNotFoundError:  # removed by a writer since the listing: not damage
            return None
        except OSError as err:
            return f"unreadable: {err.strerror}"
        except ValueError:
            return "not JSON"
        if not isinstance(node, dict) or node.get("zarr_format") != 3 or node.get("node_type") not in ("array", "group"):
            return "not zarr v3 metadata"
        if node["node_type"] == "array" and not (isinstance(node.get("shape"), list) and node.get("data_type")
                                                 and isinstance(node.get("codecs"), list)):
            return "incomplete array metadata"
        return None

    try:
        top = sorted(e.name for e in os.scandir(path) if e.is_dir() and (Path(e.path) / "zarr.json").exists())
    except OSError:
        return out
    for name in top:
        why = check(name)
        if why:
            out.append((name, why))
        elif name in PRIVATE_GROUPS:
            try:
                subs = sorted(e.name for e in os.scandir(path / name) if e.is_dir())
            except OSError:  # removed by a writer since the listing
                subs = []
            for sub in subs:
                if (path / name / sub / "zarr.json").exists():
                    why = check(f"{name}/{sub}")
                    if why:
                        out.append((f"{name}/{sub}", why))
    return out


def store_owner(path: Path) -> str:
    """Who owns folder `path`: 'none' (absent, or holding no file but a killed first write's
    temporaries: folders without files are what a refused first run can leave, when zarr
    finishes a write it had started after the store was removed), 'ours' (a store of this
    package, or one killed before its metadata was written), or 'foreign' (anything else: a
    user's files, a file, another program's zarr group)."""
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
        return "none" if not _holds_files(path) else "foreign"
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


def _holds_files(path: Path) -> bool:
    """Whether folder `path` holds a file at any depth, besides the temporaries of a killed first
    write at its top (an unreadable folder counts as holding files)."""
    def error(err):
        raise err

    try:
        for root, _, files in os.walk(path, onerror=error):
            top = root == str(path)
            if any(not top or not (TEMP_FILE.search(f) or f.startswith(".vre-write-test-")) for f in files):
                return True
    except OSError:
        return True
    return False


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
