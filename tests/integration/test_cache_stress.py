"""The cache engine under concurrent inserts, lookups, evictions, deletes and reconciles on the
real stores (Milvus Lite in this process, SeaweedFS as S3): afterwards the ledger, Milvus and S3
hold exactly the same entries, within capacity."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymilvus.client.utils import SciPyHelper

from modm.services.cache.ledger import Limits
from modm.services.cache.milvus import MilvusVectorStore
from modm.services.cache.model import NewEntry
from modm.services.cache.policies import LcbfuPolicy
from modm.services.cache.s3 import S3ObjectStore
from tests.cache_support import DIM, Gate, Harness, Jittered, assert_stores_agree, make_harness, png, stress
from tests.integration.cache_helpers import S3, new_bucket, seaweed

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def stores(s3: S3, tmp_path: Path) -> Iterator[tuple[MilvusVectorStore, S3ObjectStore]]:
    objects = s3.store(new_bucket())
    vectors = MilvusVectorStore(str(tmp_path / "milvus.db"), DIM, "stress_words_64")
    yield vectors, objects
    vectors.close()
    objects.close()


def test_pymilvus_checks_for_scipy_before_the_io_threads_can_race_to_it(tmp_path: Path) -> None:
    """Two threads making pymilvus' first insert or search at once broke scipy's import."""
    SciPyHelper._checked = False  # as in a fresh process
    store = MilvusVectorStore(str(tmp_path / "milvus.db"), DIM, "scipy_check_64")
    try:
        assert SciPyHelper._checked
    finally:
        store.close()


async def closed(h: Harness) -> None:
    await h.engine.close()
    await h.engine.embedder.close()


async def test_concurrent_stress_leaves_milvus_s3_and_the_ledger_in_agreement(
    stores: tuple[MilvusVectorStore, S3ObjectStore],
) -> None:
    # Lite answers in process: jitter lets calls overtake each other as they do over a network.
    vectors, objects = (Jittered(store, 3) for store in stores)
    h = await make_harness(vectors, objects, policy=LcbfuPolicy(), limits=Limits(max_entries=6, tenant_max_entries=4))
    try:
        tally = await stress(h.engine, workers=8, operations=2000)
        assert tally.inserts > 700 and tally.hits > 100 and tally.deletes > 10
        assert h.engine.stats().total.counters.evictions > 500
        assert_stores_agree(h.engine)
    finally:
        await closed(h)


async def test_an_insert_in_flight_is_not_evicted_on_milvus_and_s3(
    stores: tuple[MilvusVectorStore, S3ObjectStore],
) -> None:
    h = await make_harness(*stores, policy=LcbfuPolicy(), limits=Limits(max_entries=2))
    gate = Gate(stores[0])
    try:
        popular = await h.insert("popular owl")
        await h.lookup("popular owl")
        gate.hold("pending fox")
        pending = asyncio.ensure_future(h.insert("pending fox"))
        await gate.reached("pending fox")
        whale = await h.engine.insert(NewEntry("a", "quick whale", png(), "m"))
        assert whale.evicted_ids == [popular]
        gate.release("pending fox")
        fox = await pending
        assert {m.entry_id for m in h.engine.ledger.entries()} == {fox, whale.entry_id}
        assert_stores_agree(h.engine)
    finally:
        await closed(h)
