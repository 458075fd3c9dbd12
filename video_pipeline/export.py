"""The Dronescapes layout: export stores to it, and the split files export and training use.

Layout (one file per frame and modality):
    DIR/<split>/<modality>/<video>_<frame>.npz   the frame under the key `arr_0`, in the format the
                                                  public dataset and VRE's readers hold for its kind
                                                  (npzfile.file_format), deflated
    DIR/<split>/<modality>.json                   the modality's description (array attrs, the file
                                                  format, for depth the quantity and its units)
    DIR/<split>.txt                               the split list: `<video>/<frame>` per line
The public Dronescapes dataset has the same tree (split folders such as train_set, test_set and
their _annotated_only variants; modality folders may hold part0/, part1/ subfolders), without the
descriptions; its split lists are `*.txt` files beside the split folders. `vre import dronescapes`
(importer.py) reads it; an imported store exported without a split file gives back the same files.

Split file (YAML): split name -> video (store name) -> frames, as `all`, `A..B` (end-exclusive,
`A..` to the end), a frame number, or a list of those:
    train: {barsana_DJI_0500: [0..900, 1200..], comana_DJI_0881: all}
    test:  {barsana_DJI_0500: [900..1200]}
"""
from __future__ import annotations

import json
import os
import re
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from video_pipeline.errors import RecipeError, StoreError, VreError
from video_pipeline.npzfile import NEW_FILE, FileFormat, ZipFacts, file_format, npz_bytes
from video_pipeline.quantities import METRIC_DEPTH, QUANTITIES
from video_pipeline.store import VideoStore, shard_groups, store_name
from video_pipeline.yamlio import LineDict, load_yaml

ALL = "all"  # the split every frame goes to without a split file
VOLATILE_ATTRS = ("statistics", "skipped", "revision")  # array attrs that are not a description
SPLIT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")  # \Z: "$" would let a final newline in
RANGE_RE = re.compile(r"^(\d*)\.\.(\d*)$")
LIST_LINE_RE = re.compile(r"^(?P<video>[^/\s]+)/(?P<frame>\d+)$")  # a split list line: <video>/<frame>

# ---------------------------------------------------------------------------------------- split files
def load_splits(path: Path | Sequence[Path]) -> dict[str, dict[str, list]]:
    """Read split files: {split: {video: [all | (start, stop|None) | frame number, ...]}}.

    A YAML file names its splits; a `.txt` split list (the public dataset's `train_files_*.txt`,
    one `<video>/<frame>` per line) is one split named by its file stem. Several files are merged;
    a split name may appear once. Raises RecipeError `FILE:LINE: what is wrong`.
    """
    paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    out: dict[str, dict[str, list]] = {}
    for one in paths:
        for split, videos in (_load_list(one) if one.suffix == ".txt" else _load_yaml_splits(one)).items():
            if split in out:
                raise RecipeError(f"{one}: split '{split}' is already named by another split file")
            out[split] = videos
    return out


def _load_list(path: Path) -> dict[str, dict[str, list]]:
    """A `.txt` split list -> {stem: {video: [frame, ...]}}."""
    if not SPLIT_NAME_RE.match(path.stem):
        raise RecipeError(f"{path}: split name {path.stem!r} must be a folder name (letters, digits, _ . -)")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"{path}: cannot read the split list ({err})") from None
    videos: dict[str, list] = {}
    for number, line in enumerate(lines, 1):
        m = LIST_LINE_RE.match(line.strip())
        if m:
            videos.setdefault(m["video"], []).append(int(m["frame"]))
        elif line.strip():
            raise RecipeError(f"{path}:{number}: {line.strip()[:80]!r} is not <video>/<frame>")
    return {path.stem: videos}


def _load_yaml_splits(path: Path) -> dict[str, dict[str, list]]:
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


# ---------------------------------------------------------------------------------------- files
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


def description(attrs: Mapping, name: str, fmt: FileFormat) -> dict:
    """The description written next to a modality folder: its array attrs, the file format, and for
    a depth-like modality what its numbers mean (quantity, meaning, units; null when unknown)."""
    desc = {k: v for k, v in attrs.items() if k not in VOLATILE_ATTRS}
    desc["name"] = name
    desc["file"] = fmt.to_attrs()
    if attrs.get("kind") == "depth":
        quantity = attrs.get("quantity")
        desc.update(quantity=quantity, quantity_meaning=QUANTITIES.get(quantity, "not recorded by what made it"),
                    units="m" if quantity == METRIC_DEPTH else None)
    return desc


