"""The Kubernetes scaler and Lease elector on the local cluster's real API server, as the chart's
ServiceAccount: the chart's Role lets the monitor read and scale its two worker Deployments, take
its Lease and write Events, and nothing else. kubectl (as the cluster's admin) plays the human
operator and reads what the monitor wrote."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from modm.devcluster import Cluster
from modm.services.monitor.k8s_api import Caller, KubernetesRejected, ObjectMissing, api_client
from modm.services.monitor.k8s_scaler import DECIDED_AT, MANUAL_AT, PAUSED, REASON, TARGET, KubernetesScaler
from modm.services.monitor.leader import LeaseElector
from modm.services.monitor.observations import Allocation, Decision
from tests.integration.k8s_monitor import (
    LARGE,
    MONITOR,
    SMALL,
    get_json,
    install_for_monitor,
    monitor_settings,
    namespace,
    rolled_out,
    token_kubeconfig,
)
from tests.k8s_cluster import K8S_BUILD_TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(K8S_BUILD_TIMEOUT)]


@pytest.fixture(scope="module")
def ns(local_cluster: Cluster, helm: Path) -> Iterator[str]:
    with namespace(local_cluster) as name:
        install_for_monitor(local_cluster, helm, name, "workers.large.replicas=2", "workers.small.replicas=2")
        yield name


@pytest.fixture(scope="module")
def kubeconfig(local_cluster: Cluster, ns: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return token_kubeconfig(local_cluster, ns, tmp_path_factory.mktemp("sa") / "kubeconfig")


@pytest.fixture
def cluster(local_cluster: Cluster, ns: str) -> Cluster:
    """The cluster with both pools back at 2 + 2, running, and none of the monitor's annotations."""
    local_cluster.kubectl("-n", ns, "scale", f"deploy/{LARGE}", f"deploy/{SMALL}", "--replicas=2")
    marks = (TARGET, REASON, DECIDED_AT, MANUAL_AT, PAUSED)
    local_cluster.kubectl("-n", ns, "annotate", f"deploy/{LARGE}", f"deploy/{SMALL}", *(f"{m}-" for m in marks))
    rolled_out(local_cluster, ns)
    return local_cluster


@pytest.fixture
def scaler(kubeconfig: Path, ns: str) -> KubernetesScaler:
    settings = monitor_settings(kubeconfig, ns)
    return KubernetesScaler(settings, api_client(settings))


def decide(large: int, small: int, reason: str = "test decision") -> Decision:
    return Decision(Allocation(large, small), reason)


def replicas(cluster: Cluster, ns: str, name: str) -> int:
    return get_json(cluster, ns, "deploy", name)["spec"]["replicas"]


def annotations(cluster: Cluster, ns: str, name: str) -> dict[str, str]:
    return get_json(cluster, ns, "deploy", name)["metadata"].get("annotations", {})


def events(cluster: Cluster, ns: str, reason: str) -> list[dict]:
    return [e for e in get_json(cluster, ns, "events")["items"] if e["reason"] == reason]


# (kubectl auth can-i arguments, allowed)
CAN_I = [
    (("get", f"deployments/{LARGE}"), True),
    (("patch", f"deployments/{SMALL}"), True),
    (("get", f"deployments/{LARGE}", "--subresource=scale"), True),
    (("patch", f"deployments/{SMALL}", "--subresource=scale"), True),
    (("create", "events"), True),
    (("get", f"leases.coordination.k8s.io/{MONITOR}"), True),
    (("update", f"leases.coordination.k8s.io/{MONITOR}"), True),
    (("create", "leases.coordination.k8s.io"), True),
    (("patch", "deployments/modm-router"), False),
    (("patch", "deployments/modm-router", "--subresource=scale"), False),
    (("get", "deployments/modm-cache"), False),
    (("list", "deployments"), False),
    (("update", f"deployments/{LARGE}"), False),
    (("delete", f"deployments/{LARGE}"), False),
    (("create", "deployments"), False),
    (("get", "secrets"), False),
    (("list", "secrets"), False),
    (("get", "pods"), False),
    (("update", "leases.coordination.k8s.io/kube-scheduler"), False),
    (("get", "events"), False),
]


