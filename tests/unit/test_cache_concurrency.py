"""Inserts in flight against evictions, deletes, TTL sweeps, reconcile and stats flushes, on
in-memory stores: nothing in flight is lost, nothing half-written is left behind."""

from __future__ import annotations

import asyncio

import pytest

from modm.services.cache.ledger import Limits
from modm.services.cache.memory import MemoryObjectStore, MemoryVectorStore
from modm.services.cache.model import GenParams, NewEntry
from modm.services.cache.policies import EvictionPolicy, FifoPolicy, LcbfuPolicy, LruPolicy
from tests.cache_support import DIM, Gate, Harness, Jittered, assert_stores_agree, make_harness, png, stress, until


async def gated(**kw: object) -> tuple[Harness, Gate]:
    h = await make_harness(**kw)
    return h, Gate(h.vectors)


def entry_ids(h: Harness) -> set[str]:
    return {m.entry_id for m in h.engine.ledger.entries()}


@pytest.mark.parametrize(
    "policy", [LcbfuPolicy(), LcbfuPolicy(grace_accesses=2, half_life_accesses=6), FifoPolicy(), LruPolicy()], ids=repr
)
async def test_concurrent_stress_leaves_ledger_and_stores_in_agreement(policy: EvictionPolicy) -> None:
    vectors, objects = Jittered(MemoryVectorStore(DIM), 2), Jittered(MemoryObjectStore(), 2)
    h = await make_harness(vectors, objects, policy=policy, limits=Limits(max_entries=6, tenant_max_entries=4))
    try:
        tally = await stress(h.engine, workers=8, operations=2400)
        assert tally.inserts > 800 and tally.hits > 100 and tally.deletes > 10
        assert h.engine.stats().total.counters.evictions > 500
        assert_stores_agree(h.engine)
    finally:
        await h.engine.close()


async def test_a_pending_insert_is_never_an_eviction_victim() -> None:
    h, gate = await gated(policy="lcbfu", limits=Limits(max_entries=2))
    popular = await h.insert("popular owl")
    await h.lookup("popular owl")  # a score above a newcomer's 0
    gate.hold("pending fox")
    pending = asyncio.ensure_future(h.insert("pending fox"))
    await gate.reached("pending fox")
    # Completes while the fox is pending: the fox (score 0, older) was the LCBFU victim.
    whale = await h.engine.insert(NewEntry("a", "quick whale", png(), "m"))
    assert whale.evicted_ids == [popular]
    gate.release("pending fox")
    fox = await pending
    assert entry_ids(h) == {fox, whale.entry_id}
    assert_stores_agree(h.engine)


async def test_capacity_is_exceeded_only_while_inserts_are_in_flight() -> None:
    h, gate = await gated(policy="fifo", limits=Limits(max_entries=1))
    gate.hold("first", "second")
    first = asyncio.ensure_future(h.insert("first"))
    second = asyncio.ensure_future(h.insert("second"))
    await gate.reached("first")
    await gate.reached("second")
    third = await h.engine.insert(NewEntry("a", "third", png(), "m"))
    # Both others are in flight: nothing may go, the cache holds 1 + 2 pending.
    assert third.evicted_ids == [] and len(h.engine.ledger) == 3
    gate.release("first")
    assert (await first) in entry_ids(h) and len(h.engine.ledger) == 2  # evicted third
    gate.release("second")
    second_id = await second
    assert entry_ids(h) == {second_id}
    assert_stores_agree(h.engine)


async def test_a_cancelled_insert_still_evicts_down_to_capacity() -> None:
    h, gate = await gated(limits=Limits(max_entries=1))
    await h.insert("old")
    gate.hold("cancelled")
    task = asyncio.ensure_future(h.insert("cancelled"))
    await gate.reached("cancelled")
    task.cancel()
    gate.release("cancelled")
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: len(h.engine.ledger) == 1 and len(h.objects.objects) == 1)
    assert_stores_agree(h.engine)


async def test_delete_of_a_pending_entry_waits_for_its_vector() -> None:
    h, gate = await gated()
    params = GenParams(width=16, height=16, steps=20, seed=3)
    gate.hold("a red fox")
    insert = asyncio.ensure_future(h.insert("a red fox", params=params))
    await gate.reached("a red fox")
    repeat = await h.lookup("a red fox", params=params)
    assert repeat.exact_repeat  # a client now knows the id of an entry whose vector is pending
    delete = asyncio.ensure_future(h.engine.delete("a", repeat.entry_id))
    await asyncio.sleep(0)
    gate.release("a red fox")
    await insert
    await delete
    assert not h.vectors.rows and not h.objects.objects and len(h.engine.ledger) == 0


async def test_ttl_sweep_spares_a_pending_insert() -> None:
    h, gate = await gated(limits=Limits(ttl_seconds=10))
    gate.hold("a red fox")
    insert = asyncio.ensure_future(h.insert("a red fox"))
    await gate.reached("a red fox")
    h.clock.now += 11  # expired while its vector is being written
    assert await h.engine.expire() == 0
    gate.release("a red fox")
    await insert
    assert await h.engine.expire() == 1
    assert not h.vectors.rows and not h.objects.objects


async def test_reconcile_during_a_pending_write_keeps_the_entry_in_the_ledger() -> None:
    h, gate = await gated()
    gate.hold("a red fox")
    insert = asyncio.ensure_future(h.insert("a red fox"))
    await gate.reached("a red fox")
    await h.engine.reconcile(grace_seconds=0)  # its scan cannot see the vector yet
    gate.release("a red fox")
    entry_id = await insert
    assert entry_id in h.engine.ledger
    assert (await h.lookup("a red fox")).entry_id == entry_id
    assert_stores_agree(h.engine)


async def test_hits_on_a_pending_entry_are_persisted_once_its_row_exists() -> None:
    h, gate = await gated()
    params = GenParams(width=16, height=16, steps=20, seed=3)
    gate.hold("a red fox")
    insert = asyncio.ensure_future(h.insert("a red fox", params=params))
    await gate.reached("a red fox")
    assert (await h.lookup("a red fox", params=params)).exact_repeat
    assert await h.engine.flush_stats() == 0  # no row to write to yet: kept for later
    gate.release("a red fox")
    entry_id = await insert
    assert await h.engine.flush_stats() == 1
    assert h.vectors.rows[entry_id].hit_count == 1


async def test_reconcile_spares_the_row_of_an_insert_in_flight_past_its_ttl() -> None:
    h, gate = await gated(limits=Limits(ttl_seconds=10))
    gate.hold("a red fox", written=True)  # the row is in the store; the insert has not heard yet
    insert = asyncio.ensure_future(h.insert("a red fox"))
    await gate.reached("a red fox")
    h.clock.now += 11
    assert (await h.engine.reconcile(grace_seconds=0)).expired_removed == 0
    gate.release("a red fox")
    await insert
    assert_stores_agree(h.engine)
    assert await h.engine.expire() == 1
    assert not h.vectors.rows and not h.objects.objects
