"""The monitor (serve(): Stats client, loop, Lease and scaler, in this process, against a canned
router) when its Kubernetes API misbehaves for real, on a cluster of this module's own: these tests
stop its API server and etcd (modm.devcluster's stop_component/start_component), which must not
disturb the session's cluster.

- The API server goes away right after a scale write, before the monitor records it: rounds fail
  and back off while its gRPC health stays SERVING (right for the liveness probe that reads it: a
  restarted monitor would find the API server just as gone), and once the server is back the
  monitor recognises the unrecorded scale as its own (managedFields), records it and finishes the
  move, sending no scale twice and mistaking nothing for a hand scale.
- etcd goes away: the API server takes requests and answers none for a minute; the monitor's calls
  time out after `request_timeout_seconds` and its rounds go on failing, not hanging.
- A person's `kubectl scale` lands between the monitor's read and its write: the write carries the
  resourceVersion it read, the API server refuses it (409), and the monitor re-reads, adopts the
  person's replicas and leaves them alone for `manual_hold_seconds` (README: a hand scale is
  respected for a hold period).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kubernetes import client

from modm.devcluster import Cluster
from modm.services.monitor.k8s_scaler import MANUAL_AT, TARGET
from modm.services.monitor.server import serve
from modm.services.monitor.settings import MonitorSettings
from modm.serving import ServiceHost
from tests.integration.k8s_audit import monitor_writes
from tests.integration.k8s_monitor import (
    LARGE,
    SMALL,
    get_json,
    install_for_monitor,
    monitor_settings,
    namespace,
    token_kubeconfig,
)
from tests.integration.test_monitor_loop_k8s import CannedRouter, router  # noqa: F401 - the fixture
from tests.k8s_cluster import K8S_BUILD_TIMEOUT, running_cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(K8S_BUILD_TIMEOUT)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory, "fault-cluster", gpus=4, cpu_nodes=0) as running:
        yield running


@contextmanager
def restarted_at_the_end(cluster: Cluster) -> Iterator[None]:
    """Starts whatever component a test stopped and did not start again (it failed midway), so
    that the namespace can be deleted and the module's next test finds a whole cluster."""
    try:
        yield
    finally:
        for name, running in cluster.running().items():
            if not running:
                cluster.start_component(name)
        deadline = time.monotonic() + 120  # after etcd, the API server reconnects with back-off
        while cluster.kubectl("get", "namespace", "default", check=False, timeout=30).returncode:
            assert time.monotonic() < deadline, "the API server did not answer again"
            time.sleep(0.5)


@pytest.fixture
def ns(cluster: Cluster, helm: Path) -> Iterator[str]:
    """The chart's worker Deployments at 3 + 1, each with the monitor's record of those replicas
    (as an earlier round left it). A component the test stopped is running again at its end."""
    with namespace(cluster) as name, restarted_at_the_end(cluster):
        install_for_monitor(cluster, helm, name, "workers.large.replicas=3", "workers.small.replicas=1")
        for deployment, replicas in ((LARGE, 3), (SMALL, 1)):
            cluster.kubectl("-n", name, "annotate", f"deploy/{deployment}", f"{TARGET}={replicas}")
        yield name


@asynccontextmanager
async def monitor(settings: MonitorSettings) -> AsyncIterator[ServiceHost]:
    host = ServiceHost(settings, [], handle_signals=False)
    task = asyncio.create_task(serve(settings, host))
    try:
        await until(lambda: host.port != 0, "the monitor listening")
        yield host
    finally:
        host.request_stop()
        await asyncio.wait_for(task, 60)


async def until(condition: Callable[[], object], what: str, within_s: float = 60.0) -> None:
    """Polls `condition` (on a thread: it may run kubectl, and the monitor shares this event loop)
    until it is true; `within_s` bounds a hang, it measures nothing."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not await asyncio.to_thread(condition):
        assert asyncio.get_running_loop().time() < deadline, f"{what} did not happen within {within_s:g}s"
        await asyncio.sleep(0.1)


async def health(host: ServiceHost) -> int:
    async with aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return reply.status


def settings_for(cluster: Cluster, ns: str, address: str, tmp_path: Path, **overrides: object) -> MonitorSettings:
    return monitor_settings(
        token_kubeconfig(cluster, ns, tmp_path / "kubeconfig"),
        ns,
        port=0,
        routers=[address],
        total_gpus=4,
        interval_s=0.3,
        stats_timeout_s=2.0,
        api_retries=2,
        backoff_max_seconds=0.4,
        request_timeout_seconds=1.0,
        retry_period_seconds=0.2,
        **overrides,
    )


def deployments(cluster: Cluster, ns: str) -> dict[str, dict]:
    return {name: get_json(cluster, ns, "deploy", name) for name in (LARGE, SMALL)}


def after_the_first_scale(monkeypatch: pytest.MonkeyPatch, do: Callable[[str], None], before: bool) -> threading.Event:
    """Runs `do(deployment)` once, around the monitor's first scale write (just before it is sent,
    or just after its answer): the scaler's API calls run on a worker thread, which waits for it."""
    done = threading.Event()
    scale = client.AppsV1Api.patch_namespaced_deployment_scale

    def wrapped(self: client.AppsV1Api, name: str, *args: object, **kwargs: object) -> object:
        first = not done.is_set()
        done.set()
        if first and before:
            do(name)
        reply = scale(self, name, *args, **kwargs)
        if first and not before:
            do(name)
        return reply

    monkeypatch.setattr(client.AppsV1Api, "patch_namespaced_deployment_scale", wrapped)
    return done


