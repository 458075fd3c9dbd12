"""`vre import`: the public Dronescapes tree and VRE output folders -> stores, losslessly.

Both layouts are scanned into frame files (video -> modality -> frame -> copies), every modality
is planned (attrs, stored dtype, shape, file format) from a description, VRE's config, or the
files themselves, and everything that would make a store wrong is refused before anything is
written: class ids that do not fit the class set, modalities of different resolutions in one video.
Then one store is written per video.

Kept exactly: dtypes (float32 stays float32, float16 stays float16; bool and integer class maps
become uint8 with their file dtype recorded), frame numbers, split membership, the zip facts of
every file (so an export rewrites the same bytes), split lists. Anything that is not a frame file
is named in one summary line; files that cannot be used (unreadable, Inf values, another shape or
dtype, a link out of the source tree) are listed under "skipped" and the command exits 3.

Dronescapes layout (the folder that holds the split folders):
    DIR/<split>/<modality>/[part*/]<video>_<frame>.npz    DIR/<split>/<modality>.json (our export)
    DIR/*.txt      split lists, one `<video>/<frame>` per line
VRE output folder (`vre VIDEO -o DIR`):
    DIR/<repr>/npz/<frame>.npz   DIR/<repr>/.repr_metadata.json   DIR/.logs/run_metadata-*.json
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import time
import zipfile
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from video_pipeline import __version__
from video_pipeline.dronescapes import DRONESCAPES_CLASSES, DRONESCAPES_PALETTE
from video_pipeline.errors import StoreError, VreError
from video_pipeline.export import LIST_LINE_RE
from video_pipeline.npzfile import FileFormat, ZipFacts, read_array, zip_facts
from video_pipeline.quantities import INVERSE_DEPTH, METRIC_DEPTH, RELATIVE_DEPTH
from video_pipeline.recipe import NAME_RE, RESERVED_NAMES, sha256_of
from video_pipeline.store import ArraySpec, VideoStore, shard_groups

FILE_RE = re.compile(r"^(?P<video>.+)_(?P<frame>\d+)\.(?P<ext>npz|npy)$")  # Dronescapes: <video>_<frame>
VRE_FILE_RE = re.compile(r"^(?P<frame>\d+)\.(?P<ext>npz|npy)$")  # VRE: <frame>.npz
NO_LABEL = 255
MAX_CHANNELS = 4096
SHARD_FRAMES = 32
FACTS_WIDTH = ZipFacts.WIDTH + 1  # a file's zip facts, then the index of its subfolder (-1: none)

CLASS_SETS = ("dronescapes", "mapillary", "coco")  # --classes NAME=SET
# depth quantities (the vocabulary of array attrs "quantity") named by folder names and VRE types
QUANTITY_BY_NAME = (("disparity", INVERSE_DEPTH), ("inverse", INVERSE_DEPTH), ("sfm", METRIC_DEPTH),
                    ("marigold", RELATIVE_DEPTH), ("dpt", RELATIVE_DEPTH))
DESCRIPTION_ONLY = ("name", "file", "dtype", "channels", "quantity_meaning", "units")  # not taken as attrs
VRE_KINDS = {"color": "image", "edges": "features", "depth": "depth", "normals": "normals",
             "semantic-segmentation": "semantic", "optical-flow": "flow", "soft-segmentation": "features",
             "descriptor": "features"}


# ---------------------------------------------------------------------------------------- class sets
def class_set(name: str) -> tuple[list[str], list]:
    """(classes, palette) of a class set: `dronescapes` (8), or `mapillary` (65) / `coco` (133), the
    source classes of the shipped tables (experts/tables, read as data). ValueError for another name."""
    if name == "dronescapes":
        return list(DRONESCAPES_CLASSES), [list(c) for c in DRONESCAPES_PALETTE]
    if name not in CLASS_SETS:
        raise ValueError(f"unknown class set '{name}': use one of {', '.join(CLASS_SETS)}")
    spec = importlib.util.find_spec("experts")  # locates the package without importing its experts
    path = Path(next(iter(spec.submodule_search_locations))) / "tables" / f"{name}-to-dronescapes.json"
    return list(json.loads(path.read_text(encoding="utf-8"))["source_classes"]), []


def class_set_of_name(folder: str) -> str:
    """The class set a semantic folder's name implies: raw Mask2Former outputs name their training
    set (`semantic_mask2former_swin_mapillary_...`, `..._coco_...`); converted maps are Dronescapes."""
    lowered = folder.lower()
    if "converted" not in lowered:
        for name in ("mapillary", "coco"):
            if name in lowered:
                return name
    return "dronescapes"


def parse_class_options(items: list[str] | None) -> dict[str, str]:
    """`--classes NAME=SET ...` -> {modality: set}; VreError for a malformed item."""
    out = {}
    for item in items or []:
        name, _, value = item.partition("=")
        if not name or value not in CLASS_SETS:
            raise VreError(f"--classes {item}: use MODALITY=SET with SET one of {', '.join(CLASS_SETS)}")
        out[name] = value
    return out


def quantity_of_name(folder: str) -> str | None:
    """The depth quantity a folder name states plainly, else None (never guessed)."""
    lowered = folder.lower()
    return next((q for word, q in QUANTITY_BY_NAME if word in lowered), None)


# ---------------------------------------------------------------------------------------- walking
class Report:
    """What an import did not take: `ignored` (not frame files: metadata, images, caches, hidden
    files) and `skipped` (frame files it could not use; the command then exits 3)."""

    def __init__(self, root: Path):
        self.root = root
        self.ignored: list[str] = []
        self.skipped: list[dict] = []

    def ignore(self, path: Path) -> None:
        self.ignored.append(self._rel(path) + ("/" if path.is_dir() and not path.is_symlink() else ""))

    def skip(self, path: Path, why: str) -> None:
        self.skipped.append({"path": str(path), "why": why})

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)


def ignored_line(ignored: list[str]) -> str:
    """The one summary line naming what an import ignored."""
    more = f" and {len(ignored) - 12} more" if len(ignored) > 12 else ""
    return f"ignored {len(ignored)} entries that are not frame files: {', '.join(ignored[:12])}{more}"


def entries(folder: Path, root: Path, report: Report) -> tuple[list[Path], list[Path]]:
    """(sub-folders, files) of `folder`, sorted, never leaving `root`: a link is followed only to a
    file inside `root`; linked folders are not entered. Those left out are reported as skipped."""
    dirs, files = [], []
    try:
        listing = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        report.skip(folder, f"cannot list this folder ({err.strerror or err})")
        return dirs, files
    for entry in listing:
        path = Path(entry.path)
        if entry.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(root):
                report.skip(path, f"a link out of the source tree (to {target}); not followed")
            elif target.is_dir():
                report.skip(path, "a linked folder; not followed (copy it into the tree)")
            elif target.is_file():
                files.append(path)
            continue
        if entry.is_dir():
            dirs.append(path)
        elif entry.is_file():
            files.append(path)
    return dirs, files


def walk(folder: Path, root: Path, report: Report) -> Iterator[Path]:
    """Every file under `folder` (part0/, part1/ subfolders included), as `entries` allows."""
    dirs, files = entries(folder, root, report)
    yield from files
    for sub in dirs:
        yield from walk(sub, root, report)


# ---------------------------------------------------------------------------------------- plans
@dataclass
class Modality:
    """One modality of one video: its frame files and, once planned, how it is stored."""

    name: str
    files: dict[int, list[tuple[str, Path]]] = field(default_factory=lambda: defaultdict(list))
    hints: dict = field(default_factory=dict)  # attrs from a description or VRE's config
    attrs: dict = field(default_factory=dict)
    dtype: str = ""  # stored dtype
    shape: tuple[int, int, int] = (0, 0, 0)
    fmt: FileFormat | None = None


@dataclass
class Video:
    """One store to write: its modalities, frame numbers and what the store's metadata records."""

    name: str
    path: Path
    modalities: dict[str, Modality] = field(default_factory=dict)
    n_frames: int | None = None  # dense stores (VRE with metadata): positions are frame numbers
    splits: dict[str, list[int]] = field(default_factory=dict)
    imported_from: dict = field(default_factory=dict)
    video_meta: dict = field(default_factory=dict)


