"""The cache service end to end on real servers: Milvus Lite in the cache process, SeaweedFS
as S3 (embedded, or owned by the test when a test must reach S3 or restart it), MiniLM."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from modm.launch import ServiceProcess, health_status
from modm.v1 import cache_pb2, common_pb2
from tests.integration.cache_helpers import (
    OBJECTS,
    S3,
    CacheClient,
    code_of,
    new_bucket,
    png,
    seaweed,
    started_cache,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, CacheClient]]:
    """The out-of-the-box cache: no S3 endpoint (it starts SeaweedFS itself), Milvus Lite, MiniLM."""
    root = tmp_path_factory.mktemp("embedded")
    proc = started_cache(root / "data", root)
    client = CacheClient(proc.address)
    yield proc, client
    client.close()
    proc.stop()


# --- the embedded default -------------------------------------------------------------------


def test_embedded_default_insert_lookup_fetch_delete(embedded: tuple[ServiceProcess, CacheClient]) -> None:
    proc, cache = embedded
    assert health_status(proc.address, "modm.v1.Cache") == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(proc.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answer = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        assert "modm.v1.Cache" in {s.name for s in answer.list_services_response.service}

    image = png((10, 200, 10))
    inserted = cache.insert(
        "basic", "a lighthouse on a rocky coast at dusk", image, metadata={"job": "j1"}, shared=False
    )
    found = cache.lookup("basic", "a lighthouse on a rocky shore at dusk")
    assert found.embedder == "minilm"
    assert found.decision.hit and found.decision.entry_id == inserted.entry_id
    assert 0 < found.decision.skipped_steps < 50
    assert found.decision.strength == pytest.approx(1 - found.decision.skipped_steps / 50)
    assert found.matches[0].entry.metadata["job"] == "j1" and found.embed_seconds > 0
    fetched = cache.fetch("basic", inserted.entry_id)
    assert fetched.image == image and fetched.entry.prompt == "a lighthouse on a rocky coast at dusk"
    assert fetched.entry.hit_count == 1 and fetched.entry.width == 24

    miss = cache.lookup("basic", "a plate of spaghetti with meatballs")
    assert not miss.decision.hit and miss.decision.strength == 1.0

    cache.delete("basic", inserted.entry_id)
    assert code_of(cache.fetch, "basic", inserted.entry_id)[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(cache.delete, "basic", inserted.entry_id)[0] == grpc.StatusCode.NOT_FOUND
    assert not cache.lookup("basic", "a lighthouse on a rocky coast at dusk").matches


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.lookup("bad tenant", "x"), "tenant"),
        (lambda c: c.lookup("v", ""), "prompt"),
        (lambda c: c.lookup("v", "x", top_k=1000), "top_k"),
        (lambda c: c.lookup("v", "", embedding=[0.1, 0.2]), "embedding"),
        (lambda c: c.insert("v", "x", b"definitely not a png"), "image"),
        (lambda c: c.insert("v", "x" * 2001), "prompt"),
        (lambda c: c.fetch("v", "nope"), "entry_id"),
    ],
)
def test_invalid_arguments_name_the_field(embedded: tuple[ServiceProcess, CacheClient], call, field: str) -> None:  # type: ignore[no-untyped-def]
    code, details = code_of(call, embedded[1])
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(f"{field}:")


def test_exact_repeat_over_grpc(embedded: tuple[ServiceProcess, CacheClient]) -> None:
    cache = embedded[1]
    params = common_pb2.GenerationParams(width=64, height=64, steps=28, seed=11)
    params.guidance_scale = 7.0
    inserted = cache.insert("repeat", "a red bicycle leaning on a wall", params=params)
    found = cache.lookup("repeat", "a red bicycle leaning on a wall", params=params)
    assert found.decision.exact_repeat and found.decision.entry_id == inserted.entry_id
    assert found.decision.skipped_steps == 50 and found.embed_seconds == 0.0
    assert found.matches[0].entry.params.seed == 11
    params.seed = 12
    assert not cache.lookup("repeat", "a red bicycle leaning on a wall", params=params).decision.exact_repeat


def test_minilm_ranks_a_paraphrase_above_an_unrelated_prompt(
    embedded: tuple[ServiceProcess, CacheClient],
) -> None:
    cache = embedded[1]
    paraphrase = cache.insert("rank", "an astronaut riding a horse on the moon, digital art").entry_id
    unrelated = cache.insert("rank", "a bowl of fresh fruit on a kitchen table, photo").entry_id
    result = cache.lookup("rank", "digital painting of a horse ridden by an astronaut on the moon", top_k=2)
    assert [m.entry.entry_id for m in result.matches] == [paraphrase, unrelated]
    assert result.matches[0].similarity > 0.75 > result.matches[1].similarity
    assert result.decision.hit and result.decision.entry_id == paraphrase


def test_tenants_are_isolated_unless_shared(embedded: tuple[ServiceProcess, CacheClient]) -> None:
    cache = embedded[1]
    private = cache.insert("alice", "a snowy mountain cabin at night").entry_id
    assert not cache.lookup("bob", "a snowy mountain cabin at night").matches
    assert code_of(cache.fetch, "bob", private)[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(cache.delete, "bob", private)[0] == grpc.StatusCode.NOT_FOUND
    shared = cache.insert("alice", "a tropical beach with palm trees", shared=True).entry_id
    seen = cache.lookup("bob", "a tropical beach with palm trees")
    assert seen.decision.entry_id == shared and seen.matches[0].entry.tenant == "alice"
    assert cache.fetch("bob", shared).entry.shared
    assert code_of(cache.delete, "bob", shared)[0] == grpc.StatusCode.NOT_FOUND
    assert cache.stats("bob").tenants[0].entries == 0
    assert cache.stats("alice").tenants[0].entries == 2


def test_concurrent_clients_insert_and_look_up(embedded: tuple[ServiceProcess, CacheClient]) -> None:
    proc = embedded[0]
    subjects = ["castle", "submarine", "volcano", "violin", "giraffe", "lantern"]

    def worker(index: int) -> list[tuple[str, str]]:
        client = CacheClient(proc.address)
        tenant = f"conc{index}"
        try:
            ids = []
            for subject in subjects:
                prompt = f"a detailed watercolor painting of a {subject}"
                ids.append((prompt, client.insert(tenant, prompt, png((index * 40, 10, 10))).entry_id))
            for prompt, entry_id in ids:
                found = client.lookup(tenant, prompt)
                assert found.decision.entry_id == entry_id, (prompt, found)
            return ids
        finally:
            client.close()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(worker, range(4)))
    cache = embedded[1]
    for index, ids in enumerate(results):
        assert cache.stats(f"conc{index}").tenants[0].entries == len(subjects)
        for _, entry_id in ids:
            assert cache.fetch(f"conc{index}", entry_id).entry.tenant == f"conc{index}"


def test_stopping_the_cache_stops_its_embedded_s3(tmp_path: Path) -> None:
    proc = started_cache(tmp_path / "data", tmp_path)
    weeds = [p for p in psutil.Process(proc.proc.pid).children() if p.name() == "weed"]
    assert len(weeds) == 1
    proc.stop()
    psutil.wait_procs(weeds, timeout=20)
    assert not weeds[0].is_running()


def test_killed_cache_takes_its_embedded_s3_along_and_loses_nothing(tmp_path: Path) -> None:
    """kill -9 of the embedded default (Milvus Lite in the process, SeaweedFS its child): every
    acknowledged entry is back after the restart on the same data folder."""
    proc = started_cache(tmp_path / "data", tmp_path)
    cache = CacheClient(proc.address)
    prompts = [("k1", "a koi pond in autumn"), ("k1", "a stack of pancakes"), ("k2", "a comet over the sea")]
    ids = {(t, p): cache.insert(t, p, png((len(p), 9, 9))).entry_id for t, p in prompts}
    cache.close()
    weed = next(p for p in psutil.Process(proc.proc.pid).children() if p.name() == "weed")
    proc.stop(signal.SIGKILL)
    psutil.wait_procs([weed], timeout=20)
    assert not weed.is_running()
    # ... and the next start reuses the same data, credentials and all.
    again = started_cache(tmp_path / "data", tmp_path)
    cache = CacheClient(again.address)
    try:
        assert cache.stats().total.entries == len(prompts)
        for (tenant, prompt), entry_id in ids.items():
            assert cache.lookup(tenant, prompt).decision.entry_id == entry_id
            assert cache.fetch(tenant, entry_id).image == png((len(prompt), 9, 9))
    finally:
        cache.close()
        again.stop()


# --- restarts and crashes (test-owned S3 so the test can look inside) -----------------------


def test_restart_of_the_cache_loses_nothing(s3: S3, tmp_path: Path) -> None:
    settings = s3.settings(new_bucket())
    proc = started_cache(tmp_path / "data", tmp_path, **settings)
    cache = CacheClient(proc.address)
    prompts = {
        ("t1", "a steam locomotive crossing a bridge"),
        ("t1", "a field of sunflowers under a blue sky"),
        ("t2", "a neon-lit street in the rain"),
    }
    ids = {(t, p): cache.insert(t, p, png((len(p), 0, 0))).entry_id for t, p in prompts}
    for _ in range(2):
        assert cache.lookup("t1", "a steam locomotive crossing a bridge").decision.hit
    before = cache.stats()
    cache.close()
    assert proc.stop() == 0

    proc = started_cache(tmp_path / "data", tmp_path, **settings)
    cache = CacheClient(proc.address)
    try:
        after = cache.stats()
        assert after.total.entries == before.total.entries == 3
        assert after.total.bytes == before.total.bytes
        assert after.total.hit_count == 2 and after.total.saved_steps == before.total.saved_steps
        for (tenant, prompt), entry_id in ids.items():
            assert cache.fetch(tenant, entry_id).image == png((len(prompt), 0, 0))
            assert cache.lookup(tenant, prompt).decision.entry_id == entry_id
    finally:
        cache.close()
        proc.stop()


def test_kill_between_the_two_writes_then_reconcile(s3: S3, tmp_path: Path) -> None:
    bucket = new_bucket()
    settings = s3.settings(bucket)
    store = s3.store(bucket)
    proc = started_cache(tmp_path / "data", tmp_path, fault_pause_after_object_put_s=60, **settings)
    cache = CacheClient(proc.address)
    kept = None
    errors: list[grpc.StatusCode] = []

    def doomed_insert() -> None:
        try:
            cache.insert("crash", "an orphaned image of a red barn")
        except grpc.RpcError as error:
            errors.append(error.code())

    try:
        thread = threading.Thread(target=doomed_insert)
        thread.start()
        deadline = time.monotonic() + 60
        while not [o for o in store.list(f"{OBJECTS}crash/")] and time.monotonic() < deadline:
            time.sleep(0.05)
        orphan = [o.key for o in store.list(f"{OBJECTS}crash/")]
        assert len(orphan) == 1, "the object was never written"
        proc.stop(signal.SIGKILL)  # between the object write and the vector write
        thread.join(30)
        assert errors == [grpc.StatusCode.UNAVAILABLE]
    finally:
        cache.close()

    # Restarted with the default grace period the young orphan survives start-up ...
    proc = started_cache(tmp_path / "data", tmp_path, **settings)
    cache = CacheClient(proc.address)
    try:
        assert [o.key for o in store.list(f"{OBJECTS}crash/")] == orphan
        assert cache.stats().total.entries == 0
        assert not cache.lookup("crash", "an orphaned image of a red barn").matches
        kept = cache.insert("crash", "a healthy entry that must survive").entry_id
        # ... and an on-demand reconcile removes it, leaving the healthy entry alone.
        report = cache.reconcile(grace_seconds=0)
        assert report.orphan_objects_removed == 1 and report.stale_vectors_removed == 0
        assert [o.key for o in store.list(f"{OBJECTS}crash/")] == [f"{OBJECTS}crash/{kept}"]
        assert cache.fetch("crash", kept).entry.prompt == "a healthy entry that must survive"
    finally:
        cache.close()
        proc.stop()


def test_start_up_reconcile_removes_orphans_past_the_grace_period(s3: S3, tmp_path: Path) -> None:
    bucket = new_bucket()
    settings = s3.settings(bucket)
    store = s3.store(bucket)
    store.put(f"{OBJECTS}x/" + "a" * 32, png(), "image/png")  # what a crash between writes leaves
    proc = started_cache(tmp_path / "data", tmp_path, reconcile_grace_seconds=0, **settings)
    try:
        assert list(store.list("entries/")) == []
    finally:
        proc.stop()


def test_vanished_object_is_a_miss_and_its_vector_is_removed(s3: S3, tmp_path: Path) -> None:
    bucket = new_bucket()
    store = s3.store(bucket)
    proc = started_cache(tmp_path / "data", tmp_path, **s3.settings(bucket))
    cache = CacheClient(proc.address)
    try:
        gone = cache.insert("v", "a glass of orange juice on a table").entry_id
        store.delete([f"{OBJECTS}v/{gone}"])
        result = cache.lookup("v", "a glass of orange juice on a table")
        assert not result.decision.hit and not result.matches
        assert cache.stats("v").tenants[0].entries == 0
        assert cache.reconcile(grace_seconds=0).vectors_scanned == 0
    finally:
        cache.close()
        proc.stop()


def test_s3_restart_loses_nothing_and_outage_is_unavailable(tmp_path: Path) -> None:
    """kill -9 of SeaweedFS: every acknowledged entry's bytes are back after its restart."""
    with seaweed(tmp_path / "own-s3") as own:
        settings = own.settings(new_bucket())
        proc = started_cache(tmp_path / "data", tmp_path, **settings)
        cache = CacheClient(proc.address)
        prompts = ["a paper boat on a puddle", "a cat asleep on a piano", "a windmill at sunset"]
        try:
            ids = {p: cache.insert("s", p, png((len(p), 2, 3))).entry_id for p in prompts}
            own.server.kill()
            assert code_of(cache.fetch, "s", ids[prompts[0]])[0] == grpc.StatusCode.UNAVAILABLE
            assert code_of(cache.insert, "s", "during the outage")[0] == grpc.StatusCode.UNAVAILABLE
            own.server.start()  # same folder, same port
            own.server.wait_ready()
            for prompt, entry_id in ids.items():
                assert cache.fetch("s", entry_id).image == png((len(prompt), 2, 3))
                assert cache.lookup("s", prompt).decision.entry_id == entry_id
            assert cache.stats("s").tenants[0].entries == len(prompts)
        finally:
            cache.close()
            proc.stop()


