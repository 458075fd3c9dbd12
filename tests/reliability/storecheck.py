"""What "nothing is lost" means for a store, as checks: a store against a reference store.

Used by the reliability tests after a killed, failed or concurrent run.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr

META_VOLATILE = ("created",)  # the only root metadata allowed to differ between two runs


def arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a store (modalities, flags, frame index), by key."""
    group = zarr.open_group(str(path), mode="r")
    return {key: node[...] for key, node in group.members(max_depth=None) if isinstance(node, zarr.Array)}


def files(path: Path) -> set[str]:
    """Relative paths of every file under `path`."""
    return {str(p.relative_to(path)) for p in Path(path).rglob("*") if p.is_file()}


def leftovers(path: Path) -> list[str]:
    """Temporary files a writer leaves behind when it is killed."""
    return sorted(str(p.relative_to(path)) for p in Path(path).rglob("*")
                  if p.is_file() and (p.name.endswith((".partial", ".tmp", ".part")) or ".partial" in p.name))


def meta(path: Path) -> dict:
    root = json.loads((Path(path) / "zarr.json").read_text())["attributes"]
    return {k: v for k, v in root.get("video_pipeline", {}).items() if k not in META_VOLATILE}


def modality_attrs(path: Path) -> dict[str, dict]:
    group = zarr.open_group(str(path), mode="r")
    return {name: dict(arr.attrs) for name, arr in group.arrays()}


def assert_same_store(got: Path, ref: Path) -> None:
    """Identical arrays, attrs, root metadata (but its creation time) and file set; no temporaries."""
    assert not leftovers(got), f"temporary files left in {got}: {leftovers(got)}"
    assert files(got) == files(ref), f"files differ: extra {sorted(files(got) - files(ref))}, " \
                                     f"missing {sorted(files(ref) - files(got))}"
    a, b = arrays(got), arrays(ref)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"array {key} differs")
    assert meta(got) == meta(ref)
    assert modality_attrs(got) == modality_attrs(ref)


def durable(path: Path, ref: Path) -> dict[str, np.ndarray]:
    """bool [T] per modality: frames the store flags durable (`_frames`, what a rerun plans from),
    after checking that every flag tells the truth: each frame flagged in `_frames`, and each frame
    of a shard flagged in `_progress`, holds the reference data. A store whose root metadata is not
    written yet has nothing durable."""
    if not (Path(path) / "zarr.json").is_file():
        return {}
    group = zarr.open_group(str(path), mode="r")
    reference = zarr.open_group(str(ref), mode="r")
    if "_frames" not in group:
        return {}
    sf = reference.attrs["video_pipeline"]["shard_frames"]
    out = {}
    for name, flags in group["_frames"].arrays():
        done = flags[:].astype(bool)
        claimed = done.copy()
        if f"_progress/{name}" in group:
            for shard in np.flatnonzero(group[f"_progress/{name}"][:]):
                claimed[shard * sf:(shard + 1) * sf] = True
        rows = np.flatnonzero(claimed)
        if len(rows):
            np.testing.assert_array_equal(group[name].get_orthogonal_selection(rows),
                                          reference[name].get_orthogonal_selection(rows),
                                          err_msg=f"{path}/{name}: a frame flagged durable holds other data")
        out[name] = done
    return out


def lost(before: dict[str, np.ndarray], after: Path) -> int:
    """Frames durable in `before` that `after` no longer flags durable."""
    group = zarr.open_group(str(after), mode="r")
    return sum(int((done & ~group[f"_frames/{name}"][:].astype(bool)).sum()) for name, done in before.items())
