"""The reuse rules of a worker's shared batch buffers (video_pipeline.slabs), driven in one process:
a slab comes back only after the receiver released the generation it was leased with."""
from __future__ import annotations

import gc

import torch

from video_pipeline import slabs
from video_pipeline.slabs import SharedBatch, SlabPool


class Holder:
    """Something weak-referenceable that carries a slab, like the dataset's BatchItems."""


def receive(batch: SharedBatch) -> dict:
    """What the main process makes of `batch`: its pickled form rebuilt over a storage of its own
    (a clone here; a mapping of the same shared memory there), with the lease (the control array
    is shared memory, the same in both processes)."""
    rebuild, (data, leases) = batch.__reduce__()
    return rebuild({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in data.items()}, leases)


def leased_batch(pool: SlabPool, nbytes: int = 10_000):
    """(slab, the batch as the main process receives it) for one new batch of `pool`."""
    pool.begin()
    slab = pool.take(nbytes)
    batch = SharedBatch({"x": slab.tensor((nbytes // 4,), torch.float32), "n": torch.zeros(2)}, {"x": slab})
    return slab, receive(batch)


def test_a_slab_returns_only_once_the_receiver_dropped_it():
    pool = SlabPool(slots=4)
    slab, received = leased_batch(pool)
    assert slab.state == "leased" and pool.ctrl[slab.slot] == slab.generation
    view = received["x"][10:]  # a view keeps the storage, and so the slab, taken
    del received
    gc.collect()
    pool.begin()
    assert slab.state == "leased" and pool.take(10_000).storage.data_ptr() != slab.storage.data_ptr()
    del view
    gc.collect()  # the storage died: the finalizer released the slab's generation
    assert pool.ctrl[slab.slot] == 0
    pool.begin()
    assert slab.state == "free" and pool.take(9_000) is slab and pool.created == 2


def test_an_old_generation_never_releases_a_reused_slab():
    pool = SlabPool(slots=1)
    slab, received = leased_batch(pool)
    del received
    gc.collect()
    old = slab.generation
    slab2, received2 = leased_batch(pool)
    assert slab2 is slab and slab.generation > old
    slabs._release(pool.ctrl, slab.slot, old)  # a late finalizer of the first batch: no effect
    assert pool.ctrl[slab.slot] == slab.generation
    del received2


def test_slabs_that_never_reach_a_receiver_are_dropped_not_reused():
    pool = SlabPool(slots=2)
    pool.begin()
    holder = Holder()
    slab = pool.take(5000)
    slab.hold(holder)
    pool.begin()  # the holder is alive: its batch may still be sent
    assert pool.slabs[slab.slot] is slab
    del holder
    pool.begin()  # it died unsent (a collate_fn that copied the items): never reused
    assert pool.slabs[slab.slot] is None and pool.take(5000) is not slab
    pool.begin()
    other = pool.take(5000)
    batch = SharedBatch({"x": other.tensor((10,), torch.uint8), "y": other.tensor((5,), torch.uint8)}, {"x": other})
    receive(batch)  # reachable through two keys: no lease
    assert other.state == "issued" and pool.ctrl[other.slot] == other.generation


def test_every_slot_busy_gives_unpooled_slabs_and_free_ones_are_trimmed(monkeypatch):
    monkeypatch.setattr(slabs, "KEEP_FREE", 2)
    pool = SlabPool(slots=3)
    received = [leased_batch(pool)[1] for _ in range(3)]
    pool.begin()
    extra = pool.take(100)
    assert extra.slot is None and extra.lease({"x": extra.tensor((4,), torch.uint8)}, "x") is None
    del received
    gc.collect()
    pool.begin()
    assert sum(s is not None and s.state == "free" for s in pool.slabs) == 2
