"""The real monitor (serve: Stats client, control loop, Lease, Kubernetes scaler) against a canned
router on loopback and the local cluster's API server, as the chart's ServiceAccount: a high hit
rate moves GPUs to the small pool."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modm.devcluster import Cluster
from modm.services.monitor.k8s_scaler import REASON, TARGET
from modm.services.monitor.server import serve
from modm.services.monitor.settings import MonitorSettings
from modm.services.monitor.stats_client import StatsClient
from modm.serving import ServiceHost
from modm.v1 import router_pb2, router_pb2_grpc
from tests.integration.k8s_monitor import (
    LARGE,
    SMALL,
    get_json,
    install_for_monitor,
    monitor_settings,
    namespace,
    token_kubeconfig,
)
from tests.k8s_cluster import K8S_BUILD_TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(K8S_BUILD_TIMEOUT)]


def canned_stats(hit_rate: float) -> router_pb2.RouterStats:
    """20 requests/min, hits skipping 30-40 of 50 steps, a queue on the one small worker."""
    workers = [
        router_pb2.WorkerStats(address=f"large-{i}:50061", pool="large", healthy=True, profiled_seconds_per_step=1.83)
        for i in range(3)
    ]
    workers.append(
        router_pb2.WorkerStats(address="small-0:50061", pool="small", healthy=True, profiled_seconds_per_step=0.33)
    )
    return router_pb2.RouterStats(
        window_seconds=180.0,
        requests=60,
        request_rate_per_min=20.0,
        hit_rate=hit_rate,
        k_distribution={30: 0.5, 40: 0.5},
        kappa=0.3,
        outcomes={"hit": round(60 * hit_rate), "miss": 60 - round(60 * hit_rate)},
        pools=[
            router_pb2.PoolStats(pool="large", workers=3, queue_depth=0, in_flight=3, capacity=3),
            router_pb2.PoolStats(pool="small", workers=1, queue_depth=10, in_flight=1, capacity=1),
        ],
        workers=workers,
        cache_available=True,
    )


class CannedRouter(router_pb2_grpc.RouterServicer):
    def __init__(self, hit_rate: float) -> None:
        self.hit_rate = hit_rate
        self.calls = 0

    def Stats(self, request: router_pb2.RouterStatsRequest, context: grpc.ServicerContext) -> router_pb2.RouterStats:
        self.calls += 1
        return canned_stats(self.hit_rate)


@pytest.fixture
def router(request: pytest.FixtureRequest) -> Iterator[tuple[str, CannedRouter]]:
    """On threads of its own, so it answers while a test blocks (on a monitor process, kubectl).
    Its hit rate is 0.95 unless the test sets another (`indirect` parametrization)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = CannedRouter(getattr(request, "param", 0.95))
    router_pb2_grpc.add_RouterServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(0)


def dead_address() -> str:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def ns(local_cluster: Cluster, helm: Path) -> Iterator[str]:
    with namespace(local_cluster) as name:
        install_for_monitor(local_cluster, helm, name, "workers.large.replicas=3", "workers.small.replicas=1")
        yield name


async def test_stats_client_reports_a_router_that_does_not_answer(router: tuple[str, CannedRouter]) -> None:
    address, _ = router
    dead = dead_address()
    client = StatsClient([address, dead], timeout_s=2.0)
    try:
        reading = await client.read()
    finally:
        await client.close()
    assert list(reading.stats) == [address]
    assert reading.stats[address].hit_rate == pytest.approx(0.95)
    assert list(reading.unreachable) == [dead] and "UNAVAILABLE" in reading.unreachable[dead]


async def test_dns_name_that_does_not_resolve_is_reported() -> None:
    async def no_such_name(name: str, port: int) -> list[str]:  # no lookup leaves the machine
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    client = StatsClient(["dns:no-such-router.invalid:50051"], timeout_s=2.0, resolver=no_such_name)
    try:
        reading = await client.read()
    finally:
        await client.close()
    assert reading.stats == {} and list(reading.unreachable) == ["dns:no-such-router.invalid:50051"]
    assert reading.unreachable["dns:no-such-router.invalid:50051"].startswith("cannot resolve")


@pytest.mark.parametrize("policy", ["slo-aware", "modm-b"])
async def test_high_hit_rate_moves_replicas_to_the_small_pool(
    router: tuple[str, CannedRouter], local_cluster: Cluster, ns: str, tmp_path: Path, policy: str
) -> None:
    address, servicer = router
    dead = dead_address()
    settings = monitor_settings(
        token_kubeconfig(local_cluster, ns, tmp_path / "kubeconfig"),
        ns,
        port=0,
        routers=[address, dead],
        total_gpus=4,
        policy=policy,
        interval_s=0.3,
        stats_timeout_s=2.0,
        lease_duration_seconds=2,
        renew_deadline_seconds=1.5,
        retry_period_seconds=0.1,
    )
    host = ServiceHost(settings, [], handle_signals=False)
    task = asyncio.create_task(serve(settings, host))

    def deployment(name: str) -> dict:
        return get_json(local_cluster, ns, "deploy", name)

    try:
        for _ in range(300):
            await asyncio.sleep(0.1)
            if (await asyncio.to_thread(deployment, SMALL))["spec"]["replicas"] > 1:
                break
        assert host.port
        async with aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        host.request_stop()
        loop = await asyncio.wait_for(task, 30)
    small, large = deployment(SMALL), deployment(LARGE)
    assert small["spec"]["replicas"] > 1, loop.last
    assert large["spec"]["replicas"] + small["spec"]["replicas"] <= 4
    assert large["spec"]["replicas"] >= 1  # misses still arrive
    for dep in (small, large):
        annotations = dep["metadata"]["annotations"]
        assert annotations[TARGET] == str(dep["spec"]["replicas"])
        assert annotations[REASON] and "adopted" not in annotations[REASON], annotations[REASON]
    assert servicer.calls >= 1
    assert loop.last is not None and dead in loop.last.unreachable
    assert not get_json(local_cluster, ns, "lease", settings.lease_name)["spec"].get("holderIdentity")  # released


async def test_monitor_refuses_to_start_without_routers() -> None:
    with pytest.raises(ValueError, match="MODM_MONITOR_ROUTERS"):
        await serve(MonitorSettings())