def test_capacity_eviction_removes_vectors_and_objects(s3: S3, tmp_path: Path) -> None:
    bucket = new_bucket()
    store = s3.store(bucket)
    proc = started_cache(
        tmp_path / "data", tmp_path, tenant_max_entries=2, eviction_policy="fifo", **s3.settings(bucket)
    )
    cache = CacheClient(proc.address)
    try:
        ids = [cache.insert("e", f"entry number {i} of a long series").entry_id for i in range(2)]
        third = cache.insert("e", "entry number 2 of a long series")
        assert list(third.evicted_ids) == [ids[0]]
        assert sorted(o.key for o in store.list(f"{OBJECTS}e/")) == sorted(
            f"{OBJECTS}e/{i}" for i in (ids[1], third.entry_id)
        )
        assert code_of(cache.fetch, "e", ids[0])[0] == grpc.StatusCode.NOT_FOUND
        stats = cache.stats("e")
        assert stats.tenants[0].entries == 2 and stats.tenants[0].evictions == 1
        assert stats.eviction_policy == "fifo" and stats.tenant_max_entries == 2
    finally:
        cache.close()
        proc.stop()


def test_tenant_capacity_override_evicts_inside_that_tenant(s3: S3, tmp_path: Path) -> None:
    bucket = new_bucket()
    store = s3.store(bucket)
    proc = started_cache(
        tmp_path / "data",
        tmp_path,
        tenant_max_entries=3,
        tenant_limits="small=2:",
        eviction_policy="lru",
        **s3.settings(bucket),
    )
    cache = CacheClient(proc.address)
    try:
        small = [cache.insert("small", p).entry_id for p in ("a red kite", "a green tractor")]
        big = [cache.insert("big", p).entry_id for p in ("a blue tent", "a pink flamingo", "a gold coin")]
        assert cache.lookup("small", "a red kite").decision.entry_id == small[0]  # now the recent one
        third = cache.insert("small", "a grey heron")
        assert list(third.evicted_ids) == [small[1]]
        assert sorted(o.key for o in store.list(f"{OBJECTS}small/")) == sorted(
            f"{OBJECTS}small/{i}" for i in (small[0], third.entry_id)
        )
        assert sorted(o.key for o in store.list(f"{OBJECTS}big/")) == sorted(f"{OBJECTS}big/{i}" for i in big)
        fourth = cache.insert("big", "a silver spoon")
        assert list(fourth.evicted_ids) == [big[0]]  # big keeps the default cap of 3
        stats = cache.stats("small")
        assert stats.tenant_max_entries == 2 and stats.tenants[0].entries == 2 and stats.tenants[0].evictions == 1
        assert cache.stats("big").tenant_max_entries == 3
    finally:
        cache.close()
        proc.stop()