async def test_monitor_rides_out_its_api_server_and_etcd_going_away(
    cluster: Cluster,
    ns: str,
    router: tuple[str, CannedRouter],  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="modm.services.monitor")
    settings = settings_for(cluster, ns, router[0], tmp_path)
    lost = after_the_first_scale(monkeypatch, lambda _: cluster.stop_component("kube-apiserver", grace=2), False)
    generation = {name: d["metadata"]["generation"] for name, d in deployments(cluster, ns).items()}

    def failed_rounds() -> int:
        return sum(1 for r in caplog.records if r.getMessage() == "monitor round failed" and r.stage == "scaler")

    def applied_rounds() -> int:
        return sum(1 for r in caplog.records if r.getMessage() == "decision" and r.applied)

    def settled() -> bool:
        live = deployments(cluster, ns).values()
        recorded = all(d["metadata"]["annotations"].get(TARGET) == str(d["spec"]["replicas"]) for d in live)
        return recorded and deployments(cluster, ns)[SMALL]["spec"]["replicas"] > 1

    async with monitor(settings) as host:
        await until(lost.is_set, "a first scale write")
        await until(lambda: failed_rounds() >= 2, "two rounds failing without the API server")
        assert await health(host) == health_pb2.HealthCheckResponse.SERVING
        await asyncio.to_thread(cluster.start_component, "kube-apiserver")
        await until(settled, "the move finished and recorded")

        failed = without_server = failed_rounds()
        await asyncio.to_thread(cluster.stop_component, "etcd", 2)
        # Each round's calls time out within request_timeout_seconds x (api_retries + 1); a call
        # without a timeout would wait out the API server's own 60 s.
        await until(lambda: failed_rounds() >= failed + 2, "two rounds timing out without etcd", 30)
        assert await health(host) == health_pb2.HealthCheckResponse.SERVING
        await asyncio.to_thread(cluster.start_component, "etcd")
        applied = applied_rounds()
        await until(lambda: applied_rounds() >= applied + 2, "two applied rounds with etcd back")

    messages = [r.getMessage() for r in caplog.records]
    assert any("recording the monitor's own scale" in m for m in messages), "the lost record was not met"
    live = deployments(cluster, ns)
    assert not any(MANUAL_AT in d["metadata"]["annotations"] for d in live.values())
    assert not get_json(cluster, ns, "events", "--field-selector=reason=ManualScale")["items"]
    # A Deployment's generation counts the changes to its spec and annotations: each write of the
    # monitor's changed one (a record's decided-at always changes), so no scale was sent twice.
    wrote = [w for w in monitor_writes(cluster, ns) if w.resource.startswith("deployments") and w.code == 200]
    for name, d in live.items():
        assert sum(1 for w in wrote if w.name == name) == d["metadata"]["generation"] - generation[name], wrote
        assert any(w.name == name and w.resource == "deployments/scale" for w in wrote), wrote
    large, small = (live[name]["spec"]["replicas"] for name in (LARGE, SMALL))
    assert large >= 1 and large + small <= 4
    pauses = [float(m.rsplit("retrying in ", 1)[1].rstrip("s")) for m in messages if "retrying in" in m]
    assert pauses and max(pauses) > min(pauses)  # backed off, by growing (jittered) pauses
    assert any("timed out" in m.lower() for m in messages if "retrying in" in m)
    print(
        f"\nFAULT k8s-api: failed rounds {without_server} without the API server, "
        f"{failed_rounds() - without_server} without etcd; {len(pauses)} retries; "
        f"{sum(w.resource.endswith('scale') for w in wrote)} scale writes; final {large} large + {small} small"
    )


async def test_a_hand_scale_between_the_monitors_read_and_write_wins_and_is_held(
    cluster: Cluster,
    ns: str,
    router: tuple[str, CannedRouter],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hold_s = 3.0
    settings = settings_for(cluster, ns, router[0], tmp_path, manual_hold_seconds=hold_s)

    def by_hand(name: str) -> None:
        assert name == LARGE  # a move shrinks first
        cluster.kubectl("-n", ns, "scale", f"deploy/{name}", "--replicas=1")

    after_the_first_scale(monkeypatch, by_hand, True)

    def large_scaled_again() -> bool:
        return any(
            w.name == LARGE and w.code == 200 for w in monitor_writes(cluster, ns) if w.resource.endswith("scale")
        )

    async with monitor(settings):
        await until(large_scaled_again, "the monitor scaling the large pool once the hold is over")

    writes = [w for w in monitor_writes(cluster, ns) if w.name == LARGE]
    refused, *later = [w for w in writes if w.resource == "deployments/scale"]
    assert refused.code == 409, writes  # the stale write was refused: the person's replicas stood
    adopted = next(w for w in writes if w.resource == "deployments" and w.code == 200 and w.at > refused.at)
    assert later and later[0].at - adopted.at >= timedelta(seconds=hold_s), writes  # left alone meanwhile
    events = get_json(cluster, ns, "events", "--field-selector=reason=ManualScale")["items"]
    assert [(e["involvedObject"]["name"], "to 1" in e["message"]) for e in events] == [(LARGE, True)]
