"""Monitor replicas as the chart runs them (`python -m modm.services.monitor` processes with the
chart's ServiceAccount token) on the local cluster's real API server: one holds the Lease and
acts, the others decide every round and write nothing; SIGTERM hands the Lease over at once (the
holder gives it up), SIGKILL only once it has expired; a person's `kubectl scale` is adopted by
whoever holds the Lease then.

Who wrote what is read from the API server's audit log (tests/integration/k8s_audit.py), not from
the monitors' own accounts: each replica's writes fall within the time it held the Lease, the
holders' times do not overlap, and the Events name the holder as their reportingInstance.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client

from modm.devcluster import Cluster
from modm.launch import ServiceProcess, free_port, start_module
from modm.services.monitor.k8s_api import NotLeader, api_client
from modm.services.monitor.k8s_scaler import KubernetesScaler
from modm.services.monitor.leader import LeaseElector
from modm.services.monitor.observations import Allocation, Decision
from modm.services.monitor.settings import MonitorSettings
from tests.integration.k8s_audit import Write, monitor_writes
from tests.integration.k8s_monitor import (
    LARGE,
    MONITOR,
    SMALL,
    eventually,
    get_json,
    install_for_monitor,
    monitor_settings,
    namespace,
    token_kubeconfig,
)
from tests.integration.test_monitor_loop_k8s import CannedRouter, router  # noqa: F401 - the fixture
from tests.k8s_cluster import K8S_BUILD_TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(K8S_BUILD_TIMEOUT)]

# Short enough to wait out once, long enough that a renewal is never late on a busy machine.
LEASE = {"lease_duration_seconds": 6, "renew_deadline_seconds": 4.5, "retry_period_seconds": 0.3}


def start_monitor(settings: MonitorSettings, log_dir: Path) -> ServiceProcess:
    """A monitor process configured through MODM_MONITOR_* from the settings given explicitly."""
    env = {
        f"MODM_MONITOR_{key.upper()}": ",".join(value) if isinstance(value, list) else str(value)
        for key, value in settings.model_dump(exclude_unset=True, mode="json").items()
    }
    process = start_module("modm.services.monitor", env, log_dir / f"{settings.identity}.log", settings.port)
    process.wait_serving(60)
    return process


def log_records(process: ServiceProcess, message: str) -> list[dict]:
    lines = process.log_path.read_text(errors="replace").splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    return [r for r in records if r["msg"] == message]


def tenures(writes: list[Write]) -> dict[str, tuple[datetime, datetime]]:
    """Each replica's first and last successful write of the monitors' Lease (taking, renewing,
    giving it up), in the order they took it: a replica that does not hold it never writes it."""
    held: dict[str, tuple[datetime, datetime]] = {}
    for w in writes:
        if w.resource == "leases" and w.name == MONITOR and w.code < 300:
            first, _ = held.get(w.identity, (w.at, w.at))
            held[w.identity] = (first, w.at)
    return held


@pytest.fixture
def ns(local_cluster: Cluster, helm: Path) -> Iterator[str]:
    with namespace(local_cluster) as name:
        install_for_monitor(local_cluster, helm, name, "workers.large.replicas=3", "workers.small.replicas=1")
        yield name


def test_only_the_lease_holder_writes_and_a_stopped_or_killed_one_hands_over(
    local_cluster: Cluster,
    ns: str,
    router: tuple[str, CannedRouter],  # noqa: F811
    tmp_path: Path,
) -> None:
    kubeconfig = token_kubeconfig(local_cluster, ns, tmp_path / "kubeconfig")
    address, _ = router

    def start(identity: str) -> ServiceProcess:
        settings = monitor_settings(
            kubeconfig,
            ns,
            identity=identity,
            routers=[address],
            total_gpus=4,
            interval_s=0.3,
            port=free_port(),
            **LEASE,
        )
        return start_monitor(settings, tmp_path)

    def holder() -> str | None:
        return get_json(local_cluster, ns, "lease", MONITOR)["spec"].get("holderIdentity")

    def replicas(name: str) -> int:
        return get_json(local_cluster, ns, "deploy", name)["spec"]["replicas"]

    def scale_by_hand(name: str) -> None:
        now = replicas(name)
        local_cluster.kubectl("-n", ns, "scale", f"deploy/{name}", f"--replicas={now - 1 if now > 1 else now + 1}")

    def adopted_by(name: str) -> list[str]:
        events = get_json(local_cluster, ns, "events", "--field-selector=reason=ManualScale")["items"]
        return [e["reportingInstance"] for e in events if e["involvedObject"]["name"] == name]

    def followed(process: ServiceProcess, rounds: int) -> bool:
        return sum(1 for r in log_records(process, "decision") if not r["leader"]) >= rounds

    processes: list[ServiceProcess] = []
    try:
        processes.append(a := start("monitor-a"))
        eventually(lambda: holder() == "monitor-a" and replicas(SMALL) > 1, "monitor-a leading and moving a GPU")
        processes.append(b := start("monitor-b"))
        eventually(lambda: followed(b, 3), "three rounds of monitor-b following")
        scale_by_hand(SMALL)
        eventually(lambda: adopted_by(SMALL) == ["monitor-a"], "the holder adopting a hand scale")

        assert a.stop() == 0, a.log_tail()  # SIGTERM: the Lease is given up on the way out
        eventually(lambda: holder() == "monitor-b", "monitor-b taking the released Lease")
        scale_by_hand(LARGE)
        eventually(lambda: adopted_by(LARGE) == ["monitor-b"], "the new holder adopting a hand scale")

        processes.append(c := start("monitor-c"))
        eventually(lambda: followed(c, 2), "two rounds of monitor-c following")
        b.stop(signal.SIGKILL)  # nothing is given up: monitor-c must wait the Lease out
        eventually(
            lambda: holder() == "monitor-c", "monitor-c taking the expired Lease", 6 * LEASE["lease_duration_seconds"]
        )
    finally:
        for process in processes:
            process.stop()

    writes = monitor_writes(local_cluster, ns)
    held = tenures(writes)
    print("DBG", *[(w.identity, w.at.time(), w.resource, w.name, w.code) for w in writes], held, sep="\n")
    assert list(held) == ["monitor-a", "monitor-b", "monitor-c"], held
    (_, a_gave_up), (b_took, b_last), (c_took, _) = held.values()
    duration = timedelta(seconds=LEASE["lease_duration_seconds"])
    assert timedelta(0) < b_took - a_gave_up < duration, (a_gave_up, b_took)  # released: no wait
    assert c_took - b_last >= duration, (b_last, c_took)  # killed: waited out
    deadline = timedelta(seconds=LEASE["renew_deadline_seconds"])
    for w in writes:  # every write, answered or refused, from a replica while it held the Lease
        first, last = held[w.identity]
        assert first <= w.at <= last + deadline, (w, held)
    print(
        f"\nFAULT monitor replicas: Lease taken {(b_took - a_gave_up).total_seconds():.2f} s after SIGTERM's release, "
        f"{(c_took - b_last).total_seconds():.2f} s after the killed one's last renewal "
        f"(Lease {duration.total_seconds():g} s); "
        f"{sum(w.resource != 'leases' for w in writes)} writes, each within its sender's tenure"
    )
    scaled = {w.identity for w in writes if w.resource == "deployments/scale"}
    assert "monitor-a" in scaled and "monitor-c" not in scaled, writes
    for process in processes:
        assert "Forbidden" not in process.log_tail(1_000_000), process.log_tail()


def test_a_holder_that_stalls_past_its_renew_deadline_mid_move_writes_nothing_more(
    local_cluster: Cluster, ns: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A move can outlast the leadership it began with (it waits for the shrunk pool's pods to
    stop; a process can stall): every write asks the elector first, so the grow half of a move
    is not sent once another replica may hold the Lease."""
    settings = monitor_settings(token_kubeconfig(local_cluster, ns, tmp_path / "kubeconfig"), ns, **LEASE)
    api = api_client(settings)
    clock = [1000.0]
    elector = LeaseElector(settings, api, monotonic=lambda: clock[0])
    scaler = KubernetesScaler(settings, api, leading=lambda: elector.is_leader)
    scale = client.AppsV1Api.patch_namespaced_deployment_scale

    def scale_then_stall(self: client.AppsV1Api, *args: object, **kwargs: object) -> object:
        reply = scale(self, *args, **kwargs)
        clock[0] += settings.renew_deadline_seconds  # no renewal since: someone else may take over
        return reply

    monkeypatch.setattr(client.AppsV1Api, "patch_namespaced_deployment_scale", scale_then_stall)
    assert elector.try_acquire_or_renew()
    with pytest.raises(NotLeader):
        scaler.apply(Decision(Allocation(2, 2), "move one GPU to the small pool"))
    deployments = {n: get_json(local_cluster, ns, "deploy", n) for n in (LARGE, SMALL)}
    assert {n: d["spec"]["replicas"] for n, d in deployments.items()} == {LARGE: 2, SMALL: 1}  # shrunk, not grown
    writes = [(w.resource, w.name) for w in monitor_writes(local_cluster, ns) if w.resource != "leases"]
    assert writes == [("deployments/scale", LARGE)]  # not even the shrink's record or Event
