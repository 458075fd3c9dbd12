"""Reading stores for training: a map-style torch Dataset over video stores, and the statistics it
normalizes with (computed once per modality in a streaming pass, cached in the store).

An item of `StoreDataset` is
    {<modality>: float32 [C,H,W]      (class maps: int64 [H,W], or float32 one-hot [K,H,W]),
     "store": store name, "frame": frame number (the original one for imported sparse stores),
     "present": bool [M], which of `dataset.modalities` were read (the others are filled)};
with `compact=True` the modalities are the stored frames and `dataset.to_float` converts batches.

A DataLoader reads whole batches through `StoreDataset.__getitems__` (one tensor per modality,
decoded in place; in workers, shared memory reused from batch to batch: `video_pipeline.slabs`).
`python -m video_pipeline.dataset --bench [STORE]` (= `python -m video_pipeline.bench.loader`)
measures the DataLoader throughput.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data._utils.collate import collate, default_collate_fn_map

from video_pipeline.errors import VreError
from video_pipeline.export import load_splits, split_mask
from video_pipeline.imageops import resize
from video_pipeline.slabs import SharedBatch, Slab, SlabPool, worker_pool
from video_pipeline.store import FrameReader, VideoStore, contiguous_runs, store_name

NORMALIZATIONS = ("none", "min_max", "standardization")
MISSING = ("raise", "drop", "fill_zero", "fill_nan")
ITEM_KEYS = ("store", "frame", "present")  # item keys besides the modalities
LABEL_FILL = 255  # the store's "no label" value: class maps of fill_nan samples take it


# ---------------------------------------------------------------------------------------- store facts
def is_class_map(attrs: Mapping) -> bool:
    """A semantic map of class indices (one channel), as opposed to class probabilities."""
    return attrs.get("kind") == "semantic" and int(attrs.get("channels", 1)) == 1


# ---------------------------------------------------------------------------------------- statistics
CACHE_ATTRS = ("statistics",)  # attrs this module writes: not part of the fingerprint


def fingerprint(store: VideoStore, name: str) -> str:
    """A digest that changes whenever array `name` may have changed.

    It covers the array's shape, dtype and attrs (provenance: type, params, weights, a "revision"
    counter if a writer keeps one), its done flags, and the inode, size and modification time of
    every data file: any rewrite of a shard, by our runner or by plain zarr, writes a new file and
    renames it over the old one, so the inode changes even within one timestamp tick. Copying a
    store changes them too: statistics are then recomputed, never stale.
    """
    arr = store.array(name)
    attrs = {k: v for k, v in arr.attrs.items() if k not in CACHE_ATTRS}
    digest = hashlib.sha256(json.dumps([list(arr.shape), str(arr.dtype), attrs], sort_keys=True,
                                       default=str).encode())
    digest.update(store.done_frames(name).tobytes())
    root = store.path / name
    for dirpath, dirnames, files in os.walk(root):
        dirnames.sort()
        for f in sorted(files):
            if f == "zarr.json" and dirpath == str(root):
                continue  # metadata: covered by shape/dtype/attrs above (and holds the cache itself)
            try:
                st = os.stat(os.path.join(dirpath, f))
            except FileNotFoundError:  # a writer's temporary file, renamed since the listing
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), root)
            digest.update(f"{rel}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class _Moments:
    """Streaming per-channel count, min, max, mean and sum of squared deviations (float64).

    Blocks are merged with the pairwise update of Chan et al., which stays exact where a running
    sum of squares would cancel catastrophically.
    """

    def __init__(self, channels: int):
        self.n = np.zeros(channels, np.int64)
        self.min = np.full(channels, np.inf)
        self.max = np.full(channels, -np.inf)
        self.mean = np.zeros(channels)
        self.m2 = np.zeros(channels)

    def add(self, values: np.ndarray) -> None:
        """Merge values [P, C] of one block (non-finite values are ignored)."""
        x = values.astype(np.float64)
        finite = np.isfinite(x)
        if finite.all():
            n = np.full(x.shape[1], len(x), np.int64)
            if not len(x):
                return
            mean = x.mean(axis=0)
            m2 = ((x - mean) ** 2).sum(axis=0)
            lo, hi = x.min(axis=0), x.max(axis=0)
        else:
            n = finite.sum(axis=0)
            safe = np.where(finite, x, 0.0)
            mean = safe.sum(axis=0) / np.maximum(n, 1)
            m2 = (np.where(finite, x - mean, 0.0) ** 2).sum(axis=0)
            lo = np.where(finite, x, np.inf).min(axis=0)
            hi = np.where(finite, x, -np.inf).max(axis=0)
        total = self.n + n
        delta = mean - self.mean
        weight = np.divide(n, total, out=np.zeros(len(n)), where=total > 0)
        self.m2 += m2 + delta ** 2 * self.n * weight
        self.mean += delta * weight
        self.n = total
        self.min = np.minimum(self.min, lo)
        self.max = np.maximum(self.max, hi)

    def result(self) -> dict:
        """{count, min, max, mean, std} per channel (population std); None where a channel is empty."""
        def vals(a):
            return [float(v) if n else None for v, n in zip(a, self.n)]
        std = np.sqrt(np.divide(self.m2, self.n, out=np.zeros(len(self.n)), where=self.n > 0))
        return {"count": [int(n) for n in self.n], "min": vals(self.min), "max": vals(self.max),
                "mean": vals(self.mean), "std": vals(std)}


def _histogram_stats(hist: np.ndarray) -> dict:
    """Exact {count, min, max, mean, std} per channel from uint8 value counts int64 [C, 256]."""
    values = np.arange(hist.shape[1], dtype=np.float64)
    out = {"count": [], "min": [], "max": [], "mean": [], "std": []}
    for h in hist:
        n = int(h.sum())
        out["count"].append(n)
        if not n:
            for key in ("min", "max", "mean", "std"):
                out[key].append(None)
            continue
        nz = np.flatnonzero(h)
        mean = float(h @ values) / n
        out["min"].append(float(nz[0]))
        out["max"].append(float(nz[-1]))
        out["mean"].append(mean)
        out["std"].append(math.sqrt(float(h @ (values - mean) ** 2) / n))
    return out


def _label_histogram(counts: np.ndarray, attrs: Mapping) -> dict:
    """{labels, counts, other} of a class or binary map from its value counts int64 [256]."""
    labels = list(attrs.get("classes") or [])
    if attrs.get("kind") == "binary" and not labels:
        labels = ["0", "1"]
    if not labels:  # an imported class map without class names: one label per value seen
        labels = [str(v) for v in range(int(np.flatnonzero(counts)[-1]) + 1 if counts.any() else 0)]
    k = len(labels)
    return {"labels": labels, "counts": [int(c) for c in counts[:k]], "other": int(counts[k:].sum())}


def measure(store: VideoStore, name: str) -> dict:
    """Statistics of array `name` over its done frames, in one streaming pass (a shard at a time).

    Returns {frames, count, min, max, mean, std} (lists over channels; std is the population std)
    and, for uint8 class maps and binary maps, "histogram": {labels, counts, other} where `other`
    counts values outside the labels (255 = no label).
    """
    arr = store.array(name)
    attrs = dict(arr.attrs)
    channels = arr.shape[3]
    done = np.flatnonzero(store.done_frames(name))
    integer = arr.dtype == np.uint8
    hist = np.zeros((channels, 256), np.int64)
    moments = _Moments(channels)
    offsets = (np.arange(channels, dtype=np.int32) * 256)
    for _, start, stop in contiguous_runs(done) if len(done) else []:
        for a in range(start, stop, store.shard_frames):
            block = arr[a:min(stop, a + store.shard_frames)]
            for frame in block:
                flat = frame.reshape(-1, channels)
                if integer:
                    hist += np.bincount((flat + offsets).ravel(),
                                        minlength=256 * channels).reshape(channels, 256)
                else:
                    moments.add(flat)
    out = {"frames": int(len(done)), **(_histogram_stats(hist) if integer else moments.result())}
    if integer and (is_class_map(attrs) or attrs.get("kind") == "binary"):
        out["histogram"] = _label_histogram(hist.sum(axis=0), attrs)
    return out


def modality_stats(store: VideoStore, name: str, recompute: bool = False) -> dict:
    """Cached statistics of `name` (see `measure`), recomputed when its fingerprint changed.

    The result is cached in the array's attrs["statistics"] (with the fingerprint); a store that
    cannot be written gets its statistics computed every time, with a warning.
    """
    fp = fingerprint(store, name)
    cached = store.array(name).attrs.get("statistics")
    if not recompute and isinstance(cached, dict) and cached.get("fingerprint") == fp:
        return cached
    stats = {"fingerprint": fp, **measure(store, name)}
    try:
        store.cache_attr(name, "statistics", stats)
    except (OSError, ValueError) as err:
        warnings.warn(f"{store.path}/{name}: statistics not cached (store not writable: {err})",
                      stacklevel=2)
    return stats


def compute_stats(store_path: str | Path, recompute: bool = False) -> dict:
    """`vre stats`: {modality: statistics} of every modality of a store (cached, see modality_stats)."""
    store = VideoStore.open(store_path)
    store.require_intact()
    return {name: modality_stats(store, name, recompute) for name in store.names}


def format_stats(store_path: str | Path, stats: Mapping[str, Mapping]) -> str:
    """Human-readable table of `compute_stats` output."""
    lines = [f"{store_path}: statistics over the done frames of each modality"]
    for name, s in stats.items():
        lines.append(f"  {name}  ({s['frames']} frames)")
        hist = s.get("histogram")
        if hist:
            total = sum(hist["counts"]) + hist["other"]
            for label, count in zip(hist["labels"], hist["counts"]):
                lines.append(f"    {label:<24}{count:>14}  {count / max(total, 1):8.2%}")
            if hist["other"]:
                lines.append(f"    {'(other values)':<24}{hist['other']:>14}  {hist['other'] / total:8.2%}")
            continue
        lines.append(f"    {'channel':<8}{'min':>12}{'max':>12}{'mean':>12}{'std':>12}")
        for c in range(len(s["count"])):
            cells = "".join(f"{v:>12.5g}" if v is not None else f"{'-':>12}"
                            for v in (s["min"][c], s["max"][c], s["mean"][c], s["std"][c]))
            lines.append(f"    {c:<8}{cells}")
    return "\n".join(lines)


def merge_stats(parts: Sequence[Mapping]) -> dict:
    """Combine per-store statistics of one modality into {count, min, max, mean, std} per channel."""
    channels = len(parts[0]["count"])
    n = np.zeros(channels)
    lo, hi = np.full(channels, np.inf), np.full(channels, -np.inf)
    mean_sum, sq_sum = np.zeros(channels), np.zeros(channels)
    for p in parts:
        pn = np.asarray(p["count"], np.float64)
        have = pn > 0
        pm = np.where(have, np.asarray([v or 0.0 for v in p["mean"]]), 0.0)
        ps = np.where(have, np.asarray([v or 0.0 for v in p["std"]]), 0.0)
        n += pn
        mean_sum += pn * pm
        sq_sum += pn * (ps ** 2 + pm ** 2)
        lo = np.minimum(lo, np.where(have, [v if v is not None else np.inf for v in p["min"]], np.inf))
        hi = np.maximum(hi, np.where(have, [v if v is not None else -np.inf for v in p["max"]], -np.inf))
    mean = np.divide(mean_sum, n, out=np.zeros(channels), where=n > 0)
    var = np.maximum(np.divide(sq_sum, n, out=np.zeros(channels), where=n > 0) - mean ** 2, 0.0)
    return {"count": n.astype(np.int64).tolist(), "min": lo.tolist(), "max": hi.tolist(),
            "mean": mean.tolist(), "std": np.sqrt(var).tolist()}


# ---------------------------------------------------------------------------------------- dataset
@dataclass(frozen=True)
class ModalitySpec:
    """What a modality holds, as the dataset returns it."""

    kind: str
    channels: int                    # stored channels
    dtype: str                       # stored dtype: uint8, float16 or float32
    classes: tuple[str, ...] = ()
    palette: tuple[tuple[int, ...], ...] = ()
    class_map: bool = False          # int64 [H,W] class indices (one-hot float32 [K,H,W] on request)
    one_hot: bool = False

    @property
    def out_channels(self) -> int:
        return len(self.classes) if self.one_hot else self.channels


def _frames_mask(frames, numbers: np.ndarray, where: str) -> np.ndarray:
    """bool [T]: positions whose frame number is selected by `frames` (None, a range, or numbers)."""
    if frames is None:
        return np.ones(len(numbers), bool)
    if isinstance(frames, range):
        return ((numbers >= frames.start) & (numbers < frames.stop)
                & ((numbers - frames.start) % frames.step == 0))
    wanted = np.asarray(list(frames), dtype=np.int64)
    absent = np.setdiff1d(wanted, numbers)
    if len(absent):
        raise VreError(f"{where}: has no frame {int(absent[0])}"
                       + (f" (nor {len(absent) - 1} more of the asked frames)" if len(absent) > 1 else "")
                       + f"; its frames are {_describe_numbers(numbers)}")
    return np.isin(numbers, wanted)


def _describe_numbers(numbers: np.ndarray) -> str:
    if not len(numbers):
        return "none"
    if len(numbers) == numbers[-1] - numbers[0] + 1:
        return f"{numbers[0]}..{numbers[-1] + 1}"
    return f"{len(numbers)} frames between {numbers[0]} and {numbers[-1]}"


class StoreDataset(torch.utils.data.Dataset):
    """Samples (store, frame) of one or many video stores, each with every asked modality.

    Args:
      stores: store path(s), one per video.
      modalities: names to read (default: every modality of any of the stores, first-seen order).
      frames: frame numbers to use in every store: None (all), a range, or a list (each must exist).
      split: a split name: its frames per video come from `splits_file` (the YAML of
        `vre export dronescapes --splits`) or, without one, from the split lists an import recorded
        in the store (attrs video_pipeline.splits). Combined with `frames` when both are given.
      resolution: (H, W) every modality is resized to (nearest for class/binary maps); default: stored.
      normalization: none | min_max | standardization, for all modalities or per modality
        ({name: mode}); class maps are never normalized. Uses the cached statistics of the stores
        (merged over stores), or `statistics` ({name: {min, max, mean, std}}, e.g. a checkpoint's).
      missing: what to do with a frame a modality lacks (not computed, or absent from a store):
        raise (at construction, naming the first one), drop (the sample), fill_zero or fill_nan
        (class maps: 0 or 255); `item["present"]` tells which were read.
      one_hot: class maps as float32 one-hot [K,H,W]: True for all, or a collection of names.
      crop: (h, w) random window, the same for every modality of a sample (after resizing).
      compact: items hold the stored frames ([H,W,C] uint8 / float16 as stored, missing modalities
        at the store's fill value): a third of the bytes to move from workers, no conversion in
        them. `dataset.to_float(batch, device)` then makes the float32 form on the training device.
    """

    def __init__(self, stores: str | Path | Iterable[str | Path], modalities: Sequence[str] | None = None,
                 frames: range | Sequence[int] | None = None, split: str | None = None,
                 splits_file: str | Path | None = None, resolution: tuple[int, int] | None = None,
                 normalization: str | Mapping[str, str] = "none", missing: str = "raise",
                 one_hot: bool | Iterable[str] = False, crop: tuple[int, int] | None = None,
                 statistics: Mapping[str, Mapping] | None = None, compact: bool = False):
        paths = [Path(stores)] if isinstance(stores, (str, Path)) else [Path(s) for s in stores]
        if not paths:
            raise VreError("StoreDataset needs at least one store")
        if missing not in MISSING:
            raise VreError(f"missing={missing!r}: use one of {', '.join(MISSING)}")
        opened = [VideoStore.open(p) for p in paths]
        self.paths = [s.path for s in opened]
        self.store_names = [store_name(p) for p in self.paths]
        self.missing = missing
        self.compact = compact
        self.modalities = list(modalities) if modalities is not None else list(
            dict.fromkeys(n for s in opened for n in s.names))
        for store in opened:  # never read a missing or truncated shard back as fill values
            store.require_intact(self.modalities)
        self.specs = self._specs(opened, one_hot)
        self.resolution = tuple(resolution) if resolution else None
        self.crop = tuple(crop) if crop else None
        self.size = self._output_size(opened)
        self._index(opened, frames, split, Path(splits_file) if splits_file else None)
        self.normalization = self._normalization(normalization)
        self.statistics = self._statistics(opened, statistics)
        self._shift_scale = self._affine()
        self._readers: dict[int, dict[str, FrameReader]] = {}
        self._scratch: dict[tuple[int, str], torch.UntypedStorage] = {}
        self._pid = None
        self._rng = None

    # ------------------------------------------------------------------ construction
    def _specs(self, stores: list[VideoStore], one_hot) -> dict[str, ModalitySpec]:
        for name in self.modalities:
            if name in ITEM_KEYS:
                raise VreError(f"modality '{name}' clashes with the item key '{name}'; rename it in the store")
        specs = {}
        for name in self.modalities:
            found = [(s, dict(s.array(name).attrs), s.array(name).shape[3]) for s in stores if name in s.names]
            if not found:
                raise VreError(f"modality '{name}' is in none of the stores "
                               f"({', '.join(str(s.path) for s in stores)})")
            s0, attrs, channels = found[0]
            dtype = str(s0.array(name).dtype)
            for s, other, ch in found[1:]:
                if (ch, str(s.array(name).dtype), is_class_map(other)) != (channels, dtype, is_class_map(attrs)):
                    raise VreError(f"{s.path}/{name}: {ch} channels {s.array(name).dtype} "
                                   f"({other.get('kind')}) but {s0.path}/{name} has {channels} {dtype} "
                                   f"({attrs.get('kind')}); one dataset needs one layout per modality")
            wants = one_hot if isinstance(one_hot, bool) else name in set(one_hot)
            class_map = is_class_map(attrs)
            if not isinstance(one_hot, bool) and wants and not class_map:
                raise VreError(f"one_hot: '{name}' is not a class map (kind {attrs.get('kind')}, "
                               f"{channels} channels)")
            if wants and class_map and not attrs.get("classes"):
                raise VreError(f"{s0.path}/{name}: one-hot needs the class names, and the array attrs "
                               f"have none")
            specs[name] = ModalitySpec(kind=attrs.get("kind", "features"), channels=channels, dtype=dtype,
                                       classes=tuple(attrs.get("classes") or ()),
                                       palette=tuple(tuple(c) for c in attrs.get("palette") or ()),
                                       class_map=class_map, one_hot=bool(wants and class_map))
        return specs

    def _output_size(self, stores: list[VideoStore]) -> tuple[int, int]:
        """(H, W) of every sample before cropping: `resolution`, or the one size all are stored at."""
        sizes = {tuple(s.array(n).shape[1:3]) for s in stores for n in self.modalities if n in s.names}
        if self.resolution is None and len(sizes) > 1:
            raise VreError(f"the modalities are stored at different sizes ({sorted(sizes)}); "
                           f"pass resolution=(H, W)")
        out = self.resolution or next(iter(sizes))
        if self.crop and (self.crop[0] > out[0] or self.crop[1] > out[1]):
            raise VreError(f"crop {self.crop} is larger than the frames ({out[0]}x{out[1]})")
        return out

    def _index(self, stores: list[VideoStore], frames, split: str | None, splits_file: Path | None) -> None:
        """Build the sample table: store, position, frame number, present [M] per sample."""
        splits = load_splits(splits_file) if splits_file else None
        store_idx, positions, numbers_out, present = [], [], [], []
        for s, store in enumerate(stores):
            numbers = store.frame_numbers()
            mask = _frames_mask(frames, numbers, str(store.path))
            if split is not None:
                mask &= self._split_mask(store, numbers, split, splits, splits_file)
            pos = np.flatnonzero(mask)
            have = np.stack([store.done_frames(n)[pos] if n in store.names else np.zeros(len(pos), bool)
                             for n in self.modalities], axis=1) if len(pos) else np.zeros((0, len(self.modalities)), bool)
            if self.missing == "raise" and not have.all():
                row, col = np.argwhere(~have)[0]
                name = self.modalities[col]
                why = ("is not in the store" if name not in store.names
                       else f"is not computed at frame {numbers[pos[row]]}")
                raise VreError(f"{store.path}: modality '{name}' {why} ({int((~have).sum())} missing "
                               f"sample-modalities in this store); compute it with `vre run`, or pass "
                               f"missing='drop', 'fill_zero' or 'fill_nan'")
            if self.missing == "drop":
                keep = have.all(axis=1)
                pos, have = pos[keep], have[keep]
            store_idx.append(np.full(len(pos), s, np.int32))
            positions.append(pos.astype(np.int64))
            numbers_out.append(numbers[pos])
            present.append(have)
        self._store = np.concatenate(store_idx)
        self._pos = np.concatenate(positions)
        self._frame = np.concatenate(numbers_out)
        self._present = np.concatenate(present)
        if not len(self._pos):
            what = f"split '{split}'" if split is not None else "the asked frames"
            raise VreError(f"no sample left: {what} select no frame with every modality present in "
                           f"{', '.join(map(str, self.paths))}")

    @staticmethod
    def _split_mask(store: VideoStore, numbers: np.ndarray, split: str, splits, splits_file) -> np.ndarray:
        name = store_name(store.path)
        if splits is not None:
            if split not in splits:
                raise VreError(f"{splits_file}: has no split '{split}' (it has: {', '.join(splits)})")
            return split_mask(splits[split].get(name), numbers)
        recorded = store.meta.get("splits") or {}
        return np.isin(numbers, np.asarray(recorded.get(split, []), np.int64))

    def _normalization(self, normalization) -> dict[str, str]:
        if isinstance(normalization, str):
            modes = {n: normalization for n in self.modalities}
        else:
            unknown = set(normalization) - set(self.modalities)
            if unknown:
                raise VreError(f"normalization names {sorted(unknown)}, which the dataset does not read "
                               f"(modalities: {', '.join(self.modalities)})")
            modes = {n: normalization.get(n, "none") for n in self.modalities}
        for name, mode in modes.items():
            if mode not in NORMALIZATIONS:
                raise VreError(f"normalization of '{name}': {mode!r} is not one of {', '.join(NORMALIZATIONS)}")
        return {n: ("none" if self.specs[n].class_map else m) for n, m in modes.items()}

    def _statistics(self, stores: list[VideoStore], given: Mapping | None) -> dict[str, dict]:
        """Per-channel statistics of the modalities that are normalized (merged over the stores)."""
        out = {}
        for name, mode in self.normalization.items():
            if mode == "none":
                continue
            if given and name in given:
                out[name] = {k: list(given[name][k]) for k in ("min", "max", "mean", "std")}
                continue
            parts = [modality_stats(s, name) for s in stores if name in s.names]
            merged = merge_stats(parts)
            if not any(merged["count"]):
                raise VreError(f"cannot normalize '{name}': no computed frame in any store")
            out[name] = merged
        return out

    def _affine(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(shift, scale) float32 [C,1,1] per normalized modality: out = (x - shift) * scale."""
        out = {}
        for name, stats in self.statistics.items():
            if self.normalization[name] == "min_max":
                shift = np.asarray(stats["min"], np.float64)
                span = np.asarray(stats["max"], np.float64) - shift
            else:
                shift = np.asarray(stats["mean"], np.float64)
                span = np.asarray(stats["std"], np.float64)
            scale = np.divide(1.0, span, out=np.ones_like(span), where=span > 0)  # constant channel: shift only
            out[name] = (torch.tensor(shift, dtype=torch.float32).view(-1, 1, 1),
                         torch.tensor(scale, dtype=torch.float32).view(-1, 1, 1))
        return out

    # ------------------------------------------------------------------ worker side
    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_readers={}, _scratch={}, _pid=None, _rng=None)  # each process opens its own readers
        return state

    def _process_state(self) -> None:
        """Readers and the crop RNG belong to one process: a DataLoader worker (forked or spawned)
        opens its own on first use. Worker seeds differ per worker and per epoch."""
        if self._pid != os.getpid():
            self._readers, self._scratch, self._pid = {}, {}, os.getpid()
            self._rng = np.random.default_rng(torch.initial_seed())

    def _reader(self, s: int, name: str) -> FrameReader:
        per_store = self._readers.setdefault(s, {})
        if name not in per_store:
            per_store[name] = FrameReader(self.paths[s], name)
        return per_store[name]

    def __len__(self) -> int:
        return len(self._pos)

    def _window(self) -> tuple[slice, slice] | None:
        """The next random crop window (None without `crop`)."""
        if not self.crop:
            return None
        y0 = int(self._rng.integers(0, self.size[0] - self.crop[0] + 1))
        x0 = int(self._rng.integers(0, self.size[1] - self.crop[1] + 1))
        return slice(y0, y0 + self.crop[0]), slice(x0, x0 + self.crop[1])

    def _sized(self, x: np.ndarray, kind: str, window: tuple[slice, slice] | None) -> np.ndarray:
        """A stored frame [h0,w0,C] resized to the dataset's size (nearest for class maps), then
        cropped to `window` (a view)."""
        if tuple(x.shape[:2]) != tuple(self.size):
            x = resize(x[None], self.size, kind)[0]
        return x[window] if window else x

    def __getitem__(self, i: int) -> dict:
        self._process_state()
        s, pos = int(self._store[i]), int(self._pos[i])
        present = self._present[i]
        window = self._window()
        h, w = self.crop or self.size
        item = {}
        for name, here in zip(self.modalities, present):
            spec = self.specs[name]
            if not here:
                item[name] = self._compact_fill(spec, h, w)
                continue
            x = self._sized(self._reader(s, name).read(pos), spec.kind, window)  # new arrays: items keep them
            item[name] = torch.from_numpy(np.ascontiguousarray(x) if window and self.compact else x)
        item["store"] = self.store_names[s]
        item["frame"] = int(self._frame[i])
        item["present"] = torch.from_numpy(present.copy())
        return item if self.compact else self.to_float(item)

    def __getitems__(self, indices: Sequence[int]) -> "BatchItems":
        """The items of `indices`, equal to `[self[i] for i in indices]` (crops drawn in the same
        order), read as one batch: each modality of the whole batch decoded straight into one
        tensor [N, ...], each shard file opened once per batch. `torch.utils.data.default_collate`
        (the DataLoader's default) returns that batch as it is instead of stacking the items; in a
        DataLoader worker it lies in shared memory that the worker reuses once the main process has
        dropped the batch (`video_pipeline.slabs`), so neither a copy nor new pages are paid per
        batch. Any other collate_fn gets the items, as from `__getitem__`.
        """
        self._process_state()
        pool = worker_pool()
        if pool is not None:
            pool.begin()
        batch, slabs = self._read_batch(indices, pool)
        return BatchItems(batch, slabs, self.modalities)

    def _read_batch(self, indices: Sequence[int], pool: SlabPool | None) -> tuple[dict, dict[str, Slab]]:
        """(the collated batch of `indices`, the pool slabs holding its tensors by key)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"index out of range for a dataset of {len(self)} samples")
        idx %= max(len(self), 1)  # negative indices count from the end, as in a list
        n = len(idx)
        stores, positions, present = self._store[idx], self._pos[idx], self._present[idx]
        windows = [self._window() for _ in range(n)]
        h, w = self.crop or self.size
        slabs: dict[str, Slab] = {}

        def shared(key: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
            if pool is None:
                return torch.empty(shape, dtype=dtype)
            slabs[key] = pool.take(math.prod(shape) * dtype.itemsize)
            return slabs[key].tensor(shape, dtype)

        batch = {}
        for m, name in enumerate(self.modalities):
            spec = self.specs[name]
            shape, dtype = (n, h, w, spec.channels), getattr(torch, spec.dtype)
            x = shared(name, shape, dtype) if self.compact else self._scratch_tensor(name, shape, dtype)
            self._read_modality(name, m, x.numpy(), stores, positions, present, windows)
            batch[name] = x
        batch["store"] = [self.store_names[s] for s in stores]
        batch["frame"] = torch.from_numpy(self._frame[idx].astype(np.int64))
        batch["present"] = torch.from_numpy(present.copy())
        if not self.compact:  # converted from the scratch tensors into the shared ones
            batch = self._to_float(batch, None, shared)
        return batch, slabs

    def _read_modality(self, name: str, m: int, dest: np.ndarray, stores: np.ndarray, positions: np.ndarray,
                       present: np.ndarray, windows: list) -> None:
        """Frames of modality `name` (column m of `present`) into dest [N, h, w, C], compact form."""
        spec = self.specs[name]
        direct: dict[int, tuple[list, list]] = {}  # store -> (positions, destinations): no resize, no crop
        for j in range(len(dest)):
            if not present[j, m]:
                dest[j] = self._stored_fill(spec)
                continue
            s = int(stores[j])
            reader = self._reader(s, name)
            if windows[j] is None and tuple(reader.frame_shape[:2]) == tuple(self.size):
                wanted = direct.setdefault(s, ([], []))
                wanted[0].append(int(positions[j]))
                wanted[1].append(dest[j])
                continue
            dest[j] = self._sized(reader.read(int(positions[j])), spec.kind, windows[j])
        for s, (wanted_positions, outs) in direct.items():
            self._reader(s, name).read_into(wanted_positions, outs)

    def _scratch_tensor(self, key: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        """A tensor over this thread's scratch buffer `key`, reused batch after batch (for values
        that are converted, never handed out)."""
        nbytes = math.prod(shape) * dtype.itemsize
        key = (threading.get_ident(), key)
        buf = self._scratch.get(key)
        if buf is None or buf.nbytes() < nbytes:
            buf = self._scratch[key] = torch.UntypedStorage(nbytes)
        return torch.empty(0, dtype=dtype).set_(buf, 0, shape)

    def to_float(self, item: Mapping, device: str | torch.device | None = None) -> dict:
        """Compact tensors [.., H,W,C] (an item, or a collated batch with a leading batch dimension)
        -> the float32 form: normalized [.., C,H,W], class maps int64 [.., H,W] or one-hot float32
        [.., K,H,W], modalities not present filled (0, or NaN / 255 for fill_nan).

        With `compact=True`, call it on each batch on the training device (a GPU does it in
        microseconds); otherwise `__getitem__` applies it in the worker.
        """
        return self._to_float(item, device, None)

    def _to_float(self, item: Mapping, device, alloc) -> dict:
        """`to_float`, its outputs made by alloc(key, shape, dtype) when given (else new tensors)."""
        out = dict(item)
        present = item["present"].to(device) if device is not None else item["present"]

        def new(key, x, dtype):
            if alloc is None:  # always a copy: the normalization below works in place
                return x.to(dtype, memory_format=torch.contiguous_format, copy=True)
            return alloc(key, tuple(x.shape), dtype).copy_(x)

        for m, name in enumerate(self.modalities):
            spec = self.specs[name]
            x = item[name].to(device, non_blocking=True) if device is not None else item[name]
            x = x[..., 0] if spec.class_map else x.movedim(-1, -3)
            if spec.class_map:
                if spec.one_hot:
                    classes = torch.arange(len(spec.classes), device=x.device, dtype=x.dtype)
                    y = new(name, x.unsqueeze(-3) == classes.view(-1, 1, 1), torch.float32)
                else:
                    y = new(name, x, torch.int64)
            else:
                y = new(name, x, torch.float32)
                if name in self._shift_scale:
                    shift, scale = (t.to(y.device) for t in self._shift_scale[name])
                    y.sub_(shift).mul_(scale)
            absent = ~present[..., m]
            if absent.any():
                fill = self._fill_value(spec)
                if absent.ndim == 0:
                    y.fill_(fill)
                else:
                    y[absent] = fill
            out[name] = y
        return out

    def _fill_value(self, spec: ModalitySpec):
        """What a missing modality reads as in the float32 form."""
        if self.missing == "fill_zero":
            return 0
        return LABEL_FILL if spec.class_map and not spec.one_hot else float("nan")

    @staticmethod
    def _stored_fill(spec: ModalitySpec):
        """A missing modality's value in the compact form: the store's fill value (255, or NaN for
        floats); `to_float` replaces it with the fill of the float32 form."""
        return LABEL_FILL if spec.dtype == "uint8" else float("nan")

    def _compact_fill(self, spec: ModalitySpec, h: int, w: int) -> torch.Tensor:
        return torch.full((h, w, spec.channels), self._stored_fill(spec), dtype=getattr(torch, spec.dtype))


# ---------------------------------------------------------------------------------------- batches
class _Item(dict):
    """One item of a `BatchItems`: a plain dict to its users (pickled as one), that remembers
    being changed (then default_collate stacks the items again rather than trust the batch)."""

    __slots__ = ("changed",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.changed = False

    def __reduce__(self):
        return dict, (dict(self),)


def _changing(name: str):
    method = getattr(dict, name)

    def changed(self, *args, **kwargs):
        self.changed = True
        return method(self, *args, **kwargs)
    changed.__name__ = name
    return changed


for _name in ("__setitem__", "__delitem__", "__ior__", "update", "pop", "popitem", "setdefault", "clear"):
    setattr(_Item, _name, _changing(_name))


class BatchItems(list):
    """What `StoreDataset.__getitems__` returns: the batch's items (like `dataset[i]`, their tensors
    views into the batch tensors) and `batch`, the collated batch itself, which default_collate
    returns unless the list or an item was changed."""

    def __init__(self, batch: dict, slabs: dict[str, Slab], modalities: Sequence[str]):
        super().__init__(_Item({**{name: batch[name][j] for name in modalities}, "store": batch["store"][j],
                                "frame": int(batch["frame"][j]), "present": batch["present"][j]})
                         for j in range(len(batch["store"])))
        self.batch, self.slabs = batch, slabs
        self._ids = [id(x) for x in self]
        for slab in slabs.values():
            slab.hold(self)

    def intact(self) -> bool:
        return [id(x) for x in self] == self._ids and not any(x.changed for x in self)

    def collated(self) -> dict:
        return SharedBatch(self.batch, self.slabs) if self.slabs else dict(self.batch)

    def __reduce__(self):  # sent as it is (a collate_fn returning the items): a plain list of dicts
        return list, ([dict(x) for x in self],)


def _collate_items(batch, *, collate_fn_map=None):
    """default_collate of `_Item`s: the batch read by `__getitems__` as it is, or (a list built or
    changed elsewhere) the items stacked like any dicts."""
    if isinstance(batch, BatchItems) and batch.intact():
        return batch.collated()
    return collate([dict(x) for x in batch], collate_fn_map=collate_fn_map)


default_collate_fn_map[_Item] = _collate_items  # torch's documented way to extend default_collate


if __name__ == "__main__":
    # `python -m video_pipeline.dataset --bench [ARGS]`: the DataLoader benchmark under the name issue
    # #18 gives it, i.e. the program `python -m video_pipeline.bench.loader [ARGS]` (run, not imported:
    # the benchmark imports this module, never the reverse)
    if sys.argv[1:2] != ["--bench"]:
        print("usage: python -m video_pipeline.dataset --bench [STORE] [options of "
              "python -m video_pipeline.bench.loader, see its --help]", file=sys.stderr)
        sys.exit(2)
    os.execv(sys.executable, [sys.executable, "-m", "video_pipeline.bench.loader", *sys.argv[2:]])