def stored_dtype(file_dtype: np.dtype, kind: str) -> str:
    """The store dtype that holds a file dtype exactly: bool and integer class/binary maps -> uint8
    (values checked per file), other integers -> float32 (exact below 2**24), float64 -> float32
    (checked per file), float16/float32 kept."""
    if file_dtype == np.bool_ or file_dtype == np.uint8 or (file_dtype.kind in "ui" and kind in ("semantic",
                                                                                                "binary")):
        return "uint8"
    if file_dtype == np.float16:
        return "float16"
    return "float32"


def infer_kind(name: str, sample: np.ndarray) -> str:
    """The kind of a modality without a description, from its folder name and first file."""
    lowered = name.lower()
    if sample.dtype == np.bool_:
        return "binary"
    if lowered.startswith("semantic") and sample.ndim == 2 and sample.dtype.kind in "ui":
        return "semantic"
    for prefix, kind in (("depth", "depth"), ("normals", "normals")):
        if lowered.startswith(prefix):
            return kind
    if "flow" in lowered:
        return "flow"
    return "image" if sample.dtype == np.uint8 else "features"


def plan_modality(mod: Modality, classes: Mapping[str, str], report: Report, where: str) -> bool:
    """Fill `mod`'s attrs, dtype, shape and file format from its first readable file and its hints.
    False (reported) if the modality cannot be stored; VreError for class ids outside its class set."""
    sample, first, failed = None, None, []
    for frame in sorted(mod.files):
        first = mod.files[frame][0][1]
        try:
            sample = read_array(first.read_bytes())
            break
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            failed.append((first, err))  # reported when the frames are read, if any file is usable
    if sample is None:
        for path, err in failed:
            report.skip(path, f"{type(err).__name__}: {err}; no file of modality '{mod.name}' is readable")
        return False
    if sample.ndim not in (2, 3) or sample.dtype.kind not in "buif" or \
            (sample.ndim == 3 and not 1 <= sample.shape[2] <= MAX_CHANNELS):
        report.skip(first, f"{sample.dtype} {list(sample.shape)} is not a numeric [H,W] or [H,W,C] "
                           f"(C <= {MAX_CHANNELS}) array; modality '{mod.name}' skipped")
        return False
    hints = dict(mod.hints)
    kind = hints.get("kind") or infer_kind(mod.name, sample)
    channels = sample.shape[2] if sample.ndim == 3 else 1
    mod.fmt = FileFormat(str(sample.dtype), sample.ndim == 3)
    mod.dtype = stored_dtype(sample.dtype, kind)
    mod.shape = (sample.shape[0], sample.shape[1], channels)
    attrs = {"type": None, "params": {}, "deps": [], "weights": None, "classes": [], "palette": [],
             "value_range": None}
    attrs.update({k: v for k, v in hints.items() if k not in DESCRIPTION_ONLY and (k, v) != ("quantity", None)})
    attrs.update(kind=kind, channels=channels, dtype=mod.dtype, file=mod.fmt.to_attrs())
    if not hints:  # an exported description says everything already
        attrs["source"] = where
    if kind == "depth" and not attrs.get("quantity") and quantity_of_name(mod.name):
        attrs["quantity"] = quantity_of_name(mod.name)
    if kind == "semantic" and channels == 1:
        _plan_classes(mod, attrs, classes.get(mod.name))
    mod.attrs = attrs
    return True


