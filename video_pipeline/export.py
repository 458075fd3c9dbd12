"""The Dronescapes layout: export stores to it, import it into stores, and the split files both use.

Layout (one file per frame and modality):
    DIR/<split>/<modality>/<video>_<frame>.npz   the frame under the key `arr_0`: class maps uint8
                                                  [H,W], binary maps bool [H,W], everything else
                                                  [H,W,C] (depth/normals float16, images uint8)
    DIR/<split>/<modality>.json                   the modality's expert description (array attrs)
    DIR/<split>.txt                               the split list: `<video>/<frame>` per line
The public Dronescapes dataset has the same tree (split folders such as train_set, test_set and
their _annotated_only variants; modality folders may hold part0/, part1/ subfolders), without the
descriptions and lists.

Split file (YAML): split name -> video (store name) -> frames, as `all`, `A..B` (end-exclusive,
`A..` to the end), a frame number, or a list of those:
    train: {barsana_DJI_0500: [0..900, 1200..], comana_DJI_0881: all}
    test:  {barsana_DJI_0500: [900..1200]}
"""
from __future__ import annotations

import io
import json
import os
import re
import time
import zipfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from video_pipeline import __version__
from video_pipeline.dronescapes import DRONESCAPES_CLASSES, DRONESCAPES_PALETTE
from video_pipeline.errors import RecipeError, StoreError, VreError
from video_pipeline.recipe import NAME_RE, RESERVED_NAMES, sha256_of
from video_pipeline.store import ArraySpec, VideoStore, shard_groups, store_name
from video_pipeline.yamlio import LineDict, load_yaml

ALL = "all"  # the split every frame goes to without a split file
VOLATILE_ATTRS = ("statistics", "skipped", "revision")  # array attrs that are not a description
SPLIT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")  # \Z: "$" would let a final newline in
RANGE_RE = re.compile(r"^(\d*)\.\.(\d*)$")
FILE_RE = re.compile(r"^(?P<video>.+)_(?P<frame>\d+)\.(?P<ext>npz|npy)$")
STORED_DTYPES = ("uint8", "float16", "float32")  # what an imported modality may be stored as
MAX_CHANNELS = 4096
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry time: identical arrays give identical files


# ---------------------------------------------------------------------------------------- split files
def load_splits(path: Path) -> dict[str, dict[str, list]]:
    """Read a split file: {split: {video: [all | (start, stop|None) | frame number, ...]}}.

    Raises RecipeError `FILE:LINE: what is wrong`.
    """
    data = load_yaml(path, "split file")
    out = {}
    for split, videos in data.items():
        line = data.line_of(split)
        if not isinstance(split, str) or not SPLIT_NAME_RE.match(split):
            raise RecipeError(f"{path}:{line}: split name {split!r} must be a folder name "
                              f"(letters, digits, _ . -)")
        if not isinstance(videos, LineDict):
            raise RecipeError(f"{path}:{line}: split '{split}' must map video names to frames")
        out[split] = {}
        for video, frames in videos.items():
            where = f"{path}:{videos.line_of(video)}"
            items = frames if isinstance(frames, list) else [frames]
            out[split][str(video)] = [_parse_selection(item, where) for item in items]
    return out


def _parse_selection(item, where: str):
    if item == ALL:
        return ALL
    if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
        return int(item)
    m = RANGE_RE.match(item) if isinstance(item, str) else None
    if m and (m[1] or m[2]):
        start, stop = int(m[1] or 0), int(m[2]) if m[2] else None
        if stop is not None and stop <= start:
            raise RecipeError(f"{where}: {item} selects no frame (A..B stops before B)")
        return start, stop
    raise RecipeError(f"{where}: {item!r} is not a frame selection; use all, A..B (end-exclusive), "
                      f"A.., a frame number, or a list of those")


def split_mask(selection: list | None, numbers: np.ndarray) -> np.ndarray:
    """bool [T]: which frame numbers int64 [T] a parsed selection (None: the video is absent) picks."""
    mask = np.zeros(len(numbers), bool)
    for item in selection or []:
        if item == ALL:
            mask[:] = True
        elif isinstance(item, tuple):
            start, stop = item
            mask |= (numbers >= start) & (numbers < (stop if stop is not None else np.iinfo(np.int64).max))
        else:
            mask |= numbers == item
    return mask


