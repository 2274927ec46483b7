"""A GPU moved between the pools while every GPU is in use, watched through the API server.

Both pools of the chart are pinned to one 4-GPU node, 2 + 2 pods, so the node has no free GPU.
The monitor (as the chart's ServiceAccount) moves one GPU to the large pool. A watch from the
resourceVersion read before the move sees every change of the two Deployments in order: the
small pool's scale is written first, and the large pool's only once the small pool's status
shows its pod gone (kwok ends a deleted pod at once, whatever its terminationGracePeriodSeconds;
a real kubelet takes up to the grace period, and the monitor waits that long). So the new large
pod is scheduled at once: no FailedScheduling, no pod Pending, every GPU of the node in use.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, watch

from modm.devcluster import Cluster
from modm.services.monitor.k8s_api import api_client
from modm.services.monitor.k8s_scaler import KubernetesScaler
from modm.services.monitor.observations import Allocation, Decision
from tests.integration.k8s_monitor import (
    LARGE,
    SMALL,
    eventually,
    get_json,
    install_for_monitor,
    monitor_settings,
    namespace,
    rolled_out,
    token_kubeconfig,
)
from tests.k8s_cluster import K8S_BUILD_TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(K8S_BUILD_TIMEOUT)]

NODE = "nvidia-1"
GPU = "nvidia.com/gpu"


def gpu_pods(cluster: Cluster, *where: str) -> list[dict]:
    pods = json.loads(cluster.kubectl("get", "pods", *where, "-o", "json").stdout)["items"]
    return [p for p in pods if any(GPU in c["resources"].get("limits", {}) for c in p["spec"]["containers"])]


@pytest.fixture
def ns(local_cluster: Cluster, helm: Path) -> Iterator[str]:
    on_node = f"--field-selector=spec.nodeName={NODE}"
    eventually(lambda: not gpu_pods(local_cluster, "-A", on_node), f"{NODE}'s GPUs to be free (other tests' pods)")
    pin = f"nodeSelector.kubernetes\\.io/hostname={NODE}"
    with namespace(local_cluster) as name:
        install_for_monitor(
            local_cluster, helm, name,
            "workers.large.replicas=2", "workers.small.replicas=2", f"workers.large.{pin}", f"workers.small.{pin}",
        )  # fmt: skip
        rolled_out(local_cluster, name)
        yield name


def test_a_move_shrinks_first_and_grows_once_the_gpu_is_free(local_cluster: Cluster, ns: str, tmp_path: Path) -> None:
    node = get_json(local_cluster, "default", "node", NODE)
    assert node["status"]["allocatable"][GPU] == "4" and len(gpu_pods(local_cluster, "-n", ns)) == 4
    admin = api_client(monitor_settings(local_cluster.kubeconfig, ns))
    apps = client.AppsV1Api(admin)
    before = apps.list_namespaced_deployment(ns).metadata.resource_version

    settings = monitor_settings(token_kubeconfig(local_cluster, ns, tmp_path / "kubeconfig"), ns)
    outcome = KubernetesScaler(settings, api_client(settings)).apply(Decision(Allocation(3, 1), "misses queue up"))
    assert outcome.allocation == Allocation(3, 1)

    seen: list[client.V1Deployment] = []  # every version of the two Deployments since `before`, in order
    w = watch.Watch()
    for event in w.stream(apps.list_namespaced_deployment, ns, resource_version=before, timeout_seconds=30):
        seen.append(event["object"])
        if any(d.metadata.name == LARGE and d.spec.replicas == 3 for d in seen):
            w.stop()
    grown_at = next(i for i, d in enumerate(seen) if d.metadata.name == LARGE and d.spec.replicas == 3)
    small = [d for d in seen[:grown_at] if d.metadata.name == SMALL]
    assert small and small[-1].spec.replicas == 1, "the small pool was not scaled down before the large grew"
    status = small[-1].status
    assert (status.replicas, status.terminating_replicas) == (1, 0), status  # its pod was gone

    rolled_out(local_cluster, ns)
    pods = gpu_pods(local_cluster, "-n", ns)
    assert sorted(p["metadata"]["labels"]["modm.io/pool"] for p in pods) == ["large", "large", "large", "small"]
    assert {(p["spec"].get("nodeName"), p["status"]["phase"]) for p in pods} == {(NODE, "Running")}
    failed = get_json(local_cluster, ns, "events", "--field-selector=reason=FailedScheduling")["items"]
    assert not failed, [e["message"] for e in failed]
    admin.close()