def _plan_classes(mod: Modality, attrs: dict, option: str | None) -> None:
    """Set the class set of a class map and check every file's ids fit it (VreError if not)."""
    if option:
        attrs["classes"], attrs["palette"] = class_set(option)
    elif not attrs.get("classes"):
        attrs["classes"], attrs["palette"] = class_set(class_set_of_name(mod.name))
    n_classes = len(attrs["classes"])
    highest, where = -1, None
    for frame in sorted(mod.files):
        path = mod.files[frame][0][1]
        try:
            arr = read_array(path.read_bytes())
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            continue
        if arr.dtype.kind not in "ui" or not arr.size:
            continue
        ids = np.unique(arr)
        ids = ids[ids != NO_LABEL]
        if ids.size and int(ids[-1]) > highest:
            highest, where = int(ids[-1]), path
    if highest >= n_classes:
        folder = where.parent
        while folder.name != mod.name and folder.parent != folder:
            folder = folder.parent
        raise VreError(f"{folder}: class ids up to {highest} (in {where.name}) do not fit the {n_classes} "
                       f"classes of '{mod.name}'; name its class set with --classes "
                       f"{mod.name}={'|'.join(CLASS_SETS)}")


def check_resolutions(video: Video) -> None:
    """One store holds one resolution: VreError naming two modalities that differ."""
    sizes = {name: m.shape[:2] for name, m in video.modalities.items()}
    first = next(iter(sizes))
    for name, size in sizes.items():
        if size != sizes[first]:
            raise VreError(f"{video.name}: modality '{name}' is {size[0]}x{size[1]} but '{first}' is "
                           f"{sizes[first][0]}x{sizes[first][1]}; a store holds one resolution: import "
                           f"them into separate stores (move one folder out) or resize the files")