def test_ttl_sweep_removes_expired_entries_from_both_stores(s3: S3, tmp_path: Path) -> None:
    bucket = new_bucket()
    store = s3.store(bucket)
    proc = started_cache(tmp_path / "data", tmp_path, ttl_seconds=10, ttl_sweep_seconds=0.5, **s3.settings(bucket))
    cache = CacheClient(proc.address)
    try:
        entry_id = cache.insert("ttl", "a melting ice cream cone").entry_id
        assert [o.key for o in store.list(f"{OBJECTS}ttl/")] == [f"{OBJECTS}ttl/{entry_id}"]
        deadline = time.monotonic() + 60
        while cache.stats("ttl").tenants[0].entries:  # the sweep runs every 0.5 s
            assert time.monotonic() < deadline, "the TTL sweep never removed the entry"
            time.sleep(0.5)
        assert list(store.list(f"{OBJECTS}ttl/")) == []
        assert not cache.lookup("ttl", "a melting ice cream cone").matches
        assert code_of(cache.fetch, "ttl", entry_id)[0] == grpc.StatusCode.NOT_FOUND
        assert cache.stats("ttl").tenants[0].evictions == 1
        assert cache.reconcile(grace_seconds=0).vectors_scanned == 0  # gone from Milvus too
    finally:
        cache.close()
        proc.stop()


