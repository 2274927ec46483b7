"""Tenant isolation end to end on real processes (router, cache, a tiny worker), many tenants
at once: no tenant receives another's image or prompt through a hit, an exact repeat, Fetch,
Lookup or Stats, unless the owner shared it.

Each tenant stores a secret prompt through the router; then every tenant asks, concurrently, for
every other tenant's exact prompt and parameters (through the router and straight at the cache)
and must be served from its own entries, shared ones, or the GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

import modm
from modm.launch import ServiceProcess
from modm.v1 import cache_pb2, cache_pb2_grpc
from tests.integration.cache_helpers import png, started_cache
from tests.integration.test_router_stack import wait_for_pools
from tests.procs import start_router, start_worker

# Generous: the first test's time includes starting the stack and 8 generations.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

TENANTS = [f"tenant-{i:02d}" for i in range(8)]
COLOURS = ["red", "blue", "green", "golden", "black", "white", "purple", "orange"]
PLACES = ["garden", "tunnel", "forest", "desert", "harbour", "kitchen", "library", "stadium"]
SECRETS = {
    t: f"the private prompt of {t}: a {c} bicycle in a {p}" for t, c, p in zip(TENANTS, COLOURS, PLACES, strict=True)
}
SHARED_PROMPT = "a shared public lighthouse painted in oils"
STEPS = 1
SIZE = {"steps": STEPS, "width": 64, "height": 64}  # cheap generations: the cache path is what is tested


@dataclass
class Isolated:
    cache: ServiceProcess
    router: ServiceProcess
    stub: cache_pb2_grpc.CacheStub
    client: modm.Client
    owners: dict[str, str]  # entry id -> owning tenant
    shared_id: str


@pytest.fixture(scope="module")
def isolated(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isolated]:
    root = tmp_path_factory.mktemp("isolation")
    cache = started_cache(root / "cache", root)
    worker = start_worker(tiny_model("sd3"), root, role="large", log_format="text", max_batch_size=4, warmup=False)
    procs = [cache, worker]
    channel = grpc.insecure_channel(cache.address)
    try:
        worker.wait_serving(timeout=300)
        # A loaded CI machine is slow: no attempt is abandoned and retried for taking long.
        router = start_router(root, worker.address, "", cache.address, attempt_timeout_floor_s=600)
        procs.append(router)
        router.wait_serving()
        stub = cache_pb2_grpc.CacheStub(channel)
        with modm.Client(router.address, timeout=600) as client:
            wait_for_pools(client, {"large"})
            with ThreadPoolExecutor(6) as pool:  # every tenant stores its secret, concurrently
                list(pool.map(lambda t: client.generate(SECRETS[t], seed=1, tenant=t, **SIZE), TENANTS))
            owners = {wait_for_entry(stub, t, SECRETS[t]): t for t in TENANTS}
            shared = stub.Insert(
                cache_pb2.InsertRequest(
                    tenant="sharer", prompt=SHARED_PROMPT, image=png(), model_id="large", shared=True
                ),
                timeout=60,
            )
            yield Isolated(cache, router, stub, client, owners, shared.entry_id)
    finally:
        channel.close()
        for proc in reversed(procs):
            assert proc.stop() == 0, proc.log_tail()


def wait_for_entry(stub: cache_pb2_grpc.CacheStub, tenant: str, prompt: str, timeout: float = 60.0) -> str:
    """The id of the tenant's entry for `prompt`, once the router's insert has landed."""
    deadline = time.monotonic() + timeout
    while True:
        reply = stub.Lookup(cache_pb2.LookupRequest(tenant=tenant, prompt=prompt, dry_run=True), timeout=30)
        if reply.matches and reply.matches[0].entry.prompt == prompt:
            return reply.matches[0].entry.entry_id
        assert time.monotonic() < deadline, f"{tenant}'s insert never landed"
        time.sleep(0.3)


def test_no_tenant_is_served_another_tenants_entry_through_the_router(isolated: Isolated) -> None:
    # Everyone asks for tenant-00's prompt and for its neighbour's, all at once.
    ring = {(asker, TENANTS[(i + 1) % len(TENANTS)]) for i, asker in enumerate(TENANTS)}
    pairs = sorted(ring | {(asker, TENANTS[0]) for asker in TENANTS[1:]})

    def ask(pair: tuple[str, str]) -> tuple[str, modm.GenerateResult]:
        asker, owner = pair
        # The owner's exact prompt and parameters, any seed: an exact repeat if isolation failed.
        return asker, isolated.client.generate(SECRETS[owner], tenant=asker, cache_policy="no_store", **SIZE)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, pairs))
    assert len(results) == len(pairs) == 14
    for asker, result in results:
        assert result.tenant == asker
        assert result.outcome in ("miss", "hit"), result.metadata()  # never another's exact repeat
        if result.source_entry_id:
            owner = isolated.owners.get(result.source_entry_id)
            assert owner in (asker, None) or result.source_entry_id == isolated.shared_id, result.metadata()
            assert result.source_entry_id not in isolated.owners or owner == asker


def test_each_tenant_still_gets_its_own_exact_repeat_and_the_shared_entry(isolated: Isolated) -> None:
    def own(tenant: str) -> modm.GenerateResult:
        return isolated.client.generate(SECRETS[tenant], tenant=tenant, **SIZE)

    with ThreadPoolExecutor(8) as pool:
        for tenant, result in zip(TENANTS, pool.map(own, TENANTS), strict=True):
            assert result.outcome == "exact_repeat" and isolated.owners[result.source_entry_id] == tenant
    lookup = isolated.stub.Lookup(cache_pb2.LookupRequest(tenant=TENANTS[0], prompt=SHARED_PROMPT), timeout=30)
    assert lookup.decision.entry_id == isolated.shared_id
    fetched = isolated.stub.Fetch(cache_pb2.FetchRequest(tenant=TENANTS[5], entry_id=isolated.shared_id), timeout=30)
    assert fetched.image == png() and fetched.entry.shared


def test_the_cache_api_shows_no_tenant_anything_of_another(isolated: Isolated) -> None:
    stub = isolated.stub

    def probe(asker: str) -> int:
        checks = 0
        for entry_id, owner in isolated.owners.items():
            if owner == asker:
                continue
            for call, request in (
                (stub.Fetch, cache_pb2.FetchRequest(tenant=asker, entry_id=entry_id)),
                (stub.Delete, cache_pb2.DeleteRequest(tenant=asker, entry_id=entry_id)),
            ):
                with pytest.raises(grpc.RpcError) as refused:
                    call(request, timeout=30)
                assert refused.value.code() is grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
                assert owner not in refused.value.details() and SECRETS[owner] not in refused.value.details()  # type: ignore[attr-defined]
            reply = stub.Lookup(cache_pb2.LookupRequest(tenant=asker, prompt=SECRETS[owner], top_k=50), timeout=30)
            assert {m.entry.tenant for m in reply.matches} <= {asker, "sharer"}, reply
            assert reply.decision.entry_id not in isolated.owners or isolated.owners[reply.decision.entry_id] == asker
            checks += 3
        stats = stub.Stats(cache_pb2.StatsRequest(tenant=asker), timeout=30)
        assert [t.tenant for t in stats.tenants] == [asker] and stats.tenants[0].entries == 1
        assert stats.total.entries == 1
        return checks + 1

    with ThreadPoolExecutor(8) as pool:
        checks = sum(pool.map(probe, TENANTS))
    print(f"\ntenant isolation: {checks} cross-tenant cache probes, {len(TENANTS)} tenants")
    assert checks == len(TENANTS) * ((len(TENANTS) - 1) * 3 + 1)
    for owner in TENANTS:  # nothing was deleted by the probes
        assert isolated.owners[wait_for_entry(stub, owner, SECRETS[owner])] == owner


def test_router_stats_name_no_tenant_and_no_prompt(isolated: Isolated) -> None:
    text = repr(isolated.client.stats())
    assert not any(t in text for t in TENANTS) and not any(s in text for s in SECRETS.values())
    assert SHARED_PROMPT not in text