# ---------------------------------------------------------------------------------------- reading
def to_stored(arr: np.ndarray, mod: Modality) -> np.ndarray:
    """A file's array -> one stored frame [H,W,C]; ValueError says why it does not fit exactly."""
    if str(arr.dtype) != mod.fmt.dtype or (arr.ndim == 3) != mod.fmt.channel_axis:
        raise ValueError(f"{arr.dtype} {list(arr.shape)}, but the modality's files are {mod.fmt.dtype} "
                         f"{mod.fmt.to_attrs()['shape']}")
    frame = arr[..., None] if arr.ndim == 2 else arr
    if frame.shape != mod.shape:
        raise ValueError(f"shape {list(arr.shape)} does not match {list(mod.shape)}")
    if arr.dtype.kind == "f" and frame.size and not np.isfinite(frame[~np.isnan(frame)]).all():
        raise ValueError("holds Inf values; a store holds finite values (NaN marks a missing value)")
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported just below
        out = frame.astype(mod.dtype)
    if mod.dtype == "uint8" and arr.dtype != np.bool_ and frame.size and (frame.min() < 0 or frame.max() > 255):
        raise ValueError(f"values {frame.min()}..{frame.max()} do not fit uint8 class ids")
    if out.dtype != arr.dtype and arr.dtype != np.bool_ and \
            not np.array_equal(out.astype(arr.dtype), frame, equal_nan=True):
        raise ValueError(f"values do not fit {mod.dtype} exactly (float16 overflow or lost precision)")
    return out


def read_frame(copies: list[tuple[str, Path]], mod: Modality, report: Report):
    """(stored frame, {split: (path, ZipFacts | None)}) from the first usable copy of a frame; copies
    in other splits must hold the same array. (None, {}) if no copy is usable (each reported)."""
    frame, first, facts = None, None, {}
    for split, path in copies:
        try:
            raw = path.read_bytes()
            arr = read_array(raw)
            stored = to_stored(arr, mod)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            report.skip(path, f"{type(err).__name__}: {err}")
            continue
        if frame is None:
            frame, first = stored, path
        elif not np.array_equal(stored, frame, equal_nan=True):
            report.skip(path, f"differs from {first}; the first is used")
            continue
        facts[split] = (path, zip_facts(raw, arr))
    return frame, facts


# ---------------------------------------------------------------------------------------- writing
def check_replaceable(path: Path) -> None:
    """An existing store is replaced only if an earlier import made it."""
    if not path.exists():
        return
    try:
        imported = "imported_from" in VideoStore.open(path).meta
    except VreError:
        imported = False
    if not imported:
        raise StoreError(f"{path}: exists and was not made by `vre import`; remove it or choose another -o")


