"""The cache against a real Milvus standalone server (milvus==2.3.5, started on loopback by
`modm.services.cache.milvus_standalone`) and SeaweedFS: the same flows as on Milvus Lite, and a
restart of the Milvus server itself under a running cache."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from pymilvus import MilvusClient, MilvusException

from modm.services.cache.milvus import MilvusVectorStore
from modm.services.cache.milvus_standalone import MilvusStandalone
from modm.services.cache.stores import StatsUpdate, VectorRecord
from tests.integration.cache_helpers import S3, CacheClient, code_of, new_bucket, png, seaweed, started_cache
from tests.procs import start_milvus_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusStandalone]:
    root = tmp_path_factory.mktemp("milvus")
    server = start_milvus_server(root / "data", root)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


def test_vector_store_adapter_on_the_server(milvus: MilvusStandalone) -> None:
    store = MilvusVectorStore(milvus.uri, 4, "adapter_check_4")
    try:
        assert store.index_type == "HNSW"
        rows = [
            VectorRecord(f"{i:032x}", "a" if i < 3 else "b", f"p{i}", "m", f"k/{i}", 10, 100.0 + i, vector=v)
            for i, v in enumerate([[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0.01]])
        ]
        for row in rows:
            store.insert(row)  # read-after-write: Strong consistency makes each visible at once
        hits = store.search([1, 0, 0, 0], 3, "a", None)
        assert [h.record.entry_id for h in hits] == [rows[0].entry_id, rows[1].entry_id, rows[2].entry_id]
        assert hits[0].similarity == pytest.approx(1.0, abs=1e-4)
        assert [h.record.tenant for h in store.search([1, 0, 0, 0], 5, "b", None)] == ["b"]
        assert len(store.search([1, 0, 0, 0], 5, "a", 101.5)) == 1
        store.update_stats([StatsUpdate(rows[0].entry_id, 5.0, 2, 55)])
        (updated,) = store.get([rows[0].entry_id])
        assert (updated.hit_count, updated.saved_steps, updated.last_hit_at) == (2, 55, 5.0)
        store.delete([rows[1].entry_id])
        assert sorted(r.entry_id for r in store.scan()) == sorted(r.entry_id for r in rows if r is not rows[1])
    finally:
        store.drop()
        store.close()


def test_cache_on_milvus_server_survives_a_cache_restart(milvus: MilvusStandalone, s3: S3, tmp_path: Path) -> None:
    settings = {**s3.settings(new_bucket()), "milvus_uri": milvus.uri, "collection_prefix": "restart_test"}
    proc = started_cache(tmp_path / "data", tmp_path, **settings)
    cache = CacheClient(proc.address)
    try:
        first = cache.insert("m", "a hot air balloon over a canyon", png((9, 9, 9))).entry_id
        other = cache.insert("n", "a hot air balloon over a canyon").entry_id
        found = cache.lookup("m", "a hot-air balloon floating over a canyon")
        assert found.decision.hit and found.decision.entry_id == first
        assert cache.fetch("m", first).image == png((9, 9, 9))
        assert code_of(cache.fetch, "n", first)[0] == grpc.StatusCode.NOT_FOUND

        second = cache.insert("m", "a lighthouse in a storm").entry_id

        # Restart the cache: everything is still there.
        cache.close()
        proc.stop()
        proc = started_cache(tmp_path / "data", tmp_path, **settings)
        cache = CacheClient(proc.address)
        stats = cache.stats()
        assert stats.total.entries == 3 and stats.total.hit_count == 1  # persisted across the restart
        assert cache.lookup("m", "a lighthouse in a storm").decision.entry_id == second
        assert cache.lookup("n", "a hot air balloon over a canyon").decision.entry_id == other
        cache.delete("m", first)
        assert code_of(cache.fetch, "m", first)[0] == grpc.StatusCode.NOT_FOUND
        assert cache.reconcile(grace_seconds=0).vectors_scanned == 2
    finally:
        cache.close()
        proc.stop()


def test_milvus_server_restart_loses_nothing(s3: S3, tmp_path: Path) -> None:
    """Every entry acknowledged before a kill -9 of the Milvus server is found after its restart,
    first by the cache that kept running, then by a restarted cache (ledger rebuilt from Milvus)."""
    server = start_milvus_server(tmp_path / "milvus", tmp_path)
    server.wait_ready()
    settings = {**s3.settings(new_bucket()), "milvus_uri": server.uri, "collection_prefix": "server_restart"}
    proc = started_cache(tmp_path / "data", tmp_path, **settings)
    cache = CacheClient(proc.address)
    prompts = {
        ("m", "a red tram in the snow"),
        ("m", "a bowl of ramen with a soft egg"),
        ("m", "a lighthouse at dawn"),
        ("n", "a robot watering a garden"),
        ("n", "a sailboat in a bottle"),
    }
    try:
        ids = {(t, p): cache.insert(t, p, png((len(p), 1, 2))).entry_id for t, p in prompts}
        assert cache.lookup("m", "a red tram in the snow").decision.hit
        cache.close()
        assert proc.stop() == 0  # a clean stop persists the hit count

        proc = started_cache(tmp_path / "data", tmp_path, **settings)
        cache = CacheClient(proc.address)
        server.stop()  # kill -9
        server = start_milvus_server(tmp_path / "milvus", tmp_path)
        server.wait_ready()
        # Recovery: the server replays its write-ahead log and loads the collection again; until
        # then the cache answers UNAVAILABLE or misses. A Strong count waits for all of it.
        client = MilvusClient(uri=server.uri, timeout=30)
        (collection,) = [c for c in client.list_collections() if c.startswith("server_restart")]
        deadline = time.monotonic() + 240
        while True:
            with contextlib.suppress(MilvusException):
                client.load_collection(collection)
                rows = client.query(collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
                if rows[0]["count(*)"] == len(prompts):
                    break
            assert time.monotonic() < deadline, "the restarted server never served every entry"
            time.sleep(2)
        client.close()
        for (tenant, prompt), entry_id in ids.items():
            assert cache.lookup(tenant, prompt).decision.entry_id == entry_id
            assert cache.fetch(tenant, entry_id).image == png((len(prompt), 1, 2))
        later = cache.insert("n", "a paper lantern festival").entry_id

        cache.close()
        assert proc.stop() == 0
        proc = started_cache(tmp_path / "data", tmp_path, **settings)
        cache = CacheClient(proc.address)
        stats = cache.stats()
        assert stats.total.entries == len(prompts) + 1 and stats.total.hit_count == len(prompts) + 1
        assert cache.lookup("n", "a paper lantern festival").decision.entry_id == later
        for (tenant, prompt), entry_id in ids.items():
            assert cache.fetch(tenant, entry_id).entry.prompt == prompt
    finally:
        cache.close()
        proc.stop()
        server.stop()
