"""The chart installed for real: `helm install` (not `template`) into a namespace of the local
cluster (tests/k8s_cluster.py), whose API server validates and admits every object with its own
rules, not only our schemas. Each namespace enforces the restricted Pod Security Standard, so the
pods the Deployments create (and the helm test Pod, dry-run on the server) pass that admission too.
`helm upgrade` and `helm uninstall` run against the same server, and the scheduler places the
worker pods on kwok's fake GPU nodes by their GPU limits and node selectors.

No --wait: each test polls, with a bound, for exactly what it checks.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from modm.devcluster import Cluster
from tests.integration.test_chart import CHART, MATRIX, run_helm, sets
from tests.integration.test_kustomize import (
    as_list,
    create_restricted_namespace,
    docs,
    items_of,
    names,
    pods_admitted,
    wait_for,
)
from tests.k8s_cluster import K8S_BUILD_TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(K8S_BUILD_TIMEOUT)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
RELEASE = "rel"
SERVICE_MONITOR = "metrics.serviceMonitor.enabled=true"  # its CRD (Prometheus operator's) is not installed
CASES = {
    "defaults": [],
    "nvidia-example": ["-f", str(EXAMPLES / "chart-nvidia.yaml")],
    "amd-example": ["-f", str(EXAMPLES / "chart-amd.yaml")],
    "embedded-stores-no-pvc": sets(MATRIX["embedded-stores-no-pvc"]),
    "everything": sets([v for v in MATRIX["everything"] if v != SERVICE_MONITOR] + ["router.service.httpPort=8080"]),
}
# The Secrets the cases name, created first as a user does (the chart only refers to them).
SECRETS = {
    "tokens": {"tokens": "operator-token *\n", "test-token": "operator-token"},
    "modm-tokens": {"tokens": "operator-token *\n", "test-token": "operator-token"},
    "tls": {"tls.crt": "not a certificate", "tls.key": "not a key", "ca.crt": "not a CA"},
    "stores": {"milvus-token": "root:Milvus", "s3-access-key": "access", "s3-secret-key": "secret"},
    "hf": {"token": "hf_x"},
    "hf-token": {"token": "hf_x"},
}
WORKERS = "app.kubernetes.io/component=worker"


@pytest.fixture
def namespace(local_cluster: Cluster) -> Iterator[str]:
    """A namespace of this test's own, restricted Pod Security enforced, holding SECRETS."""
    name = f"chart-{uuid.uuid4().hex[:8]}"
    create_restricted_namespace(local_cluster, name)
    secrets = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}, "stringData": data}
        for secret, data in SECRETS.items()
    ]
    local_cluster.kubectl("-n", name, "apply", "-f", "-", input=json.dumps(as_list(secrets)))
    yield name
    local_cluster.kubectl("delete", "namespace", name, "--wait=false")