def write_video(video: Video, report: Report) -> dict:
    """Write one store; returns {path, frames, modalities: {name: frames written}, splits,
    not_byte_exact: {name: files whose bytes an export will not reproduce}}."""
    if video.n_frames is None:
        numbers = np.asarray(sorted({f for m in video.modalities.values() for f in m.files}), np.int64)
    else:
        numbers = np.arange(video.n_frames, dtype=np.int64)
    position = {int(f): i for i, f in enumerate(numbers)}
    height, width = next(iter(video.modalities.values())).shape[:2]
    check_replaceable(video.path)
    store = VideoStore.open(video.path, "w")
    experts = {n: {"type": m.attrs.get("type"), "deps": list(m.attrs.get("deps") or []),
                   "params": m.attrs.get("params") or {}, "weights": m.attrs.get("weights"),
                   "dtype": None, "resolution": None} for n, m in video.modalities.items()}
    recipe = {"resolution": None, "shard_frames": SHARD_FRAMES, "plugins": [], "experts": experts}
    facts_meta = {"path": str(video.imported_from.get("path")), "n_frames": len(numbers), "fps": 0.0,
                  "height": height, "width": width, **video.video_meta}
    store.init_meta(recipe, sha256_of(recipe), facts_meta, __version__, SHARD_FRAMES, (height, width))
    meta = store.meta
    meta["splits"] = {s: [int(f) for f in frames] for s, frames in sorted(video.splits.items())}
    meta["imported_from"] = video.imported_from
    store.set_meta(meta)
    if video.n_frames is None:
        store.set_frame_numbers(numbers)
    split_order = list(video.imported_from.get("split_folders") or [""])
    counts, inexact = {}, {}
    for name, mod in video.modalities.items():
        h, w, c = mod.shape
        table = np.full((len(numbers), len(split_order), FACTS_WIDTH), -1, np.int64)
        folders: list[str] = []  # part0/, part1/ ... below the modality folder
        positions = np.asarray(sorted(position[f] for f in mod.files), np.int64)
        written = 0
        for group in shard_groups(positions, SHARD_FRAMES).values():
            good, data = [], []
            for pos in group.tolist():
                frame, copies = read_frame(mod.files[int(numbers[pos])], mod, report)
                if frame is None:
                    continue
                good.append(pos)
                data.append(frame)
                for split, (path, facts) in copies.items():
                    if facts is None:
                        inexact[name] = inexact.get(name, 0) + 1
                        continue
                    table[pos, split_order.index(split), :ZipFacts.WIDTH] = facts.pack()
                    folder = _subfolder(path, video, split, name)
                    if folder:
                        if folder not in folders:
                            folders.append(folder)
                        table[pos, split_order.index(split), ZipFacts.WIDTH] = folders.index(folder)
            if good:
                if name not in store:
                    attrs = dict(mod.attrs)
                    store.ensure_array(ArraySpec(name, c, mod.dtype, attrs), h, w)
                idx = np.asarray(good, np.int64)
                store.write_frames(name, idx, np.stack(data))
                store.mark_done(name, idx)
                written += len(good)
        if name in store:
            if folders:
                store.array(name).attrs["file"] = {**mod.attrs["file"], "folders": folders}
            store.set_file_facts(name, table)
        counts[name] = written
    return {"path": str(video.path), "frames": len(numbers), "modalities": counts,
            "splits": {s: len(f) for s, f in sorted(video.splits.items())}, "not_byte_exact": inexact}


def _subfolder(path: Path, video: Video, split: str, name: str) -> str:
    """The subfolder (part0, ...) of a Dronescapes file below its modality folder ('' if none)."""
    if video.imported_from.get("format") != "dronescapes":
        return ""
    rel = path.parent.relative_to(Path(video.imported_from["path"]) / split / name)
    return rel.as_posix() if rel.parts else ""


def run_import(videos: list[Video], classes: Mapping[str, str], report: Report, t0: float) -> dict:
    """Plan every video (refusing before anything is written), then write them; the summary."""
    unknown = set(classes) - {n for v in videos for n in v.modalities}
    if unknown:
        raise VreError(f"--classes names {', '.join(sorted(unknown))}, not a modality of this import")
    for video in videos:
        for name in list(video.modalities):
            if not plan_modality(video.modalities[name], classes, report, video.imported_from["format"]
                                 + "/" + name):
                del video.modalities[name]
        if video.modalities:
            check_resolutions(video)
    stores = {v.name: write_video(v, report) for v in videos if v.modalities}
    return {"stores": stores, "ignored": report.ignored, "skipped": report.skipped,
            "seconds": round(time.perf_counter() - t0, 2)}