def test_the_charts_role_lets_the_monitor_scale_its_two_deployments_and_nothing_else(
    cluster: Cluster, ns: str, kubeconfig: Path, helm: Path
) -> None:
    def can_i(*args: str) -> bool:
        done = subprocess.run(
            [str(cluster.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", "auth", "can-i", *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.stdout.strip() in ("yes", "no"), done.stderr
        return done.stdout.strip() == "yes"

    answers = {" ".join(args): can_i(*args) for args, _ in CAN_I}
    assert answers == {" ".join(args): allowed for args, allowed in CAN_I}
    with namespace(cluster) as other:
        assert not can_i("-n", other, "get", f"deployments/{LARGE}")
        assert not can_i("-n", other, "patch", f"deployments/{LARGE}", "--subresource=scale")

        # Real calls: an identical pair of Deployments in another namespace, and a third one in
        # the monitor's own, are out of its reach; so are Secrets.
        install_for_monitor(cluster, helm, other, "workers.large.replicas=0", "workers.small.replicas=0")
        elsewhere = monitor_settings(kubeconfig, other)
        with pytest.raises(KubernetesRejected) as caught:
            KubernetesScaler(elsewhere, api_client(elsewhere)).apply(decide(1, 0))
        assert caught.value.status == 403
    cluster.kubectl("-n", ns, "create", "deployment", "intruder", "--image=registry.invalid/x", "--replicas=0")
    intruder = monitor_settings(kubeconfig, ns, large_deployment="intruder")
    with pytest.raises(KubernetesRejected, match="intruder: 403") as caught:
        KubernetesScaler(intruder, api_client(intruder)).current()
    cluster.kubectl("-n", ns, "create", "secret", "generic", "router-tokens", "--from-literal=tokens=t *")
    core = client.CoreV1Api(api_client(monitor_settings(kubeconfig, ns)))
    with pytest.raises(client.ApiException) as refused:
        core.read_namespaced_secret("router-tokens", ns)
    assert refused.value.status == 403
    assert replicas(cluster, ns, "intruder") == 0


def test_scales_both_deployments_and_explains_why(cluster: Cluster, ns: str, scaler: KubernetesScaler) -> None:
    reason = "misses queue up: 3 large + 1 small"
    outcome = scaler.apply(decide(3, 1, reason))
    assert (outcome.large.action, outcome.small.action) == ("scaled", "scaled")
    assert outcome.allocation == Allocation(3, 1) == scaler.current()
    assert (replicas(cluster, ns, LARGE), replicas(cluster, ns, SMALL)) == (3, 1)

    shown = annotations(cluster, ns, LARGE)
    assert (shown[TARGET], shown[REASON]) == ("3", reason) and shown[DECIDED_AT]
    rescaled = {
        (e["involvedObject"]["name"], e["message"], e["source"]["component"]) for e in events(cluster, ns, "Rescaled")
    }
    assert rescaled == {
        (LARGE, f"scaled from 2 to 3 replicas: {reason}", "modm-monitor"),
        (SMALL, f"scaled from 2 to 1 replicas: {reason}", "modm-monitor"),
    }
    assert reason in cluster.kubectl("-n", ns, "describe", "deploy", LARGE).stdout

    again = scaler.apply(decide(3, 1))
    assert (again.large.action, again.small.action) == ("unchanged", "unchanged")
    assert len(events(cluster, ns, "Rescaled")) == 2  # no Event when nothing changed

    emptied = scaler.apply(decide(4, 0, "no hits"))  # the server leaves replicas: 0 out of its reply
    assert emptied.allocation == Allocation(4, 0) == scaler.current()


def test_a_manual_scale_is_noticed_recorded_and_respected(
    cluster: Cluster, ns: str, scaler: KubernetesScaler, kubeconfig: Path
) -> None:
    scaler.apply(decide(3, 1))
    cluster.kubectl("-n", ns, "scale", f"deploy/{SMALL}", "--replicas=3")

    outcome = scaler.apply(decide(3, 1, "would undo the human"))
    assert outcome.small.action == "manual" and outcome.allocation == Allocation(3, 3)
    assert replicas(cluster, ns, SMALL) == 3
    shown = annotations(cluster, ns, SMALL)
    assert shown[TARGET] == "3" and "by hand" in shown[REASON] and shown[MANUAL_AT]
    manual = events(cluster, ns, "ManualScale")
    assert [e["involvedObject"]["name"] for e in manual] == [SMALL]

    held = scaler.apply(decide(3, 1))  # within manual_hold_seconds: left alone, no new Event
    assert held.small.action == "held" and replicas(cluster, ns, SMALL) == 3
    assert len(events(cluster, ns, "ManualScale")) == 1

    ended = monitor_settings(kubeconfig, ns, manual_hold_seconds=0)
    after_hold = KubernetesScaler(ended, api_client(ended)).apply(decide(3, 1))
    assert after_hold.small.action == "scaled" and replicas(cluster, ns, SMALL) == 1


def test_a_paused_pool_is_left_alone_and_the_other_grows_only_into_free_gpus(
    cluster: Cluster, ns: str, scaler: KubernetesScaler
) -> None:
    cluster.kubectl("-n", ns, "annotate", f"deploy/{SMALL}", f"{PAUSED}=true")
    outcome = scaler.apply(decide(3, 1, "misses queue up"))
    assert outcome.small.action == "paused" and replicas(cluster, ns, SMALL) == 2
    # The small pool keeps its two GPUs, so three large would leave a pod Pending for a GPU.
    assert outcome.large.action == "unchanged" and replicas(cluster, ns, LARGE) == 2
    assert outcome.held_back == f"{SMALL} paused"
    cluster.kubectl("-n", ns, "annotate", f"deploy/{SMALL}", f"{PAUSED}-")
    moved = scaler.apply(decide(3, 1, "misses queue up"))
    assert moved.allocation == Allocation(3, 1)


def test_missing_forbidden_and_invalid_are_typed_errors(cluster: Cluster, ns: str, kubeconfig: Path) -> None:
    as_admin = monitor_settings(cluster.kubeconfig, ns, small_deployment="nope")
    with pytest.raises(ObjectMissing, match="nope"):
        KubernetesScaler(as_admin, api_client(as_admin)).current()
    # The monitor's own token may not even look: its Role names only the chart's two Deployments.
    as_monitor = monitor_settings(kubeconfig, ns, small_deployment="nope")
    with pytest.raises(KubernetesRejected, match="nope: 403"):
        KubernetesScaler(as_monitor, api_client(as_monitor)).current()

    settings = monitor_settings(kubeconfig, ns, api_retries=3)
    pauses: list[float] = []
    apps = client.AppsV1Api(api_client(settings))
    with pytest.raises(KubernetesRejected) as caught:
        Caller(settings, sleep=pauses.append)(
            "scale", apps.patch_namespaced_deployment_scale, LARGE, ns, {"spec": {"replicas": -1}}
        )
    assert caught.value.status == 422 and pauses == []  # refused at once, not retried


class Clock:
    """The electors' monotonic clock, moved by the test: lease expiry without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_monitor_holds_the_lease_and_another_takes_over(cluster: Cluster, ns: str, kubeconfig: Path) -> None:
    clock = Clock()
    a, b = (
        LeaseElector(s, api_client(s), monotonic=clock)
        for s in (monitor_settings(kubeconfig, ns, identity=i) for i in ("monitor-a", "monitor-b"))
    )

    def lease() -> dict:
        return get_json(cluster, ns, "lease", MONITOR)["spec"]

    assert a.try_acquire_or_renew() and a.is_leader
    assert not b.try_acquire_or_renew()
    clock.now += 10
    assert a.try_acquire_or_renew()  # renewed: b's wait starts again from this change
    assert not b.try_acquire_or_renew()
    clock.now += 14  # a has crashed; 14 s < leaseDurationSeconds (15) since b saw it renew
    assert not b.try_acquire_or_renew()
    clock.now += 2
    assert b.try_acquire_or_renew() and b.is_leader and not a.is_leader
    assert (lease()["holderIdentity"], lease()["leaseTransitions"]) == ("monitor-b", 1)
    assert not a.try_acquire_or_renew()  # back, but b holds it

    b.release()  # a clean stop hands the Lease over: no wait for it to expire
    assert not lease().get("holderIdentity")
    assert a.try_acquire_or_renew() and lease()["holderIdentity"] == "monitor-a"
    a.release()
