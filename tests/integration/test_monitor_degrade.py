"""The monitor's degrade override on real processes: a router (bearer tokens on, workers listed
in `MODM_ROUTER_WORKERS` so each one's pool comes from its Info) with a tiny large and a tiny
small worker, one request slot each. The monitor's Stats client sets the override; the router
reports it in Stats, acts on it (a miss the busy large worker cannot start goes to the free small
one), lets it lapse after its TTL, and refuses callers without a token and a bad TTL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import modm
from modm.launch import ServiceProcess
from modm.services.monitor.stats_client import StatsClient
from modm.v1 import router_pb2, router_pb2_grpc
from tests.procs import start_router, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "monitor-secret"
TENANT_TOKEN = "tenant-secret"
STEPS = 2


@pytest.fixture(scope="module")
def stack(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("degrade")
    tokens = root / "tokens"
    tokens.write_text(f"# a tenant's token, then the monitor's (an operator's)\n{TENANT_TOKEN} acme\n{TOKEN} *\n")
    large = start_worker(tiny_model("sd3"), root, role="large", log_format="text", max_batch_size=1, warmup=False)
    small = start_worker(tiny_model("sdxl"), root, role="small", log_format="text", max_batch_size=1, warmup=False)
    procs: list[ServiceProcess] = [large, small]
    try:
        for proc in procs:
            proc.wait_serving(timeout=300)
        router = start_router(root, "", "", None, workers=f"{large.address},{small.address}", tokens_file=tokens)
        procs.append(router)
        router.wait_serving()
        yield router, large, small, tokens
    finally:
        for proc in reversed(procs):
            proc.stop()


def stats_of(router: ServiceProcess) -> dict[str, Any]:
    with modm.Client(router.address, token=TOKEN) as client:
        return client.stats()


def test_pools_come_from_each_workers_info(stack: Any) -> None:
    router, large, small, _ = stack
    pools = {w["address"]: w["pool"] for w in stats_of(router)["workers"]}
    assert pools == {large.address: "large", small.address: "small"}


async def test_the_override_is_reported_acted_on_and_cleared(stack: Any) -> None:
    router, large, small, tokens = stack
    control = StatsClient([router.address], timeout_s=5.0, token_file=tokens, source="monitor-test")
    try:
        assert await control.set_degrade(True, "overload: the large pool is swamped", 600.0) == {}
        override = (await control.read()).stats[router.address].degrade_override
        assert override.degrade_misses and override.allowed and override.source == "monitor-test"
        assert override.reason == "overload: the large pool is swamped" and 0 < override.expires_in_seconds <= 600

        # Misses at once: the large worker takes one; one that finds it busy goes to the free small worker.
        async with modm.AsyncClient(router.address, token=TOKEN, timeout=300) as client:
            results = await asyncio.gather(
                *(client.generate(f"a lighthouse, take {i}", steps=STEPS, seed=i, cache_policy="off") for i in range(3))
            )
        degraded = [r for r in results if r.degraded]
        assert degraded and all(r.pool == "small" and r.worker == small.address for r in degraded)
        assert any(r.pool == "large" and r.worker == large.address for r in results)

        assert await control.set_degrade(False, "", 600.0) == {}
        assert not (await control.read()).stats[router.address].degrade_override.degrade_misses
        async with modm.AsyncClient(router.address, token=TOKEN, timeout=300) as client:
            plain = await asyncio.gather(
                *(client.generate(f"a harbour, take {i}", steps=STEPS, seed=i, cache_policy="off") for i in range(2))
            )
        assert all(r.pool == "large" and not r.degraded for r in plain)  # queued for the large worker instead
    finally:
        await control.close()


async def test_the_override_lapses_unless_renewed(stack: Any) -> None:
    router, _, _, tokens = stack
    control = StatsClient([router.address], timeout_s=5.0, token_file=tokens, source="monitor-test")
    try:
        assert await control.set_degrade(True, "overload", 1.0) == {}
        deadline = time.monotonic() + 30
        while (await control.read()).stats[router.address].degrade_override.degrade_misses:
            assert time.monotonic() < deadline, "the override did not lapse"
            await asyncio.sleep(0.2)
    finally:
        await control.close()


async def test_no_token_and_a_bad_ttl_are_refused(stack: Any) -> None:
    router, _, _, _ = stack
    anonymous = StatsClient([router.address], timeout_s=5.0)
    try:
        refused = await anonymous.set_degrade(True, "overload", 60.0)
        assert refused[router.address].startswith("UNAUTHENTICATED")
        assert (await anonymous.read()).unreachable[router.address].startswith("UNAUTHENTICATED")
    finally:
        await anonymous.close()
    with grpc.insecure_channel(router.address) as channel:
        stub = router_pb2_grpc.RouterStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.SetDegrade(
                router_pb2.SetDegradeRequest(degrade_misses=True, reason="x", ttl_seconds=0),
                metadata=(("authorization", f"Bearer {TOKEN}"),),
                timeout=5,
            )
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "ttl_seconds" in (error.value.details() or "")


def test_a_tenant_token_may_not_set_the_override(stack: Any) -> None:
    router, _, _, _ = stack
    with grpc.insecure_channel(router.address) as channel:
        stub = router_pb2_grpc.RouterStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.SetDegrade(
                router_pb2.SetDegradeRequest(degrade_misses=True, reason="x", ttl_seconds=60),
                metadata=(("authorization", f"Bearer {TENANT_TOKEN}"),),
                timeout=5,
            )
    assert error.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert not stats_of(router)["degrade_override"]["degrade_misses"]