# ---------------------------------------------------------------------------------------- Dronescapes
def import_dronescapes(src: Path, out_dir: Path, classes: Mapping[str, str] | None = None) -> dict:
    """`vre import dronescapes DIR -o STORES_DIR`: one store per video, `STORES_DIR/<video>.zarr`.

    Positions are the sorted frame numbers present in any modality (`_index/frame_number`);
    attrs["video_pipeline"]["splits"] = {split folder or list: [frame numbers]};
    attrs["video_pipeline"]["imported_from"] = {format, path, split_folders, split_lists}.
    """
    t0 = time.perf_counter()
    src, out_dir = Path(src).resolve(), Path(out_dir)
    if not src.is_dir():
        raise VreError(f"{src}: not a directory; pass the folder holding the split folders "
                       f"(train_set, test_set, ...)")
    if looks_like_vre_output(src):
        raise VreError(f"{src}: a VRE output folder (<repr>/npz/<frame>.npz); import it with "
                       f"`vre import vre {src} -o STORE.zarr`")
    report = Report(src)
    videos: dict[str, Video] = {}
    descs: dict[str, dict] = {}
    split_dirs, top_files = entries(src, src, report)
    for split_dir in split_dirs:
        if split_dir.name.startswith("."):
            report.ignore(split_dir)
            continue
        _scan_split(src, split_dir, videos, descs, out_dir, report)
    lists = {}
    for path in top_files:
        if path.suffix == ".txt" and not path.name.startswith("."):
            lists[path.name] = _read_list(path, report)
        else:
            report.ignore(path)
    if not videos:
        raise VreError(f"{src}: no <split>/<modality>/<video>_<frame>.npz file found; pass the folder "
                       f"holding the split folders (train_set, test_set, ...)")
    for video in videos.values():
        for name, mod in video.modalities.items():
            if name in descs:
                mod.hints = descs[name]
        video.imported_from.update(format="dronescapes", path=str(src),
                                   split_folders=sorted(video.splits))
        recorded = {}
        for list_name, entries_ in lists.items():
            mine = [[line, text, frame] for line, text, v, frame in entries_ if v == video.name]
            if mine:
                recorded[list_name] = [[line, text] for line, text, _ in mine]
                split = Path(list_name).stem
                if split not in video.splits:
                    video.splits[split] = sorted({frame for _, _, frame in mine})
        video.imported_from["split_lists"] = recorded
        video.splits = {s: sorted(f) for s, f in video.splits.items()}
    summary = run_import(list(videos.values()), classes or {}, report, t0)
    return {"out": str(out_dir), **summary}


def _scan_split(src: Path, split_dir: Path, videos: dict, descs: dict, out_dir: Path, report: Report) -> None:
    mod_dirs, files = entries(split_dir, src, report)
    for path in files:
        if path.suffix == ".json" and (split_dir / path.stem).is_dir():
            _read_description(path, descs, report)
        elif path.suffix in (".npz", ".npy") and FILE_RE.match(path.name):
            raise VreError(f"{path}: a frame file directly in a split folder; pass the folder that holds "
                           f"the split folders (the parent of {split_dir.parent.name}/{split_dir.name} "
                           f"may be one level too deep)")
        else:
            report.ignore(path)  # .task_statistics.npz (VRE's reader cache), notes, ...
    for mod_dir in mod_dirs:
        name = mod_dir.name
        if name.startswith(".") or not NAME_RE.match(name) or name in RESERVED_NAMES:
            report.ignore(mod_dir)
            continue
        for path in walk(mod_dir, src, report):
            m = FILE_RE.match(path.name)
            if not m or path.name.startswith("."):
                report.ignore(path)
                continue
            video = videos.get(m["video"])
            if video is None:
                video = videos[m["video"]] = Video(m["video"], out_dir / f"{m['video']}.zarr")
            mod = video.modalities.get(name) or video.modalities.setdefault(name, Modality(name))
            frame = int(m["frame"])
            mod.files[frame].append((split_dir.name, path))
            video.splits.setdefault(split_dir.name, set()).add(frame)


