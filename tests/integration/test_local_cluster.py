"""The local Kubernetes cluster (scripts/local-cluster, modm.devcluster) is a real one: the pinned
release answers, kwok's GPU nodes are Ready with their GPUs allocatable, the scheduler places GPU
pods on them within their capacity and kwok runs them, RBAC refuses a ServiceAccount without a
role, and `down` leaves nothing behind."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from modm.devcluster import POD_CIDR, Cluster
from modm.devcluster.cluster import Process
from tests.k8s_cluster import K8S_BUILD_TIMEOUT, k8s_binaries

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(K8S_BUILD_TIMEOUT)]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def namespace(local_cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    local_cluster.kubectl("create", "namespace", name)
    yield name
    local_cluster.kubectl("delete", "namespace", name, "--wait=false")


def get_json(cluster: Cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def test_server_and_kubectl_report_the_pinned_release(local_cluster: Cluster) -> None:
    pinned = local_cluster.versions["kubernetes"]
    reply = json.loads(local_cluster.kubectl("version", "-o", "json").stdout)
    major, minor, _ = pinned.removeprefix("v").split(".")
    for side in ("serverVersion", "clientVersion"):
        assert reply[side]["gitVersion"] == pinned, reply
        assert (reply[side]["major"], reply[side]["minor"]) == (major, minor)
        assert reply[side]["gitTreeState"] == "clean"
    etcd = subprocess.run([str(local_cluster.bin_dir / "etcd"), "--version"], capture_output=True, text=True)
    assert f"etcd Version: {local_cluster.versions['etcd'].removeprefix('v')}" in etcd.stdout


def test_gpu_nodes_are_ready_with_vendor_labels_and_allocatable_gpus(local_cluster: Cluster) -> None:
    nodes = {n["metadata"]["name"]: n for n in get_json(local_cluster, "nodes")["items"]}
    assert sorted(nodes) == ["amd-0", "cpu-0", "nvidia-0", "nvidia-1"]
    for node in nodes.values():
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", node["status"]["conditions"]
        assert node["status"]["addresses"][0] == {"address": "127.0.0.1", "type": "InternalIP"}
    for name in ("nvidia-0", "nvidia-1"):
        labels, allocatable = nodes[name]["metadata"]["labels"], nodes[name]["status"]["allocatable"]
        assert allocatable["nvidia.com/gpu"] == "4"
        assert labels["nvidia.com/gpu.present"] == "true"
        assert labels["nvidia.com/gpu.count"] == "4"
        assert labels["nvidia.com/gpu.product"].startswith("NVIDIA-")
    amd = nodes["amd-0"]
    assert amd["status"]["allocatable"]["amd.com/gpu"] == "2"
    assert amd["metadata"]["labels"]["feature.node.kubernetes.io/amd-gpu"] == "true"
    assert amd["metadata"]["labels"]["amd.com/gpu.product-name"]
    assert "nvidia.com/gpu" not in nodes["cpu-0"]["status"]["allocatable"]


def gpu_deployment(name: str, replicas: int) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "nodeSelector": {"nvidia.com/gpu.present": "true"},
                        "containers": [
                            {
                                "name": "worker",
                                "image": "registry.invalid/modm-worker:never-pulled",
                                "resources": {"limits": {"nvidia.com/gpu": "1"}},
                            }
                        ],
                    },
                },
            },
        }
    )


def test_gpu_deployment_is_scheduled_within_capacity_and_runs(local_cluster: Cluster, namespace: str) -> None:
    # 9 one-GPU replicas on 8 GPUs: 8 run on the NVIDIA nodes, the ninth stays Pending for want of a GPU.
    local_cluster.kubectl("-n", namespace, "apply", "-f", "-", input=gpu_deployment("gpu-worker", 9))
    deadline = time.monotonic() + 90
    while True:
        pods = get_json(local_cluster, "-n", namespace, "pods", "-l", "app=gpu-worker")["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        pending = [p for p in pods if p["status"].get("phase") == "Pending"]
        if (len(running), len(pending)) == (8, 1) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert (len(running), len(pending)) == (8, 1), [(p["metadata"]["name"], p["status"]) for p in pods]
    per_node: dict[str, int] = {}
    for pod in running:
        per_node[pod["spec"]["nodeName"]] = per_node.get(pod["spec"]["nodeName"], 0) + 1
        assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(POD_CIDR)
        assert all(c["ready"] for c in pod["status"]["containerStatuses"])
    assert per_node == {"nvidia-0": 4, "nvidia-1": 4}
    events = get_json(local_cluster, "-n", namespace, "events", "--field-selector", "reason=FailedScheduling")
    assert any("Insufficient nvidia.com/gpu" in e["message"] for e in events["items"]), events["items"]

    # The Deployment controller follows a scale down (the pending pod goes first), kwok deletes the pods.
    local_cluster.kubectl("-n", namespace, "scale", "deployment/gpu-worker", "--replicas=4")
    local_cluster.kubectl("-n", namespace, "rollout", "status", "deployment/gpu-worker", "--timeout=90s", timeout=100)
    status = get_json(local_cluster, "-n", namespace, "deployment", "gpu-worker")["status"]
    assert (status["readyReplicas"], status["availableReplicas"]) == (4, 4)


def test_rbac_refuses_a_service_account_without_a_role(local_cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    local_cluster.kubectl("-n", namespace, "create", "serviceaccount", "nobody")
    token = local_cluster.kubectl("-n", namespace, "create", "token", "nobody", "--duration=10m").stdout.strip()
    config = tmp_path / "token.kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\n")  # nothing of the admin's: only the flags below

    def as_token(token: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(local_cluster.bin_dir / "kubectl"),
                f"--kubeconfig={config}",
                f"--server={local_cluster.server}",
                f"--certificate-authority={local_cluster.ca_file}",
                f"--token={token}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )

    refused = as_token(token, "-n", namespace, "get", "pods")
    assert refused.returncode != 0
    assert "Forbidden" in refused.stderr, refused.stderr
    assert f"system:serviceaccount:{namespace}:nobody" in refused.stderr
    assert "Unauthorized" in as_token(token[:-4] + "AAAA", "-n", namespace, "get", "pods").stderr

    local_cluster.kubectl("-n", namespace, "create", "role", "pod-reader", "--verb=get,list", "--resource=pods")
    local_cluster.kubectl(
        "-n",
        namespace,
        "create",
        "rolebinding",
        "nobody-reads",
        "--role=pod-reader",
        f"--serviceaccount={namespace}:nobody",
    )
    deadline = time.monotonic() + 30
    while (allowed := as_token(token, "-n", namespace, "get", "pods")).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.5)  # the authorizer's cache catches up with the new binding
    assert allowed.returncode == 0, allowed.stderr
    still_refused = as_token(token, "get", "pods", "-n", "kube-system")
    assert "Forbidden" in still_refused.stderr


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_script_up_prints_kubeconfig_last_and_down_removes_everything(tmp_path: Path) -> None:
    k8s_binaries()  # skip, or build under CI, as the fixture does
    folder = tmp_path / "second"
    env = {k: v for k, v in os.environ.items() if k != "MODM_LOCAL_CLUSTER_DIR"}
    started = subprocess.run(
        [str(ROOT / "scripts/local-cluster"), "--dir", str(folder), "up", "--gpus", "2", "--cpu-nodes", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    state_file = folder / "state.json"
    state: dict = {}
    try:
        assert started.returncode == 0, started.stderr
        last = started.stdout.strip().splitlines()[-1]
        assert last.startswith("KUBECONFIG="), started.stdout
        kubeconfig = last.removeprefix("KUBECONFIG=")
        state = json.loads(state_file.read_text())
        kubectl = str(Path(state["bin_dir"]) / "kubectl")
        nodes = subprocess.run(
            [kubectl, "get", "nodes", "-o", "name"],
            env={**env, "KUBECONFIG": kubeconfig},
            capture_output=True,
            text=True,
        )
        assert nodes.stdout.split() == ["node/nvidia-0"], nodes.stderr
        assert [p["name"] for p in state["processes"]] == [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        ]
        status = subprocess.run([str(ROOT / "scripts/local-cluster"), "status", "--dir", str(folder)], env=env)
        assert status.returncode == 0
    finally:
        stopped = subprocess.run(
            [str(ROOT / "scripts/local-cluster"), "down", "--dir", str(folder)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert stopped.returncode == 0, stopped.stderr
    assert not folder.exists()
    assert not any(Process(**p).alive() for p in state["processes"])  # gone (a zombie counts as gone)
    assert not any(port_open(port) for port in state["ports"].values())
    again = subprocess.run([str(ROOT / "scripts/local-cluster"), "down", "--dir", str(folder)], env=env, text=True)
    assert again.returncode == 0  # nothing to stop is not an error
