"""Shared-memory buffers ("slabs") that a DataLoader worker reuses from batch to batch, and the
lease by which the main process tells the worker that it has let go of one.

Why: a batch travels from a worker to the main process in shared memory (torch maps the worker's
buffer in the receiver). A new buffer per batch means new pages every time, and a new page costs
far more than its bytes: on the 2-core benchmark VM ~1.5 ms per MB of shared memory to fault in,
more than lz4-decoding the frames into it (docs/benchmarks.md, "Training reads"). A reused
buffer costs nothing more. But a buffer handed to the main process may be written again only once
nothing there refers to it any more, and only the main process knows that.

The protocol, per worker process (`worker_pool`, None outside DataLoader workers):
- `SlabPool.take(nbytes)` gives a `Slab`: a shared `torch.UntypedStorage` of at least `nbytes`,
  from one of `SLOTS` pool slots (or, all busy, a new unpooled one), stamped with a new generation
  g: `ctrl[slot] = g` in a small shared control array.
- The objects that carry the slab in the worker are registered with `Slab.hold`; the batch sent to
  the main process is a `SharedBatch`, whose pickling (by the worker's result queue) checks that
  each slab is reachable only through its own key and marks it leased.
- Unpickled in the main process (`_receive`), the batch becomes a plain dict again and a
  finalizer is set on each slab's storage there: when it dies (no tensor, view or numpy array
  refers to it), `ctrl[slot]` goes back to 0 if it still holds g.
- `take` reuses a leased slab only once `ctrl[slot] == 0`. A slab whose holders died in the worker
  without a lease (a custom `collate_fn` that copied the items, a batch that failed half-way) is
  dropped from the pool: never reused, freed when its last reference goes.
So a slab is rewritten only after the one process that received it has released it. Tensors of a
received batch that are handed on to yet another process are not tracked: clone them first.
"""
from __future__ import annotations

import os
import threading
import weakref

import torch

SLOTS = 64  # per worker, one per modality of a batch: the batches in flight (prefetch_factor) and
# those the consumer holds, with room
KEEP_FREE = 16  # free slabs kept for reuse at most (the least recently used beyond are freed)
ALIGN = 4096