def test_import_from_a_folder_and_a_bucket_prefix(s3: S3, tmp_path: Path) -> None:
    bucket = new_bucket()
    store = s3.store(bucket)
    folder = tmp_path / "imports" / "precache"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(png((5, 5, 5)))
    (folder / "a.txt").write_text("a vintage car in front of a diner\n")
    (folder / "b.png").write_bytes(png((6, 6, 6)))
    (folder / "prompts.jsonl").write_text(json.dumps({"file": "b.png", "prompt": "a koi pond in autumn"}) + "\n")
    (folder / "c.png").write_bytes(png())  # no prompt
    store.put("precache/d.png", png((7, 7, 7)), "image/png")
    store.put("precache/d.txt", b"a windmill in a tulip field", "text/plain")
    elsewhere = new_bucket()
    other = s3.store(elsewhere)
    other.put("set1/e.webp", png((8, 8, 8)), "image/webp")
    other.put("set1/prompts.jsonl", json.dumps({"file": "e.webp", "prompt": "a red fox"}).encode(), "text/plain")
    proc = started_cache(
        tmp_path / "data", tmp_path, import_root=tmp_path / "imports", import_buckets=elsewhere, **s3.settings(bucket)
    )
    cache = CacheClient(proc.address)
    try:
        report = cache.stub.Import(
            cache_pb2.ImportRequest(tenant="imp", folder="precache", model_id="sd3"), timeout=120
        )
        assert report.imported == 2 and report.skipped == 1 and "c.png" in report.errors[0]
        from_bucket = cache.stub.Import(cache_pb2.ImportRequest(tenant="imp", bucket_prefix="precache/"), timeout=120)
        assert from_bucket.imported == 1
        assert cache.lookup("imp", "a koi pond in autumn").decision.hit
        found = cache.lookup("imp", "a windmill in a tulip field")
        assert found.decision.entry_id == from_bucket.entry_ids[0]
        assert cache.fetch("imp", from_bucket.entry_ids[0]).image == png((7, 7, 7))
        other_bucket = cache.stub.Import(
            cache_pb2.ImportRequest(tenant="imp", bucket=elsewhere, bucket_prefix="set1/"), timeout=120
        )
        assert other_bucket.imported == 1
        assert cache.fetch("imp", other_bucket.entry_ids[0]).image == png((8, 8, 8))
        code, details = code_of(cache.stub.Import, cache_pb2.ImportRequest(tenant="imp", folder="../.."))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("folder:")
        code, _ = code_of(cache.stub.Import, cache_pb2.ImportRequest(tenant="imp", bucket_prefix="entries/"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        unlisted = cache_pb2.ImportRequest(tenant="imp", bucket=new_bucket(), bucket_prefix="set1/")
        code, details = code_of(cache.stub.Import, unlisted)  # not in import_buckets: never opened
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "import_buckets" in details, details
    finally:
        cache.close()
        proc.stop()