def _read_description(path: Path, descs: dict, report: Report) -> None:
    try:
        desc = json.loads(path.read_text())
        if not isinstance(desc, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        report.skip(path, f"unreadable description: {err}")
        return
    if path.stem in descs and descs[path.stem] != desc:
        report.skip(path, "differs from the description of the same modality in another split; the first is used")
        return
    descs.setdefault(path.stem, desc)


def _read_list(path: Path, report: Report) -> list[tuple[int, str, str, int]]:
    """A split list: [(line number, text, video, frame)] of its `<video>/<frame>` lines."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        report.skip(path, f"unreadable split list: {err}")
        return out
    bad = 0
    for i, line in enumerate(lines):
        m = LIST_LINE_RE.match(line.strip())
        if m:
            out.append((i, line, m["video"], int(m["frame"])))
        elif line.strip():
            bad += 1
    if bad:
        report.skip(path, f"{bad} lines are not <video>/<frame>; those lines are not kept")
    return out


# ---------------------------------------------------------------------------------------- VRE
def looks_like_vre_output(src: Path) -> bool:
    """True for a VRE output folder: some <repr>/.repr_metadata.json or <repr>/npz/<frame>.npz."""
    for sub in src.iterdir():
        npz = sub / "npz"
        if sub.is_dir() and not sub.is_symlink() and ((sub / ".repr_metadata.json").is_file() or (
                npz.is_dir() and not npz.is_symlink() and any(VRE_FILE_RE.match(p.name) for p in npz.iterdir()))):
            return True
    return False


def import_vre(src: Path, out: Path, config: Path | None = None, classes: Mapping[str, str] | None = None) -> dict:
    """`vre import vre DIR -o STORE`: a VRE output folder -> one store.

    Frame numbers are VRE's (the file names). With VRE's metadata (`<repr>/.repr_metadata.json`),
    the store spans the whole video, as `vre run` would make it, and only frames the metadata lists
    as computed are taken; without it, positions are the frames present (`_index/frame_number`).
    Types, parameters and dependencies come from VRE's config (`--config`, the YAML given to `vre`),
    classes from the representation's type (Mask2Former's checkpoint id names Mapillary or COCO).
    """
    t0 = time.perf_counter()
    src = Path(src).resolve()
    if not src.is_dir():
        raise VreError(f"{src}: not a directory; pass the folder given to `vre ... -o`")
    report = Report(src)
    cfg = _read_vre_config(config) if config else {}
    run_meta = _read_run_metadata(src, report)
    video = Video(store_stem(out), Path(out))
    lengths = []
    repr_dirs, files = entries(src, src, report)
    for path in files:
        report.ignore(path)
    for repr_dir in repr_dirs:
        if repr_dir.name.startswith(".") or not NAME_RE.match(repr_dir.name) or repr_dir.name in RESERVED_NAMES:
            if repr_dir.name != ".logs":
                report.ignore(repr_dir)
            continue
        mod, n_frames = _scan_repr(src, repr_dir, cfg, report)
        if mod is not None:
            video.modalities[mod.name] = mod
            if n_frames:
                lengths.append(n_frames)
    if not video.modalities:
        raise VreError(f"{src}: no <repr>/npz/<frame>.npz file found; pass the folder given to `vre ... -o`")
    if config:
        missing = set(video.modalities) - set(cfg)
        if missing:
            raise VreError(f"{config}: has no representation {', '.join(sorted(missing))} of {src}; pass "
                           f"the config that made this folder")
    if lengths:
        video.n_frames = max(lengths + [max(f for m in video.modalities.values() for f in m.files) + 1])
    video.imported_from = {"format": "vre", "path": str(src), "config": str(config) if config else None,
                           "run_ids": run_meta.get("ids", [])}
    video.video_meta = run_meta.get("video", {})
    summary = run_import([video], classes or {}, report, t0)
    return {"out": str(out), **summary}


def store_stem(path: Path) -> str:
    name = Path(path).name
    return name[:-5] if name.endswith(".zarr") else name


def _read_vre_config(path: Path) -> dict:
    """{repr name: {type, dependencies, parameters}} of a VRE config file; VreError if unreadable."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
        reprs = doc["representations"]
        if not isinstance(reprs, dict):
            raise TypeError("representations is not a mapping")
        return {str(k): dict(v) for k, v in reprs.items()}
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        raise VreError(f"{path}: not a VRE config with a 'representations' mapping ({err})") from None