class Slab:
    """One shared buffer of a pool (or unpooled: slot None)."""

    __slots__ = ("storage", "pool", "slot", "generation", "state", "batch", "holders", "__weakref__")

    def __init__(self, storage: torch.UntypedStorage, pool: "SlabPool | None", slot: int | None):
        self.storage, self.pool, self.slot = storage, pool, slot
        self.generation, self.state, self.batch, self.holders = 0, "free", -1, []

    @property
    def capacity(self) -> int:
        return self.storage.nbytes()

    def tensor(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A contiguous tensor `shape` of `dtype` at the start of the slab."""
        out = torch.empty(0, dtype=dtype)
        return out.set_(self.storage, 0, shape)

    def hold(self, obj) -> None:
        """`obj` (weak-referenceable) carries the slab's data in the worker."""
        self.holders.append(weakref.ref(obj))

    def lease(self, data: dict, key: str) -> tuple | None:
        """(ctrl, slot, generation) for the receiver of `data` if the slab is reachable only through
        data[key], now marked leased; None otherwise (the slab then stays out of reuse)."""
        if self.pool is None:
            return None
        ptr = self.storage.data_ptr()
        ok = isinstance(data.get(key), torch.Tensor) and data[key].untyped_storage().data_ptr() == ptr
        ok = ok and not any(isinstance(v, torch.Tensor) and v.untyped_storage().data_ptr() == ptr
                            for k, v in data.items() if k != key)
        with self.pool.lock:
            if not ok or self.state != "issued":
                return None
            self.state = "leased"
        return self.pool.ctrl, self.slot, self.generation


class SlabPool:
    """The slabs of one worker process (see the module docstring)."""

    def __init__(self, slots: int = SLOTS):
        self.ctrl = torch.zeros(slots, dtype=torch.int64).share_memory_()
        self.slabs: list[Slab | None] = [None] * slots
        self.generation = 0
        self.batch = 0
        self.created = 0  # shared storages made so far
        self.lock = threading.Lock()
        self.pid = os.getpid()

    def begin(self) -> None:
        """A new batch starts: slabs of earlier batches whose holders all died unleased are dropped,
        released ones become free (at most KEEP_FREE kept)."""
        with self.lock:
            self.batch += 1
            ctrl = self.ctrl.numpy()
            for i, slab in enumerate(self.slabs):
                if slab is None:
                    continue
                if slab.state == "issued" and slab.batch != self.batch \
                        and not any(h() is not None for h in slab.holders):
                    self.slabs[i] = None  # escaped or failed: never reused
                    ctrl[i] = 0
                elif slab.state == "leased" and ctrl[i] == 0:
                    slab.state, slab.holders = "free", []
            free = sorted((s.batch, i) for i, s in enumerate(self.slabs) if s is not None and s.state == "free")
            for _, i in free[:max(0, len(free) - KEEP_FREE)]:  # after a burst of held batches
                self.slabs[i] = None

    def take(self, nbytes: int) -> Slab:
        """A slab of at least `nbytes` for the current batch."""
        nbytes = max(ALIGN, -(-nbytes // ALIGN) * ALIGN)
        with self.lock:
            free = [i for i, s in enumerate(self.slabs) if s is not None and s.state == "free"]
            fits = [i for i in free if self.slabs[i].capacity >= nbytes]
            if fits:
                i = min(fits, key=lambda k: self.slabs[k].capacity)
            else:
                empty = [i for i, s in enumerate(self.slabs) if s is None]
                self.created += 1
                if not empty and not free:  # every slot busy: an unpooled slab
                    return Slab(torch.UntypedStorage._new_shared(nbytes), None, None)
                i = empty[0] if empty else free[0]  # a free slab too small is replaced
                self.slabs[i] = Slab(torch.UntypedStorage._new_shared(nbytes), self, i)
            slab = self.slabs[i]
            self.generation += 1
            slab.generation, slab.state, slab.batch, slab.holders = self.generation, "issued", self.batch, []
            self.ctrl.numpy()[i] = self.generation
            return slab


_POOL: SlabPool | None = None


def worker_pool() -> SlabPool | None:
    """This DataLoader worker's pool; None in any other process (its batches are not sent on)."""
    global _POOL
    if torch.utils.data.get_worker_info() is None:
        return None
    if _POOL is None or _POOL.pid != os.getpid():
        _POOL = SlabPool()
    return _POOL


class SharedBatch(dict):
    """A collated batch whose tensors `slabs` ({key: Slab}) hold; pickled to the main process it
    arrives as a plain dict with the slabs leased (see the module docstring)."""

    def __init__(self, data: dict, slabs: dict[str, Slab]):
        super().__init__(data)
        self.slabs = slabs
        for slab in slabs.values():
            slab.hold(self)

    def __reduce__(self):
        data = dict(self)
        leases = [(key, *lease) for key, slab in self.slabs.items()
                  if (lease := slab.lease(data, key)) is not None]
        return _receive, (data, leases)

    def __copy__(self):
        return dict(self)

    def __deepcopy__(self, memo):
        import copy

        return copy.deepcopy(dict(self), memo)


def _receive(data: dict, leases: list) -> dict:
    """Unpickling side of SharedBatch: release each leased slab when its storage dies here."""
    for key, ctrl, slot, generation in leases:
        release = weakref.finalize(data[key].untyped_storage(), _release, ctrl, slot, generation)
        release.atexit = False  # at exit the workers are gone: nothing to tell them
    return data


def _release(ctrl: torch.Tensor, slot: int, generation: int) -> None:
    values = ctrl.numpy()
    if values[slot] == generation:
        values[slot] = 0
