"""`vre verify STORE`: read every frame the flags call done, and unflag what is damaged.

`vre run` checks cheaply on every rerun (shard files present, their indexes intact: see
`VideoStore.check_shards`); this reads and decodes everything, so a flipped byte inside a chunk (its
crc32c fails) is found too. The flags of each damaged shard are cleared, so the next `vre run` of the
store's recipe recomputes exactly those shards.
"""
from __future__ import annotations

from pathlib import Path

from video_pipeline.store import VideoStore


def verify_store(path: Path, repair: bool = True) -> dict:
    """Read every flagged shard of every modality of store `path`.

    Returns {"path", "modalities", "shards_checked", "damaged": [[name, shard, why], ...],
    "unflagged": bool}. With `repair` (and the store writable), damaged shards are deleted and
    unflagged under the store's lock.
    """
    from video_pipeline.runner import StoreLock

    store = VideoStore.open(path, "r")
    damaged, checked = [], 0
    for name in store.names:
        checked += int(store.flagged_shards(name).sum())
        damaged += [[name, shard, why] for shard, why in store.check_shards(name, full=True)]
    unflagged = False
    if damaged and repair:
        with StoreLock(Path(path)):
            writable = VideoStore.open(path, "r+")
            for name in {d[0] for d in damaged}:
                shards = [d[1] for d in damaged if d[0] == name and d[1] >= 0]
                writable.forget_shards(name, shards or range(writable.n_shards))
        unflagged = True
    return {"path": str(path), "modalities": len(store.names), "shards_checked": checked,
            "damaged": damaged, "unflagged": unflagged}


def format_result(result: dict) -> str:
    """One line: intact, or what is damaged and what to do."""
    path = result["path"]
    if not result["damaged"]:
        return (f"{path}: intact ({result['shards_checked']} shards of {result['modalities']} "
                f"modalities read and checked)")
    shown = "; ".join(f"{n} shard {s} ({why})" if s >= 0 else f"{n} ({why})" for n, s, why in result["damaged"][:4])
    more = f"; and {len(result['damaged']) - 4} more" if len(result["damaged"]) > 4 else ""
    then = ("their flags are cleared: rerun `vre run RECIPE VIDEO -o " + path + "` to recompute them"
            if result["unflagged"] else "rerun without --no-repair to unflag them for recomputation")
    return f"{path}: {len(result['damaged'])} damaged shard(s): {shown}{more}; {then}"