# ---------------------------------------------------------------------------------------- npz files
def npz_bytes(arr: np.ndarray, compress: bool) -> bytes:
    """An .npz holding `arr` as `arr_0` (what np.load reads), byte-identical for identical arrays.

    np.savez stamps the current time into the zip entry; this writer uses a fixed one, so a rerun
    can tell an unchanged file and a round trip reproduces files exactly.
    """
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        info = zipfile.ZipInfo("arr_0.npy", date_time=ZIP_TIME)
        info.compress_type = method
        info.external_attr = 0o644 << 16
        with zf.open(info, "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write `data` to `path` atomically unless the file already holds exactly it. True if written."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    tmp = path.with_name(path.name + f".{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a read-only folder: files written so far stay valid
        tmp.unlink(missing_ok=True)
        raise StoreError(f"{path}: cannot write ({err.strerror or err}); free space or choose another "
                         f"-o, then rerun (files already written are kept)") from None
    return True


def remove_stale_partials(out_dir: Path) -> int:
    """Delete the temporary files of `write_if_changed` whose writer no longer runs (a killed
    export); those of a live process (another export into the same folder) are kept. Returns how
    many were deleted."""
    removed = 0
    for tmp in out_dir.rglob("*.partial") if out_dir.is_dir() else ():
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _process_exists(int(pid)):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def read_array(raw: bytes) -> np.ndarray:
    """The array of a Dronescapes file's bytes: `arr_0` of an .npz (or its only array), or an .npy.
    ValueError says why the bytes are not one."""
    if raw[:4] != b"PK\x03\x04" and raw[:6] != b"\x93NUMPY":
        raise ValueError("not an .npz or .npy file")
    data = np.load(io.BytesIO(raw), allow_pickle=False)
    if isinstance(data, np.ndarray):
        return data
    with data:
        keys = list(data.keys())
        if "arr_0" not in keys and len(keys) != 1:
            raise ValueError(f"holds {keys}, expected one array named arr_0")
        return data["arr_0" if "arr_0" in keys else keys[0]]


def file_array(frame: np.ndarray, attrs: Mapping) -> tuple[np.ndarray, bool]:
    """A stored frame [H,W,C] -> (the array written to its npz, whether the file is compressed).

    Class maps -> uint8 [H,W] class indices, binary maps -> bool [H,W] (or [H,W,C]), depth and
    normals -> float16; label files are deflated (they shrink a hundredfold), the rest stored.
    """
    kind = attrs.get("kind")
    if kind == "semantic" and frame.shape[2] == 1:
        return frame[..., 0].astype(np.uint8, copy=False), True
    if kind == "binary":
        out = frame != 0
        return (out[..., 0] if out.shape[2] == 1 else out), True
    if kind in ("depth", "normals"):
        return frame.astype(np.float16, copy=False), False
    return frame, False


def description(attrs: Mapping, name: str, sample: np.ndarray) -> dict:
    """The expert description written next to a modality folder: its array attrs plus the file format."""
    desc = {k: v for k, v in attrs.items() if k not in VOLATILE_ATTRS}
    desc["name"] = name
    desc["file"] = {"dtype": str(sample.dtype), "shape": ["H", "W"] + (["C"] if sample.ndim == 3 else []),
                    "key": "arr_0"}
    return desc


# ---------------------------------------------------------------------------------------- export
def export_dronescapes(stores: list[Path], out_dir: Path, splits: Path | None, n_jobs: int,
                       modalities: list[str] | None) -> dict:
    """`vre export dronescapes`: write stores in the Dronescapes layout; returns a JSON-safe summary.

    Only computed (done) frames are written; frames a split selects but a modality lacks are
    counted under "missing". A rerun skips files that already hold identical bytes. Work is split
    in shard-aligned blocks of frames, run on `n_jobs` joblib processes.
    """
    from joblib import Parallel, delayed

    t0 = time.perf_counter()
    split_spec = load_splits(splits) if splits else None
    if n_jobs < 1:
        raise VreError(f"--jobs must be at least 1, got {n_jobs}")
    tasks, lists, missing, descriptions, unlisted = [], defaultdict(set), {}, {}, []
    seen = {}
    for path in stores:
        store = VideoStore.open(path)
        video = store_name(store.path)
        if video in seen:
            raise VreError(f"{store.path} and {seen[video]} are both video '{video}'; export them separately")
        seen[video] = store.path
        names = modalities or store.names
        for name in names:
            if name not in store.names:
                raise StoreError(f"{store.path}: has no modality '{name}' (it has: {', '.join(store.names)}); "
                                 f"drop it from --modalities")
        numbers = store.frame_numbers()
        masks = ({s: split_mask(v.get(video), numbers) for s, v in split_spec.items()} if split_spec
                 else {ALL: np.ones(len(numbers), bool)})
        if split_spec and not any(video in v for v in split_spec.values()):
            unlisted.append(video)
        selected = np.logical_or.reduce(list(masks.values())) if masks else np.zeros(len(numbers), bool)
        for name in names:
            attrs = dict(store.array(name).attrs)
            done = store.done_frames(name)
            lacking = int((selected & ~done).sum())
            if lacking:
                missing.setdefault(video, {})[name] = lacking
            for split, mask in masks.items():
                for pos in np.flatnonzero(mask & done):
                    lists[split].add((video, int(numbers[pos])))
                if (mask & done).any():
                    _merge_description(descriptions, (split, name), attrs, store.path)
        for positions in shard_groups(np.flatnonzero(selected), store.shard_frames).values():
            tasks.append((str(store.path), video, names, positions,
                          {s: np.flatnonzero(m[positions]) for s, m in masks.items() if m[positions].any()}))
    remove_stale_partials(out_dir)
    results = Parallel(n_jobs=n_jobs)(delayed(_export_block)(out_dir, *task) for task in tasks)
    written = sum(r["written"] for r in results)
    unchanged = sum(r["unchanged"] for r in results)
    samples = {r_key: r_val for r in results for r_key, r_val in r["samples"].items()}
    for (split, name), attrs in descriptions.items():
        desc = description(attrs, name, samples[(split, name)])
        changed = write_if_changed(out_dir / split / f"{name}.json",
                                   (json.dumps(desc, indent=1, sort_keys=True) + "\n").encode())
        written, unchanged = written + changed, unchanged + (not changed)
    for split, entries in lists.items():
        text = "".join(f"{v}/{f}\n" for v, f in sorted(entries))
        changed = write_if_changed(out_dir / f"{split}.txt", text.encode())
        written, unchanged = written + changed, unchanged + (not changed)
    return {"out": str(out_dir), "stores": list(seen), "splits": {s: len(e) for s, e in sorted(lists.items())},
            "written": written, "unchanged": unchanged, "missing": missing, "not_in_splits": unlisted,
            "jobs": n_jobs, "seconds": round(time.perf_counter() - t0, 2)}


def _merge_description(descriptions: dict, key: tuple, attrs: dict, path: Path) -> None:
    """One modality folder holds one expert: refuse stores whose descriptions differ."""
    attrs = {k: v for k, v in attrs.items() if k not in VOLATILE_ATTRS}
    known = descriptions.setdefault(key, attrs)
    if known != attrs:
        diff = sorted(k for k in set(known) | set(attrs) if known.get(k) != attrs.get(k))
        raise VreError(f"{path}/{key[1]}: made differently from the same modality of another store "
                       f"({', '.join(diff)} differ); export those stores to separate folders")


def _export_block(out_dir: Path, store_path: str, video: str, names: Sequence[str], positions: np.ndarray,
                  splits: Mapping[str, np.ndarray]) -> dict:
    """Write the files of frames `positions` (one shard) of every modality into their splits."""
    store = VideoStore.open(store_path)
    numbers = store.frame_numbers()[positions]
    written = unchanged = 0
    samples = {}
    for name in names:
        attrs = dict(store.array(name).attrs)
        done = store.done_frames(name)[positions]
        if not done.any():
            continue
        data = store.read(name, positions[done])
        row = np.cumsum(done) - 1  # row of `data` holding position r (where done)
        encoded = {}  # a frame in several splits is encoded once
        for split, rows in splits.items():
            for r in rows[done[rows]]:
                if r not in encoded:
                    arr, compress = file_array(data[row[r]], attrs)
                    encoded[r] = npz_bytes(arr, compress), arr[:1, :1]
                content, samples[(split, name)] = encoded[r]
                path = out_dir / split / name / f"{video}_{int(numbers[r])}.npz"
                if write_if_changed(path, content):
                    written += 1
                else:
                    unchanged += 1
    return {"written": written, "unchanged": unchanged, "samples": samples}


# ---------------------------------------------------------------------------------------- import
def import_dronescapes(src: Path, out_dir: Path) -> dict:
    """`vre import dronescapes`: a directory in the Dronescapes layout -> one store per video.

    Each store keeps the original frame numbers (`_index/frame_number`, int64 [T], T = frames
    present in any modality) and the split membership (attrs video_pipeline.splits = {split:
    [frame numbers]}). Files that cannot be used (unknown names, unreadable, shape or dtype
    mismatch, a duplicate in another split that differs) are skipped and listed under "skipped".
    """
    t0 = time.perf_counter()
    src, out_dir = Path(src), Path(out_dir)
    if not src.is_dir():
        raise VreError(f"{src}: not a directory; pass the folder holding the split folders "
                       f"(train_set, test_set, ...)")
    skipped: list[dict] = []
    files, descs, splits = _scan(src, skipped)
    if not files:
        raise VreError(f"{src}: no <split>/<modality>/<video>_<frame>.npz file found; pass the folder "
                       f"holding the split folders (train_set, test_set, ...)")
    summary = {}
    for video in sorted(files):
        summary[video] = _import_video(src, out_dir, video, files[video], descs,
                                       {s: sorted(v[video]) for s, v in splits.items() if video in v}, skipped)
    return {"out": str(out_dir), "stores": summary, "skipped": skipped,
            "seconds": round(time.perf_counter() - t0, 2)}


def _scan(src: Path, skipped: list[dict]):
    """Index the tree: files[video][modality][frame] = [(split, path), ...], descriptions, splits."""
    files = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    descs: dict[str, tuple[Path, dict]] = {}
    splits = defaultdict(lambda: defaultdict(set))
    for split_dir in sorted(src.iterdir()):
        if not split_dir.is_dir():
            if not (split_dir.suffix == ".txt" and (src / split_dir.stem).is_dir()):
                skipped.append({"path": str(split_dir), "why": "not a split folder"})
            continue
        for mod_dir in sorted(split_dir.iterdir()):
            if not mod_dir.is_dir():
                if mod_dir.suffix == ".json" and (split_dir / mod_dir.stem).is_dir():
                    _read_description(mod_dir, descs, skipped)
                elif mod_dir.suffix in (".npz", ".npy"):
                    raise VreError(f"{mod_dir}: a frame file directly in a split folder; pass the folder "
                                   f"that holds the split folders (the parent of {split_dir.parent.name}/"
                                   f"{split_dir.name} may be one level too deep)")
                else:
                    skipped.append({"path": str(mod_dir), "why": "not a modality folder"})
                continue
            if not NAME_RE.match(mod_dir.name) or mod_dir.name in RESERVED_NAMES:  # e.g. _progress, zarr.json
                skipped.append({"path": str(mod_dir), "why": "not a modality name (an array name of the "
                                                             "store: letters, digits, _ . - + ( ), no leading _)"})
                continue
            for path in sorted(p for p in mod_dir.rglob("*") if not p.is_dir()):
                m = FILE_RE.match(path.name)
                if not m:
                    skipped.append({"path": str(path), "why": "not named <video>_<frame>.npz"})
                    continue
                video, frame = m["video"], int(m["frame"])
                files[video][mod_dir.name][frame].append((split_dir.name, path))
                splits[split_dir.name][video].add(frame)
    return files, descs, splits


def _read_description(path: Path, descs: dict, skipped: list[dict]) -> None:
    try:
        desc = json.loads(path.read_text())
        if not isinstance(desc, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        skipped.append({"path": str(path), "why": f"unreadable description: {err}"})
        return
    name = path.stem
    if name in descs and descs[name][1] != desc:
        skipped.append({"path": str(path), "why": f"differs from {descs[name][0]}; the first is used"})
        return
    descs.setdefault(name, (path, desc))


def _infer_attrs(name: str, sample: np.ndarray) -> dict:
    """Array attrs of a modality without a description, from its folder name and first file."""
    channels = sample.shape[2] if sample.ndim == 3 else 1
    lowered = name.lower()
    if sample.dtype == bool:
        kind = "binary"
    elif lowered.startswith("semantic") and sample.ndim == 2 and sample.dtype.kind in "ui":
        kind = "semantic"
    elif lowered.startswith("depth"):
        kind = "depth"
    elif lowered.startswith("normals"):
        kind = "normals"
    elif "flow" in lowered:
        kind = "flow"
    elif sample.dtype == np.uint8:
        kind = "image"
    else:
        kind = "features"
    dtype = "uint8" if kind in ("binary", "semantic") or sample.dtype == np.uint8 else "float16"
    attrs = {"type": None, "params": {}, "deps": [], "weights": None, "kind": kind, "channels": channels,
             "dtype": dtype, "classes": [], "palette": [], "value_range": None, "source": f"dronescapes/{name}"}
    if kind == "semantic":
        # what an imported class map without a description holds
        attrs.update(classes=list(DRONESCAPES_CLASSES), palette=[list(c) for c in DRONESCAPES_PALETTE])
    return attrs


def _to_stored(arr: np.ndarray, shape: tuple, dtype: str) -> np.ndarray:
    """A file's array -> one stored frame [H,W,C] of `dtype`; ValueError says why it does not fit."""
    frame = arr[..., None] if arr.ndim == 2 else arr
    if frame.ndim != 3 or frame.shape != shape:
        raise ValueError(f"shape {list(arr.shape)} does not match {list(shape)}")
    if dtype == "uint8":
        if frame.dtype == bool:
            return frame.astype(np.uint8)
        if frame.dtype.kind not in "ui" or (frame.size and (frame.min() < 0 or frame.max() > 255)):
            raise ValueError(f"dtype {arr.dtype} with values outside 0..255 cannot be stored as uint8")
        return frame.astype(np.uint8, copy=False)
    if frame.dtype.kind not in "fiub":
        raise ValueError(f"dtype {arr.dtype} is not numeric")
    return frame.astype(dtype, copy=False)


def _import_video(src: Path, out_dir: Path, video: str, by_modality: Mapping, descs: Mapping,
                  splits: Mapping[str, list[int]], skipped: list[dict]) -> dict:
    """Write one store for `video` from its files; returns {path, frames, modalities, splits}."""
    numbers = np.asarray(sorted({f for frames in by_modality.values() for f in frames}), np.int64)
    position = {int(f): i for i, f in enumerate(numbers)}
    plans = {}
    for name, frames in sorted(by_modality.items()):
        plan = _plan_modality(name, frames, descs, skipped)
        if plan:
            plans[name] = plan
    if not plans:
        return {"path": None, "frames": 0, "modalities": {}, "splits": {}}
    first = plans.get("rgb") or next(iter(plans.values()))
    height, width = first["shape"][:2]
    path = out_dir / f"{video}.zarr"
    _check_replaceable(path)
    store = VideoStore.open(path, "w")
    experts = {n: {"type": p["attrs"].get("type"), "deps": list(p["attrs"].get("deps") or []),
                   "params": p["attrs"].get("params") or {}, "weights": p["attrs"].get("weights"),
                   "dtype": None, "resolution": None} for n, p in plans.items()}
    recipe = {"resolution": None, "shard_frames": 32, "plugins": [], "experts": experts}
    store.init_meta(recipe, sha256_of(recipe), {"path": str(src), "n_frames": len(numbers), "fps": 0.0,
                                                "height": height, "width": width},
                    __version__, 32, (height, width))
    meta = store.meta
    meta["splits"] = {s: [int(f) for f in frames] for s, frames in sorted(splits.items())}
    meta["imported_from"] = {"format": "dronescapes", "path": str(src)}
    store.set_meta(meta)
    store.set_frame_numbers(numbers)
    counts = {}
    for name, plan in plans.items():
        counts[name] = _write_modality(store, name, plan, position, skipped)
    return {"path": str(path), "frames": len(numbers), "modalities": counts,
            "splits": {s: len(f) for s, f in sorted(splits.items())}}


def _check_replaceable(path: Path) -> None:
    """An existing store is replaced only if an earlier import made it."""
    if not path.exists():
        return
    try:
        imported = "imported_from" in VideoStore.open(path).meta
    except VreError:
        imported = False
    if not imported:
        raise StoreError(f"{path}: exists and was not made by `vre import`; remove it or choose another -o")


def _plan_modality(name: str, frames: Mapping[int, list], descs: Mapping, skipped: list[dict]) -> dict | None:
    """Shape, dtype and attrs of a modality, from its description or its first readable file."""
    for frame in sorted(frames):
        path = frames[frame][0][1]
        try:
            sample = read_array(path.read_bytes())
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            continue  # reported when the frames are written
        if name in descs:
            attrs = {k: v for k, v in descs[name][1].items() if k not in ("name", "file")}
        else:
            attrs = _infer_attrs(name, sample)
        channels = attrs.get("channels") or (sample.shape[2] if sample.ndim == 3 else 1)
        if sample.ndim not in (2, 3):
            skipped.append({"path": str(path), "why": f"shape {list(sample.shape)} is not [H,W] or [H,W,C]; "
                            f"modality '{name}' skipped"})
            return None
        dtype = attrs.get("dtype") or ("uint8" if sample.dtype in (np.uint8, bool) else "float16")
        if dtype not in STORED_DTYPES or type(channels) is not int or not 1 <= channels <= MAX_CHANNELS:
            skipped.append({"path": str(descs[name][0] if name in descs else path),
                            "why": f"dtype {dtype!r} with {channels!r} channels: a store holds "
                                   f"{'/'.join(STORED_DTYPES)} of 1..{MAX_CHANNELS} channels; "
                                   f"modality '{name}' skipped"})
            return None
        return {"attrs": attrs, "shape": (sample.shape[0], sample.shape[1], channels), "dtype": dtype,
                "frames": frames}
    return None


def _write_modality(store: VideoStore, name: str, plan: dict, position: Mapping[int, int],
                    skipped: list[dict]) -> int:
    """Read every file of a modality, a shard at a time, into its array; returns frames written."""
    h, w, c = plan["shape"]
    store.ensure_array(ArraySpec(name, c, plan["dtype"], plan["attrs"]), h, w)
    frames = plan["frames"]
    positions = np.asarray(sorted(position[f] for f in frames), np.int64)
    numbers = {position[f]: f for f in frames}
    written = 0
    for _, group in shard_groups(positions, store.shard_frames).items():
        good, data = [], []
        for pos in group.tolist():
            arr = _read_consistent(frames[numbers[pos]], plan, skipped)
            if arr is not None:
                good.append(pos)
                data.append(arr)
        if good:
            idx = np.asarray(good, np.int64)
            store.write_frames(name, idx, np.stack(data))
            store.mark_done(name, idx)
            written += len(good)
    return written


def _read_consistent(copies: list[tuple[str, Path]], plan: dict, skipped: list[dict]) -> np.ndarray | None:
    """The stored frame from the first usable copy of a file; copies in other splits must match it."""
    frame, first, first_bytes = None, None, None
    for split, path in copies:
        try:
            raw = path.read_bytes()
            if frame is not None and raw == first_bytes:
                continue
            arr = _to_stored(read_array(raw), plan["shape"], plan["dtype"])
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            skipped.append({"path": str(path), "why": f"{type(err).__name__}: {err}"})
            continue
        if frame is None:
            frame, first, first_bytes = arr, path, raw
        elif not np.array_equal(arr, frame, equal_nan=True):
            skipped.append({"path": str(path), "why": f"differs from {first}; the first is used"})
    return frame