# ---------------------------------------------------------------------------------------- export
def export_dronescapes(stores: list[Path], out_dir: Path, splits: Path | Sequence[Path] | None, n_jobs: int,
                       modalities: list[str] | None) -> dict:
    """`vre export dronescapes`: write stores in the Dronescapes layout; returns a JSON-safe summary.

    Only computed (done) frames are written; frames a split selects but a modality lacks are
    counted under "missing". Without a split file, a store imported from the Dronescapes layout
    goes back to the split folders (and its split lists to the list files) it came from, every
    other store to `all/`; an imported file is rewritten with its own bytes. A rerun skips files
    that already hold identical bytes. Work is split in shard-aligned blocks of frames, run on
    `n_jobs` joblib processes.
    """
    from joblib import Parallel, delayed

    t0 = time.perf_counter()
    split_spec = load_splits(splits) if splits else None
    if n_jobs < 1:
        raise VreError(f"--jobs must be at least 1, got {n_jobs}")
    tasks, lists, missing, descriptions, unlisted = [], defaultdict(set), {}, {}, []
    recorded_lists: dict[str, list] = defaultdict(list)
    seen = {}
    for path in stores:
        store = VideoStore.open(path)
        video = store_name(store.path)
        if video in seen:
            raise VreError(f"{store.path} and {seen[video]} are both video '{video}'; export them separately")
        seen[video] = store.path
        available = store.names
        names = modalities or available
        for name in names:
            if name not in available:
                raise StoreError(f"{store.path}: has no modality '{name}' (it has: {', '.join(available)}); "
                                 f"drop it from --modalities")
        store.require_intact(names)
        numbers = store.frame_numbers()
        folders = None if split_spec else recorded_folders(store)
        if split_spec:
            masks = {s: split_mask(v.get(video), numbers) for s, v in split_spec.items()}
            if not any(video in v for v in split_spec.values()):
                unlisted.append(video)
        elif folders is not None:
            masks = {s: np.isin(numbers, store.meta["splits"].get(s, [])) for s in folders}
            for list_name, lines in store.meta["imported_from"].get("split_lists", {}).items():
                recorded_lists[list_name].extend(lines)
        else:
            masks = {ALL: np.ones(len(numbers), bool)}
        selected = np.logical_or.reduce(list(masks.values())) if masks else np.zeros(len(numbers), bool)
        for name in names:
            attrs = dict(store.array(name).attrs)
            done = store.done_frames(name)
            lacking = int((selected & ~done).sum())
            if lacking:
                missing.setdefault(video, {})[name] = lacking
            for split, mask in masks.items():
                if folders is None:
                    lists[split].update((video, int(numbers[pos])) for pos in np.flatnonzero(mask & done))
                if (mask & done).any():
                    _merge_description(descriptions, (split, name), attrs, store.path)
        for positions in shard_groups(np.flatnonzero(selected), store.shard_frames).values():
            tasks.append((str(store.path), video, names, positions,
                          {s: np.flatnonzero(m[positions]) for s, m in masks.items() if m[positions].any()}))
    remove_stale_partials(out_dir)
    results = Parallel(n_jobs=n_jobs)(delayed(_export_block)(out_dir, *task) for task in tasks)
    written = sum(r["written"] for r in results)
    unchanged = sum(r["unchanged"] for r in results)
    formats = {key: fmt for r in results for key, fmt in r["formats"].items()}
    texts = {f"{split}/{name}.json": json.dumps(description(attrs, name, formats[(split, name)]), indent=1,
                                                  sort_keys=True) + "\n"
             for (split, name), attrs in descriptions.items()}
    texts.update({f"{split}.txt": "".join(f"{v}/{f}\n" for v, f in sorted(entries))
                  for split, entries in lists.items()})
    texts.update({name: "".join(f"{text}\n" for _, text in sorted(lines)) for name, lines in recorded_lists.items()})
    for rel, text in texts.items():
        changed = write_if_changed(out_dir / rel, text.encode())
        written, unchanged = written + changed, unchanged + (not changed)
    return {"out": str(out_dir), "stores": list(seen), "splits": {s: int(m) for s, m in _split_sizes(tasks).items()},
            "written": written, "unchanged": unchanged, "missing": missing, "not_in_splits": unlisted,
            "jobs": n_jobs, "seconds": round(time.perf_counter() - t0, 2)}


def recorded_folders(store: VideoStore) -> list[str] | None:
    """The split folders an import from the Dronescapes layout recorded, or None."""
    source = store.meta.get("imported_from") or {}
    folders = source.get("split_folders")
    return list(folders) if source.get("format") == "dronescapes" and folders else None


def _split_sizes(tasks: list) -> dict[str, int]:
    """Frames per split over all export blocks."""
    sizes: dict[str, int] = defaultdict(int)
    for *_, splits in tasks:
        for split, rows in splits.items():
            sizes[split] += len(rows)
    return dict(sorted(sizes.items()))


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
    folders = recorded_folders(store) or []
    written = unchanged = 0
    formats = {}
    for name in names:
        arr_handle = store.array(name)
        attrs = dict(arr_handle.attrs)
        fmt = file_format(attrs, str(arr_handle.dtype), int(arr_handle.shape[-1]))
        facts = store.file_facts(name, int(positions[0]), int(positions[-1]) + 1)  # this block's rows
        subfolders = list((attrs.get("file") or {}).get("folders") or [])
        done = store.done_frames(name)[positions]
        if not done.any():
            continue
        data = store.read(name, positions[done])
        row = np.cumsum(done) - 1  # row of `data` holding position r (where done)
        encoded = {}  # a frame in several splits is encoded once
        for split, rows in splits.items():
            formats[(split, name)] = fmt
            for r in rows[done[rows]]:
                if r not in encoded:
                    encoded[r] = fmt.encode(data[row[r]])
                zip_facts, folder = NEW_FILE, ""
                if facts is not None:
                    kept = facts[positions[r] - positions[0]]
                    choice = folders.index(split) if split in folders else int(np.argmax(kept[:, 0] >= 0))
                    zip_facts = ZipFacts.unpack(kept[choice, :ZipFacts.WIDTH]) or NEW_FILE
                    folder = subfolders[kept[choice, -1]] + "/" if kept[choice, -1] >= 0 else ""
                path = out_dir / split / name / f"{folder}{video}_{int(numbers[r])}.npz"
                if write_if_changed(path, npz_bytes(encoded[r], zip_facts)):
                    written += 1
                else:
                    unchanged += 1
    return {"written": written, "unchanged": unchanged, "formats": formats}
