"""The engine's consistency, tenancy, capacity and exact-repeat rules, on in-memory stores."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from modm.errors import InvalidArgument, NotFound, Unavailable
from modm.services.cache.ledger import Limits, TenantLimit
from modm.services.cache.memory import MemoryObjectStore
from modm.services.cache.model import GenParams, LookupQuery, NewEntry
from modm.services.cache.stores import ObjectInfo, VectorRecord
from tests.cache_support import DIM, Clock, Harness, make_harness, png, until


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    await harness.engine.start(background=False)
    yield harness
    await harness.engine.close()
    await harness.engine.embedder.close()


# --- basic flow -----------------------------------------------------------------------------


async def test_insert_lookup_fetch_delete(h: Harness) -> None:
    entry_id = await h.insert("a red fox in the snow")
    result = await h.lookup("a red fox in the snow")
    assert result.decision.hit and result.decision.skipped_steps == 30
    assert result.entry_id == entry_id
    assert result.matches[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert result.matches[0].entry.model_id == "large-model"
    data, entry = await h.engine.fetch("a", entry_id)
    assert data == png() and entry.prompt == "a red fox in the snow" and entry.width == 16
    await h.engine.delete("a", entry_id)
    assert not h.objects.objects and not h.vectors.rows
    with pytest.raises(NotFound):
        await h.engine.fetch("a", entry_id)
    assert not (await h.lookup("a red fox in the snow")).decision.hit


async def test_partial_similarity_maps_through_the_table(h: Harness) -> None:
    await h.insert("red fox snow forest")
    near = await h.lookup("red fox snow field")  # 3 of 4 words shared: cosine 0.75
    assert near.decision.hit and near.decision.skipped_steps == 10
    assert near.decision.strength == pytest.approx(0.8)
    far = await h.lookup("blue whale ocean deep")
    assert not far.decision.hit and far.matches  # the best match is still reported


async def test_empty_cache_is_a_miss_with_no_candidate(h: Harness) -> None:
    result = await h.lookup("anything")
    assert not result.decision.hit and result.matches == [] and result.entry_id == ""


async def test_top_k_orders_best_first(h: Harness) -> None:
    await h.insert("one two three four")
    await h.insert("one two three five")
    await h.insert("six seven eight nine")
    result = await h.lookup("one two three four", top_k=3)
    sims = [m.similarity for m in result.matches]
    assert sims == sorted(sims, reverse=True) and len(sims) == 3
    assert result.matches[0].entry.prompt == "one two three four"


async def test_lookup_by_precomputed_embedding(h: Harness) -> None:
    await h.insert("a red fox")
    vector = h.words.embed_texts(["a red fox"])[0] * 7  # any scale: the cache normalises
    result = await h.engine.lookup(LookupQuery("a", embedding=vector.tolist()))
    assert result.decision.hit and result.embed_seconds == 0.0


# --- consistency ----------------------------------------------------------------------------


async def test_bytes_are_written_before_the_vector_and_undone_if_it_fails(h: Harness) -> None:
    h.vectors.fail_next("insert")
    with pytest.raises(Unavailable):
        await h.insert("a red fox")
    assert h.objects.objects == {} and h.vectors.rows == {} and len(h.engine.ledger) == 0


async def test_object_store_down_means_nothing_is_written(h: Harness) -> None:
    h.objects.fail_next("put")
    with pytest.raises(Unavailable):
        await h.insert("a red fox")
    assert h.vectors.rows == {} and len(h.engine.ledger) == 0


async def test_crash_between_writes_leaves_an_orphan_that_reconcile_removes(h: Harness) -> None:
    keep = await h.insert("a kept entry")
    h.objects.put("entries/a/" + "f" * 32, png(), "image/png")  # what a crash after the put leaves
    assert not (await h.lookup("anything at all")).decision.hit
    young = await h.engine.reconcile()  # within the grace period: could be an insert in flight
    assert young.orphan_objects_removed == 0 and len(h.objects.objects) == 2
    report = await h.engine.reconcile(grace_seconds=0)
    assert report.orphan_objects_removed == 1 and report.stale_vectors_removed == 0
    assert list(h.objects.objects) == [f"entries/a/{keep}"]


@pytest.mark.parametrize("grace", [-1.0, float("nan")])
async def test_reconcile_refuses_a_grace_that_is_not_a_non_negative_number(h: Harness, grace: float) -> None:
    with pytest.raises(InvalidArgument, match="grace_seconds"):
        await h.engine.reconcile(grace_seconds=grace)


async def test_reconcile_never_touches_an_insert_in_flight() -> None:
    h = await make_harness(fault_pause_after_object_put_s=0.3)
    task = asyncio.create_task(h.insert("in flight"))
    await until(lambda: bool(h.objects.objects))
    report = await h.engine.reconcile(grace_seconds=0)
    assert report.orphan_objects_removed == 0
    entry_id = await task
    assert (await h.lookup("in flight")).entry_id == entry_id


async def test_cancelled_insert_still_completes_both_writes() -> None:
    h = await make_harness(fault_pause_after_object_put_s=0.2)
    task = asyncio.create_task(h.insert("cancelled caller"))
    await until(lambda: bool(h.objects.objects))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.4)
    assert len(h.vectors.rows) == 1 and len(h.objects.objects) == 1 and len(h.engine.ledger) == 1


async def test_lookup_whose_object_vanished_is_a_miss_and_removes_the_vector(h: Harness) -> None:
    entry_id = await h.insert("a red fox")
    h.objects.delete([f"entries/a/{entry_id}"])
    result = await h.lookup("a red fox")
    assert not result.decision.hit and result.matches == []
    assert entry_id not in h.vectors.rows and entry_id not in h.engine.ledger


async def test_vanished_best_match_falls_back_to_the_next_live_one(h: Harness) -> None:
    gone = await h.insert("red fox snow forest")
    alive = await h.insert("red fox snow field")
    h.objects.delete([f"entries/a/{gone}"])
    result = await h.lookup("red fox snow forest")
    assert result.entry_id == alive and result.decision.hit
    assert gone not in h.vectors.rows


async def test_fetch_whose_object_vanished_is_not_found_and_removes_the_vector(h: Harness) -> None:
    entry_id = await h.insert("a red fox")
    h.objects.delete([f"entries/a/{entry_id}"])
    with pytest.raises(NotFound):
        await h.engine.fetch("a", entry_id)
    assert entry_id not in h.vectors.rows


async def test_reconcile_removes_orphans_on_both_sides_and_resyncs_the_ledger(h: Harness) -> None:
    ok = await h.insert("healthy entry")
    stale = await h.insert("stale entry")
    h.objects.delete([f"entries/a/{stale}"])  # vector without bytes
    h.objects.put("entries/b/" + "e" * 32, b"x", "image/png")  # bytes without vector
    # A row another process wrote (bytes present) that this ledger has never seen.
    foreign = "d" * 32
    h.objects.put(f"entries/b/{foreign}", png(), "image/png")
    h.vectors.insert(
        VectorRecord(foreign, "b", "foreign", "m", f"entries/b/{foreign}", 10, h.clock(), vector=[1.0] * DIM)
    )
    h.clock.now += 120
    report = await h.engine.reconcile()
    assert (report.stale_vectors_removed, report.orphan_objects_removed) == (1, 1)
    assert report.vectors_scanned == 3 and report.objects_scanned == 3
    assert set(h.vectors.rows) == {ok, foreign}
    assert set(h.objects.objects) == {f"entries/a/{ok}", f"entries/b/{foreign}"}
    assert foreign in h.engine.ledger and stale not in h.engine.ledger
    again = await h.engine.reconcile(grace_seconds=0)
    assert (again.stale_vectors_removed, again.orphan_objects_removed) == (0, 0)


async def test_reconcile_drops_ledger_entries_whose_rows_are_gone(h: Harness) -> None:
    await h.insert("a red fox")
    h.vectors.rows.clear()  # e.g. the collection was dropped behind our back
    await h.engine.reconcile(grace_seconds=0)
    assert len(h.engine.ledger) == 0 and h.objects.objects == {}


async def test_delete_that_fails_keeps_the_entry(h: Harness) -> None:
    entry_id = await h.insert("a red fox")
    h.vectors.fail_next("delete")
    with pytest.raises(Unavailable):
        await h.engine.delete("a", entry_id)
    assert entry_id in h.engine.ledger and (await h.lookup("a red fox")).decision.hit


async def test_restart_reloads_everything_including_hit_counts(h: Harness) -> None:
    entry_id = await h.insert("a red fox")
    for _ in range(3):
        assert (await h.lookup("a red fox")).decision.hit
    assert await h.engine.flush_stats() == 1
    engine = await h.restart()
    meta = engine.ledger.get(entry_id)
    assert meta is not None and meta.hit_count == 3 and meta.saved_steps == 90
    assert (await h.lookup("a red fox")).entry_id == entry_id


# --- tenancy --------------------------------------------------------------------------------


async def test_tenants_see_only_their_own_entries(h: Harness) -> None:
    a_id = await h.insert("a red fox", tenant="a")
    assert not (await h.lookup("a red fox", tenant="b")).matches
    with pytest.raises(NotFound):
        await h.engine.fetch("b", a_id)
    with pytest.raises(NotFound):
        await h.engine.delete("b", a_id)
    assert (await h.lookup("a red fox", tenant="a")).entry_id == a_id


async def test_shared_entries_are_visible_but_only_the_owner_deletes(h: Harness) -> None:
    shared = await h.insert("a red fox", tenant="a", shared=True)
    result = await h.lookup("a red fox", tenant="b")
    assert result.entry_id == shared and result.decision.hit
    assert (await h.engine.fetch("b", shared))[1].tenant == "a"
    with pytest.raises(NotFound):
        await h.engine.delete("b", shared)
    await h.engine.delete("a", shared)


# --- capacity -------------------------------------------------------------------------------


async def test_tenant_capacity_evicts_fifo_and_deletes_both_sides() -> None:
    h = await make_harness(limits=Limits(tenant_max_entries=2))
    first = await h.insert("one")
    second = await h.insert("two")
    other = await h.insert("other tenant", tenant="b")
    h.clock.now += 1
    result = await h.engine.insert(NewEntry("a", "three", png(), "m"))
    assert result.evicted_ids == [first]
    assert first not in h.vectors.rows and f"entries/a/{first}" not in h.objects.objects
    assert {second, result.entry_id, other} == set(h.vectors.rows)
    stats = h.engine.stats()
    by_tenant = {t.tenant: t for t in stats.tenants}
    assert by_tenant["a"].entries == 2 and by_tenant["a"].counters.evictions == 1
    assert by_tenant["b"].entries == 1 and stats.total.entries == 3


async def test_lru_capacity_keeps_the_entry_that_was_used() -> None:
    h = await make_harness(limits=Limits(max_entries=2), policy="lru")
    used = await h.insert("alpha beta")
    unused = await h.insert("gamma delta")
    h.clock.now += 5
    await h.lookup("alpha beta")
    result = await h.engine.insert(NewEntry("a", "epsilon zeta", png(), "m"))
    assert result.evicted_ids == [unused] and used in h.vectors.rows


async def test_global_byte_capacity() -> None:
    size = len(png())
    h = await make_harness(limits=Limits(max_bytes=2 * size))
    first = await h.insert("one")
    await h.insert("two", tenant="b")
    result = await h.engine.insert(NewEntry("c", "three", png(), "m"))
    assert result.evicted_ids == [first]
    assert h.engine.ledger.total.bytes == 2 * size


async def test_image_larger_than_the_cache_is_refused() -> None:
    h = await make_harness(limits=Limits(tenant_max_bytes=10))
    with pytest.raises(InvalidArgument) as info:
        await h.insert("too big")
    assert info.value.field == "image"


async def test_ttl_hides_and_expires_old_entries() -> None:
    h = await make_harness(limits=Limits(ttl_seconds=100))
    old = await h.insert("a red fox")
    h.clock.now += 101
    assert not (await h.lookup("a red fox")).decision.hit
    with pytest.raises(NotFound):
        await h.engine.fetch("a", old)
    assert await h.engine.expire() == 1
    assert not h.vectors.rows and not h.objects.objects


async def test_tenant_override_caps_that_tenant_only_with_the_policy() -> None:
    limits = Limits(tenant_max_entries=3, tenant_overrides={"small": TenantLimit(max_entries=2)})
    h = await make_harness(limits=limits, policy="lru")
    first = await h.insert("alpha one", tenant="small")
    second = await h.insert("beta two", tenant="small")
    others = [await h.insert(f"word{i} other", tenant="big") for i in range(3)]
    h.clock.now += 5
    assert (await h.lookup("alpha one", tenant="small")).entry_id == first  # first is now the recent one
    third = await h.engine.insert(NewEntry("small", "gamma three", png(), "m"))
    assert third.evicted_ids == [second]
    assert second not in h.vectors.rows and f"entries/small/{second}" not in h.objects.objects
    assert set(others) <= set(h.vectors.rows)  # the default cap of 3 is not exceeded by "big"
    fourth = await h.engine.insert(NewEntry("big", "delta four", png(), "m"))
    assert fourth.evicted_ids == [others[0]]


async def test_image_larger_than_a_tenants_byte_override_is_refused_for_that_tenant_only() -> None:
    h = await make_harness(limits=Limits(tenant_overrides={"tiny": TenantLimit(max_bytes=10)}))
    with pytest.raises(InvalidArgument) as info:
        await h.insert("too big", tenant="tiny")
    assert info.value.field == "image"
    assert await h.insert("fits elsewhere", tenant="other")


# --- background loops -----------------------------------------------------------------------


async def test_ttl_sweep_loop_deletes_expired_entries_from_both_stores() -> None:
    h = Harness(limits=Limits(ttl_seconds=100), ttl_sweep_seconds=0.01)
    await h.engine.start()
    try:
        old = await h.insert("a red fox")
        h.clock.now += 60
        young = await h.insert("a blue whale")
        h.clock.now += 41  # old is 101 s old, young 41 s
        await until(lambda: old not in h.vectors.rows)
        assert set(h.vectors.rows) == {young}
        assert set(h.objects.objects) == {f"entries/a/{young}"}
        assert not (await h.lookup("a red fox")).decision.hit
        assert (await h.lookup("a blue whale")).entry_id == young
        assert h.engine.stats("a").tenants[0].counters.evictions == 1
    finally:
        await h.engine.close()


async def test_ttl_sweep_loop_retries_after_a_failed_delete() -> None:
    h = Harness(limits=Limits(ttl_seconds=100), ttl_sweep_seconds=0.01)
    await h.engine.start()
    try:
        old = await h.insert("a red fox")
        h.vectors.fail_next("delete", times=3)
        h.clock.now += 101
        await until(lambda: old not in h.vectors.rows)
        assert not h.objects.objects and len(h.engine.ledger) == 0
    finally:
        await h.engine.close()


async def test_reconcile_also_runs_periodically() -> None:
    h = Harness(reconcile_interval_seconds=0.01)
    await h.engine.start(reconcile=False)
    try:
        keep = await h.insert("a kept entry")
        stale = await h.insert("a stale entry")
        h.objects.delete([f"entries/a/{stale}"])  # a vector whose bytes are gone
        orphan = "entries/a/" + "f" * 32
        h.objects.put(orphan, png(), "image/png")  # bytes no vector references
        h.clock.now += 120  # past the 60 s grace
        await until(lambda: orphan not in h.objects.objects and stale not in h.vectors.rows)
        assert set(h.vectors.rows) == {keep} and [m.entry_id for m in h.engine.ledger.entries()] == [keep]
    finally:
        await h.engine.close()


async def test_stats_flush_loop_persists_hits_without_a_clean_shutdown() -> None:
    h = Harness(stats_flush_seconds=0.01)
    await h.engine.start()
    entry_id = await h.insert("a red fox")
    h.vectors.fail_next("update_stats")  # the loop survives a failed flush and retries
    for _ in range(2):
        assert (await h.lookup("a red fox")).decision.hit
    await until(lambda: h.vectors.rows[entry_id].hit_count == 2)
    assert h.vectors.rows[entry_id].saved_steps == 60
    # A crash: no close(), so no final flush; a new engine reads what the loop wrote.
    for task in h.engine._tasks:
        task.cancel()
    h.engine = h.make()
    await h.engine.start(background=False)
    meta = h.engine.ledger.get(entry_id)
    assert meta is not None and (meta.hit_count, meta.saved_steps) == (2, 60)
    assert h.engine.stats().total.hit_count == 2
    await h.engine.close()


async def test_close_flushes_hits_made_since_the_last_flush() -> None:
    h = Harness(stats_flush_seconds=3600)
    await h.engine.start()
    entry_id = await h.insert("a red fox")
    assert (await h.lookup("a red fox")).decision.hit
    assert h.vectors.rows[entry_id].hit_count == 0  # the loop has not run
    engine = await h.restart()
    meta = engine.ledger.get(entry_id)
    assert meta is not None and meta.hit_count == 1
    await engine.close()


# --- exact repeats --------------------------------------------------------------------------


async def test_a_repeat_during_the_vector_write_is_already_an_exact_repeat() -> None:
    h = await make_harness()
    params = GenParams(width=512, height=512, steps=28, guidance_scale=7.0, seed=5)
    entered, release = threading.Event(), threading.Event()
    real_insert = h.vectors.insert

    def slow_insert(record: VectorRecord) -> None:
        entered.set()
        release.wait(5)
        real_insert(record)

    h.vectors.insert = slow_insert  # type: ignore[method-assign]
    insert = asyncio.ensure_future(h.insert("a red fox", params=params))
    await asyncio.to_thread(entered.wait, 5)
    during = await h.lookup("a red fox", params=params)
    release.set()
    entry_id = await insert
    assert during.exact_repeat and during.entry_id == entry_id
    assert await h.engine.fetch("a", entry_id)


async def test_a_failed_vector_write_leaves_no_exact_repeat() -> None:
    h = await make_harness()
    params = GenParams(width=512, height=512, steps=28, guidance_scale=7.0, seed=5)
    h.vectors.fail_next("insert")
    with pytest.raises(Unavailable):
        await h.insert("a red fox", params=params)
    assert not (await h.lookup("a red fox", params=params)).exact_repeat
    assert not list(h.objects.list(""))


async def test_exact_repeat_needs_no_embedding() -> None:
    h = await make_harness()
    params = GenParams(width=512, height=512, steps=28, guidance_scale=7.0, seed=5)
    entry_id = await h.insert("a red fox", params=params)
    calls = len(h.words.calls)
    result = await h.lookup("a red fox", params=params)
    assert result.exact_repeat and result.entry_id == entry_id
    assert result.decision.skipped_steps == 50 and result.decision.strength == 0.0
    assert len(h.words.calls) == calls  # no embedding at all
    assert result.matches[0].entry.params == GenParams("a red fox", "", 512, 512, 28, 7.0, 5)
    unseeded = await h.lookup("a red fox", params=GenParams(width=512, height=512, steps=28, guidance_scale=7.0))
    assert unseeded.exact_repeat
    other_seed = await h.lookup(
        "a red fox",
        params=GenParams(width=512, height=512, steps=28, guidance_scale=7.0, seed=6),
    )
    assert not other_seed.exact_repeat and other_seed.decision.hit
    other_size = await h.lookup("a red fox", params=GenParams(width=768, height=512, steps=28, guidance_scale=7.0))
    assert not other_size.exact_repeat
    assert h.engine.stats("a").tenants[0].counters.exact_repeats == 2


async def test_exact_repeat_respects_tenants_and_vanished_bytes() -> None:
    h = await make_harness()
    params = GenParams(steps=10)
    entry_id = await h.insert("a red fox", params=params)
    assert not (await h.lookup("a red fox", tenant="b", params=params)).exact_repeat
    h.objects.delete([f"entries/a/{entry_id}"])
    result = await h.lookup("a red fox", params=params)
    assert not result.exact_repeat and not result.decision.hit and entry_id not in h.vectors.rows


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (LookupQuery("", "x"), "tenant"),
        (LookupQuery("a b", "x"), "tenant"),
        (LookupQuery("a"), "prompt"),
        (LookupQuery("a", "x", embedding=[1.0] * DIM), "prompt"),
        (LookupQuery("a", " "), "prompt"),
        (LookupQuery("a", "x" * 201), "prompt"),
        (LookupQuery("a", "x", top_k=11), "top_k"),
        (LookupQuery("a", embedding=[1.0, 2.0]), "embedding"),
        (LookupQuery("a", "x", params=GenParams(prompt="y")), "params.prompt"),
    ],
)
async def test_lookup_validation_names_the_field(h: Harness, query: LookupQuery, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        await h.engine.lookup(query)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        (NewEntry("a", "x", b"not an image", "m"), "image"),
        (NewEntry("a", "x", b"", "m"), "image"),
        (NewEntry("a", "x", png(size=1024), "m"), "image"),  # more pixels than allowed
        (NewEntry("a", "", png(), "m"), "prompt"),
        (NewEntry("a", "x", png(), ""), "model_id"),
        (NewEntry("-a", "x", png(), "m"), "tenant"),
        (NewEntry("a", "x", png(), "m", metadata={"k" * 65: "v"}), f"metadata[{'k' * 65!r}]"),
    ],
)
async def test_insert_validation_names_the_field(h: Harness, entry: NewEntry, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        await h.engine.insert(entry)
    assert info.value.field == field
    assert not h.objects.objects


async def test_unknown_entry_ids(h: Harness) -> None:
    with pytest.raises(NotFound):
        await h.engine.fetch("a", "0" * 32)
    with pytest.raises(InvalidArgument):
        await h.engine.fetch("a", "not-an-id")


# --- batching -------------------------------------------------------------------------------


async def test_concurrent_lookups_are_embedded_in_shared_batches(h: Harness) -> None:
    await h.insert("a red fox")
    before = len(h.words.calls)
    results = await asyncio.gather(*(h.lookup(f"a red fox number{i}") for i in range(12)))
    assert all(r.matches for r in results)
    calls = h.words.calls[before:]
    assert sum(calls) == 12 and len(calls) < 12


class PausingList(MemoryObjectStore):
    """A listing that takes its snapshot, then waits: room for other requests to run meanwhile."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.listed = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        items = list(super().list(prefix))
        self.listed.set()
        self.release.wait(5)
        return iter(items)


async def test_entry_deleted_during_a_reconcile_pass_does_not_come_back() -> None:
    h = Harness()
    h.objects = PausingList(h.clock)
    h.engine = h.make()
    await h.engine.start(background=False, reconcile=False)
    entry_id = await h.insert("a red fox")
    h.engine.ledger.remove(entry_id)  # as if another path lost track of it: reconcile must re-add
    kept = await h.insert("a blue whale")
    h.objects.release.clear()
    h.objects.listed.clear()
    reconcile = asyncio.create_task(h.engine.reconcile(grace_seconds=0))
    await until(h.objects.listed.is_set)
    await h.engine.delete("a", kept)  # the pass's snapshots still hold its row and its object
    h.objects.release.set()
    await reconcile
    assert entry_id in h.engine.ledger  # re-synchronised from the vector store
    assert kept not in h.engine.ledger and kept not in h.vectors.rows
    assert h.engine.ledger.total.entries == 1