def helm_on(cluster: Cluster, helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """helm against the local cluster. Fails on an error, and on anything on stderr: there helm
    prints the warnings the API server answers with (unknown fields, Pod Security would-violate,
    deprecated APIs), which it accepts the object with."""
    done = run_helm(helm, *args, "--kubeconfig", str(cluster.kubeconfig))
    assert done.returncode == 0, done.stderr
    assert not done.stderr.strip(), done.stderr
    return done


def install(cluster: Cluster, helm: Path, namespace: str, *values: str) -> list[dict[str, Any]]:
    """`helm install` without --wait; the release's objects, as helm recorded them."""
    helm_on(cluster, helm, "install", RELEASE, str(CHART), "-n", namespace, "--wait=false", *values)
    return docs(helm_on(cluster, helm, "get", "manifest", RELEASE, "-n", namespace).stdout)


def live(cluster: Cluster, namespace: str, objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(kind, name) of the objects that exist on the server, read back through its API."""
    done = cluster.kubectl(
        "-n", namespace, "get", "-f", "-", "--ignore-not-found", "-o", "json", input=json.dumps(as_list(objects))
    )
    return names(items_of(done.stdout))


def pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"labelSelector": selector})
    return cluster.api("GET", f"/api/v1/namespaces/{namespace}/pods?{query}")["items"]


@pytest.mark.parametrize("case", CASES)
def test_install_is_admitted_by_the_api_server(local_cluster: Cluster, helm: Path, namespace: str, case: str) -> None:
    objects = install(local_cluster, helm, namespace, *CASES[case])
    assert {"Deployment", "Service", "NetworkPolicy", "Role", "RoleBinding", "PodDisruptionBudget"} <= {
        o["kind"] for o in objects
    }
    assert live(local_cluster, namespace, objects) == names(objects)
    # The helm test Pod is a hook, created only by `helm test` (it would wait for a generation that
    # kwok's pods never make): a server-side dry run puts it through validation and admission.
    hooks = docs(helm_on(local_cluster, helm, "get", "hooks", RELEASE, "-n", namespace).stdout)
    assert [h["kind"] for h in hooks] == ["Pod"]
    local_cluster.kubectl("-n", namespace, "create", "--dry-run=server", "-f", "-", input=json.dumps(as_list(hooks)))
    pods_admitted(local_cluster, namespace)


def test_upgrade_keeps_the_monitors_split_and_uninstall_removes_everything(
    local_cluster: Cluster, helm: Path, namespace: str
) -> None:
    objects = install(local_cluster, helm, namespace)
    deployments = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    # The monitor moves a GPU from the large pool to the small one, through the scale subresource.
    for pool, replicas in (("large", 3), ("small", 5)):
        local_cluster.kubectl(
            "-n", namespace, "scale", f"deployment/{RELEASE}-modm-worker-{pool}", f"--replicas={replicas}"
        )

    def state() -> dict[str, tuple[int, set[str]]]:
        return {
            d["metadata"]["name"].removeprefix(f"{RELEASE}-modm-"): (
                d["spec"]["replicas"],
                {c["image"].rsplit(":", 1)[1] for c in d["spec"]["template"]["spec"]["containers"]},
            )
            for d in local_cluster.api("GET", deployments)["items"]
        }

    # A new image tag: every Deployment rolls to it, and the pools keep the monitor's 3 + 5.
    helm_on(local_cluster, helm, "upgrade", RELEASE, str(CHART), "-n", namespace, "--reuse-values",
            "--set", "global.imageTag=0.2.0")  # fmt: skip
    after = state()
    assert (after["worker-large"], after["worker-small"]) == ((3, {"0.2.0-nvidia"}), (5, {"0.2.0-nvidia"}))
    assert {tag for _, tags in after.values() for tag in tags} == {"0.2.0", "0.2.0-nvidia"}, after
    # A changed pool size is applied; the pool whose value did not change stays the monitor's.
    helm_on(local_cluster, helm, "upgrade", RELEASE, str(CHART), "-n", namespace, "--reuse-values",
            "--set", "workers.large.replicas=2")  # fmt: skip
    after = state()
    assert (after["worker-large"][0], after["worker-small"][0]) == (2, 5)

    # Foreground: the Deployments go only after their pods.
    helm_on(
        local_cluster, helm, "uninstall", RELEASE, "-n", namespace, "--cascade=foreground", "--wait", "--timeout=60s"
    )
    assert live(local_cluster, namespace, objects) == set()
    assert pods(local_cluster, namespace, "") == []


class PodState(NamedTuple):
    name: str
    phase: str
    node: str | None
    unschedulable: str | None  # the scheduler's message, while it finds no node


def worker_states(cluster: Cluster, namespace: str) -> list[PodState]:
    states = []
    for pod in pods(cluster, namespace, WORKERS):
        why = [
            c.get("message", "")
            for c in pod["status"].get("conditions", [])
            if c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable"
        ]
        name, phase, node = pod["metadata"]["name"], pod["status"].get("phase", ""), pod["spec"].get("nodeName")
        states.append(PodState(name, phase, node, why[0] if why else None))
    return states


def all_gpus_free(cluster: Cluster, resource: str) -> int:
    """Waits until no pod holds a `resource` GPU (an earlier test's namespace is deleted without
    waiting, its pods go in the background); the cluster's number of them."""
    nodes = cluster.api("GET", "/api/v1/nodes")["items"]
    total = sum(int(n["status"]["allocatable"].get(resource, "0")) for n in nodes)

    def probe() -> tuple[bool, list[str]]:
        holders = [
            f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            for p in cluster.api("GET", "/api/v1/pods")["items"]
            if p["spec"].get("nodeName")
            and p["status"].get("phase") not in ("Succeeded", "Failed")
            and any(resource in c["resources"].get("limits", {}) for c in p["spec"]["containers"])
        ]
        return not holders, holders

    wait_for(f"every {resource} free", probe)
    return total


def test_ten_one_gpu_workers_on_eight_nvidia_gpus_leave_two_pending(
    local_cluster: Cluster, helm: Path, namespace: str
) -> None:
    assert all_gpus_free(local_cluster, "nvidia.com/gpu") == 8
    install(local_cluster, helm, namespace, *sets(["workers.large.replicas=5", "workers.small.replicas=5"]))

    def placed() -> tuple[bool, list[PodState]]:
        workers = worker_states(local_cluster, namespace)
        running = [w for w in workers if w.phase == "Running"]
        unschedulable = [w for w in workers if w.unschedulable]
        return (len(workers), len(running), len(unschedulable)) == (10, 8, 2), workers

    workers = wait_for("8 workers running, 2 unschedulable", placed)
    assert Counter(w.node for w in workers if w.phase == "Running") == {"nvidia-0": 4, "nvidia-1": 4}
    pending = [w for w in workers if w.phase == "Pending"]
    assert len(pending) == 2, workers
    for worker in pending:
        assert worker.node is None and "Insufficient nvidia.com/gpu" in (worker.unschedulable or ""), worker


def test_the_amd_example_places_the_workers_on_the_amd_node(local_cluster: Cluster, helm: Path, namespace: str) -> None:
    assert all_gpus_free(local_cluster, "amd.com/gpu") == 2
    objects = install(local_cluster, helm, namespace, *CASES["amd-example"])

    def placed() -> tuple[bool, list[PodState]]:
        workers = worker_states(local_cluster, namespace)
        return len(workers) == 2 and all((w.phase, w.node) == ("Running", "amd-0") for w in workers), workers

    wait_for("both workers running on amd-0", placed)
    labels = local_cluster.api("GET", "/api/v1/nodes/amd-0")["metadata"]["labels"]
    workers = [
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    ]
    assert len(workers) == 2
    for deployment in workers:
        selector = deployment["spec"]["template"]["spec"]["nodeSelector"]
        assert "feature.node.kubernetes.io/amd-gpu" in selector and selector.items() <= labels.items(), selector