def _read_run_metadata(src: Path, report: Report) -> dict:
    """Video facts and run ids from `.logs/run_metadata-*.json` (the latest run's video)."""
    logs = src / ".logs"
    out = {"ids": []}
    if not logs.is_dir() or logs.is_symlink():
        return out
    _, files = entries(logs, src, report)
    for path in files:
        if not (path.name.startswith("run_metadata-") and path.suffix == ".json"):
            report.ignore(path)
            continue
        try:
            doc = json.loads(path.read_text())
            args = doc["runtime_args"]
            shape = [int(v) for v in re.findall(r"\d+", str(args.get("video_shape", "")))]
            out["ids"].append(str(doc.get("id")))
            if len(shape) == 4:
                out["video"] = {"path": str(args.get("video_path", "")), "n_frames_video": shape[0],
                                "fps": float(args.get("video_fps") or 0.0)}
        except (OSError, ValueError, KeyError, TypeError) as err:
            report.skip(path, f"unreadable VRE run metadata: {err}")
    return out


def _scan_repr(src: Path, repr_dir: Path, cfg: Mapping, report: Report) -> tuple[Modality | None, int]:
    """One representation folder -> (its modality or None, the video length its metadata states)."""
    name = repr_dir.name
    mod = Modality(name)
    computed, n_frames = None, 0
    meta_path = repr_dir / ".repr_metadata.json"
    if meta_path.is_file() and not meta_path.is_symlink():
        try:
            stats = json.loads(meta_path.read_text())["run_stats"]
            n_frames = max(int(k) for k in stats) + 1 if stats else 0
            computed = {int(k) for k, v in stats.items() if v and v.get("duration") is not None}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            report.skip(meta_path, f"unreadable VRE metadata ({err}); every frame file is taken")
    subdirs, files = entries(repr_dir, src, report)
    for path in files:
        if path != meta_path:
            report.ignore(path)
    for sub in subdirs:
        if sub.name not in ("npz", "npy"):
            report.ignore(sub)  # png/, jpg/: pictures of the same frames
            continue
        for path in walk(sub, src, report):
            m = VRE_FILE_RE.match(path.name)
            if not m:
                report.ignore(path)  # <frame>_extra.npz and the like
                continue
            frame = int(m["frame"])
            if computed is not None and frame not in computed:
                report.skip(path, f"VRE's metadata does not list frame {frame} of '{name}' as computed "
                                  f"(a killed run?); rerun VRE with --output_dir_exists_mode skip_computed")
                continue
            mod.files[frame].append(("", path))
    if not mod.files:
        return None, n_frames
    mod.hints = _vre_hints(cfg.get(name))
    return mod, n_frames


def _vre_hints(spec: Mapping | None) -> dict:
    """Array attrs from a representation's entry in VRE's config (type, params, deps, kind, classes)."""
    if not spec:
        return {}
    vre_type = str(spec.get("type", ""))
    params = dict(spec.get("parameters") or {})
    hints = {"params": params, "deps": list(spec.get("dependencies") or []), "source": f"vre/{vre_type}"}
    kind = VRE_KINDS.get(vre_type.split("/")[0])
    if kind:
        hints["kind"] = kind
    if kind == "semantic":
        model = str(params.get("model_id", ""))
        name = "mapillary" if model.startswith("49189528") else "coco" if model.startswith("47429163") else \
            "dronescapes"
        hints["classes"], hints["palette"] = class_set(name)
        if not params.get("disk_data_argmax", vre_type.endswith("safeuav")):
            hints["kind"] = "features"  # per-class scores [H,W,K], not a class map
    if kind == "depth":
        hints["quantity"] = RELATIVE_DEPTH  # VRE's depth/dpt and depth/marigold write relative depth in [0, 1]
    if vre_type.startswith("edges/") or vre_type == "color/hsv":
        hints["value_range"] = [0, 1]
    return hints
