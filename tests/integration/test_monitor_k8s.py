"""The Kubernetes scaler and Lease elector, unchanged, against the emulated API server, with kubectl
alongside as the human operator."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from modm.services.monitor.k8s_api import Caller, KubernetesUnavailable, ObjectMissing, api_client
from modm.services.monitor.k8s_scaler import DECIDED_AT, PAUSED, REASON, TARGET, KubernetesScaler
from modm.services.monitor.leader import LeaseElector
from modm.services.monitor.observations import Allocation, Decision
from modm.services.monitor.settings import MonitorSettings
from tests.k8s_emulator import DEPLOYMENTS, EVENTS, LEASES, Emulator

pytestmark = pytest.mark.integration

LARGE, SMALL = "modm-worker-large", "modm-worker-small"


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        emu.create_deployment(LARGE, 2)
        emu.create_deployment(SMALL, 2)
        yield emu


@pytest.fixture
def kubeconfig(emulator: Emulator, tmp_path: Path) -> Path:
    return emulator.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def settings(kubeconfig: Path) -> Callable[..., MonitorSettings]:
    def make(**overrides: object) -> MonitorSettings:
        values: dict[str, object] = {
            "kubeconfig": str(kubeconfig),
            "large_deployment": LARGE,
            "small_deployment": SMALL,
            "backoff_seconds": 0.01,
            "lease_duration_seconds": 2,
            "renew_deadline_seconds": 1.5,
            "retry_period_seconds": 0.1,
        }
        return MonitorSettings(**(values | overrides))

    return make


@pytest.fixture
def scaler(settings: Callable[..., MonitorSettings]) -> KubernetesScaler:
    s = settings()
    return KubernetesScaler(s, api_client(s))


def kubectl(kubeconfig: Path, *args: str) -> str:
    done = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def decide(large: int, small: int, reason: str = "test decision") -> Decision:
    return Decision(Allocation(large, small), reason)


def replicas(emulator: Emulator, name: str) -> int:
    return emulator.get(DEPLOYMENTS, "default", name)["spec"]["replicas"]


def test_kubectl_get_deploy_works_against_the_emulator(kubeconfig: Path) -> None:
    table = kubectl(kubeconfig, "get", "deploy")
    assert table.split()[:5] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert LARGE in table and SMALL in table
    assert json.loads(kubectl(kubeconfig, "get", "deploy", LARGE, "-o", "json"))["spec"]["replicas"] == 2


def test_scales_both_deployments_and_explains_why(
    emulator: Emulator, scaler: KubernetesScaler, kubeconfig: Path
) -> None:
    outcome = scaler.apply(decide(3, 1, "misses queue up: 3 large + 1 small"))
    assert (outcome.large.action, outcome.small.action) == ("scaled", "scaled")
    assert outcome.allocation == Allocation(3, 1) == scaler.current()
    assert (replicas(emulator, LARGE), replicas(emulator, SMALL)) == (3, 1)
    scale_writes = [r for r in emulator.requests if r.method == "PATCH" and r.path.endswith("/scale")]
    assert len(scale_writes) == 2

    shown = json.loads(kubectl(kubeconfig, "get", "deploy", LARGE, "-o", "json"))["metadata"]["annotations"]
    assert shown[TARGET] == "3" and shown[REASON] == "misses queue up: 3 large + 1 small" and shown[DECIDED_AT]
    events = json.loads(kubectl(kubeconfig, "get", "events", "-o", "json"))["items"]
    assert {(e["involvedObject"]["name"], e["reason"], e["message"]) for e in events} == {
        (LARGE, "Rescaled", "misses queue up: 3 large + 1 small"),
        (SMALL, "Rescaled", "misses queue up: 3 large + 1 small"),
    }
    assert "Rescaled" in kubectl(kubeconfig, "get", "events")

    again = scaler.apply(decide(3, 1))
    assert (again.large.action, again.small.action) == ("unchanged", "unchanged")
    assert len(emulator.list(EVENTS)) == 2  # no event when nothing changed


def test_a_conflict_between_read_and_write_is_retried(emulator: Emulator, scaler: KubernetesScaler) -> None:
    emulator.inject_conflict(LARGE)
    outcome = scaler.apply(decide(4, 0))
    assert emulator.conflicts_served == 1
    assert outcome.large.action == "scaled" and replicas(emulator, LARGE) == 4
    scale_writes = [r for r in emulator.requests if r.method == "PATCH" and LARGE in r.path and "/scale" in r.path]
    assert len(scale_writes) == 2  # the stale one, then the one after re-reading


def test_a_manual_scale_is_noticed_recorded_and_respected(
    emulator: Emulator, scaler: KubernetesScaler, kubeconfig: Path
) -> None:
    scaler.apply(decide(3, 1))
    kubectl(kubeconfig, "scale", f"deploy/{SMALL}", "--replicas=3")

    outcome = scaler.apply(decide(3, 1, "would undo the human"))
    assert outcome.small.action == "manual" and outcome.allocation == Allocation(3, 3)
    assert replicas(emulator, SMALL) == 3
    annotations = emulator.get(DEPLOYMENTS, "default", SMALL)["metadata"]["annotations"]
    assert annotations[TARGET] == "3" and "by hand" in annotations[REASON]
    manual = [e for e in emulator.list(EVENTS) if e["reason"] == "ManualScale"]
    assert len(manual) == 1 and manual[0]["involvedObject"]["name"] == SMALL

    held = scaler.apply(decide(3, 1))  # within manual_hold_seconds: left alone, no new event
    assert held.small.action == "held" and replicas(emulator, SMALL) == 3
    assert len([e for e in emulator.list(EVENTS) if e["reason"] == "ManualScale"]) == 1


def test_the_hold_after_a_manual_scale_ends(
    emulator: Emulator, settings: Callable[..., MonitorSettings], kubeconfig: Path
) -> None:
    s = settings(manual_hold_seconds=0)
    scaler = KubernetesScaler(s, api_client(s))
    scaler.apply(decide(2, 2))
    kubectl(kubeconfig, "scale", f"deploy/{LARGE}", "--replicas=1")
    assert scaler.apply(decide(2, 2)).large.action == "manual"
    assert scaler.apply(decide(2, 2)).large.action == "scaled" and replicas(emulator, LARGE) == 2


def test_the_pause_annotation_stops_scaling(emulator: Emulator, scaler: KubernetesScaler, kubeconfig: Path) -> None:
    kubectl(kubeconfig, "annotate", f"deploy/{LARGE}", f"{PAUSED}=true")
    outcome = scaler.apply(decide(1, 3))
    assert outcome.large.action == "paused" and replicas(emulator, LARGE) == 2
    assert outcome.small.action == "scaled" and replicas(emulator, SMALL) == 3
    assert not [r for r in emulator.requests if r.method == "PATCH" and LARGE in r.path and "/scale" in r.path]


def test_missing_deployment_and_a_failing_server_are_typed_errors(
    emulator: Emulator, settings: Callable[..., MonitorSettings]
) -> None:
    s = settings(small_deployment="nope")
    with pytest.raises(ObjectMissing, match="nope"):
        KubernetesScaler(s, api_client(s)).current()

    s = settings(api_retries=2)
    pauses: list[float] = []
    scaler = KubernetesScaler(s, api_client(s), caller=Caller(s, sleep=pauses.append))
    emulator.fail_next(503, times=2)
    assert scaler.current() == Allocation(2, 2) and len(pauses) == 2  # backed off twice, then served
    emulator.fail_next(500, times=3)
    with pytest.raises(KubernetesUnavailable):
        scaler.current()


def test_invalid_replicas_are_refused_with_422(kubeconfig: Path) -> None:
    api = client.AppsV1Api(api_client(MonitorSettings(kubeconfig=str(kubeconfig))))
    for bad in (-1, 1.5):
        with pytest.raises(client.ApiException) as caught:
            api.patch_namespaced_deployment_scale(LARGE, "default", {"spec": {"replicas": bad}})
        assert caught.value.status == 422


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_leader_election_one_acts_and_the_other_takes_over(
    emulator: Emulator, settings: Callable[..., MonitorSettings]
) -> None:
    monitors = []
    for identity in ("monitor-a", "monitor-b"):
        s = settings(identity=identity)
        api = api_client(s)
        monitors.append((LeaseElector(s, api), KubernetesScaler(s, api)))
    (elector_a, _), (elector_b, scaler_b) = monitors
    elector_a.start()
    wait_for(lambda: elector_a.is_leader)
    elector_b.start()
    try:
        time.sleep(0.5)  # several rounds: b must keep failing while a renews
        assert elector_a.is_leader and not elector_b.is_leader
        acted = [scaler.apply(decide(3, 1)) for elector, scaler in monitors if elector.is_leader]
        assert len(acted) == 1
        assert emulator.get(LEASES, "default", "modm-monitor")["spec"]["holderIdentity"] == "monitor-a"

        stopped_at = time.monotonic()
        elector_a.stop(release=False)  # a crashes: it stops renewing and releases nothing
        assert not elector_a.is_leader
        wait_for(lambda: elector_b.is_leader)
        assert time.monotonic() - stopped_at >= 1.5  # b waited the lease out
        lease = emulator.get(LEASES, "default", "modm-monitor")["spec"]
        assert lease["holderIdentity"] == "monitor-b" and lease["leaseTransitions"] == 1
        assert scaler_b.apply(decide(2, 2)).allocation == Allocation(2, 2)

        elector_a.start()
        time.sleep(0.3)
        assert not elector_a.is_leader  # b renews, so a cannot take it back
        handed_at = time.monotonic()
        elector_b.stop()  # a clean stop releases the Lease: a takes over without waiting it out
        wait_for(lambda: elector_a.is_leader)
        assert time.monotonic() - handed_at < 1.5
    finally:
        elector_a.stop()
        elector_b.stop()
