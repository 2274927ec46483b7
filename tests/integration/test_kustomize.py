"""The kustomize overlays render with kubectl and pass the project checks an API server cannot
make, and `kubectl apply -k` puts them on the local cluster (tests/k8s_cluster.py), whose API
server validates every object and admits their pods into a namespace that enforces the
restricted Pod Security Standard; `kubectl delete -k` removes them. The checks and cluster
helpers below are shared with the chart's tests."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modm.devcluster import Cluster
from modm.services.cache.settings import CacheSettings
from modm.services.monitor.k8s_scaler import REQUIRED_RBAC
from modm.services.monitor.settings import MonitorSettings
from modm.services.router.settings import RouterSettings
from modm.services.worker.settings import WorkerSettings
from modm.settings import ServiceSettings
from tests.k8s_cluster import K8S_BUILD_TIMEOUT
from tests.tools import find_tool

ROOT = Path(__file__).resolve().parents[2]
GPU_KEYS = {"nvidia.com/gpu", "amd.com/gpu"}
PSA_RESTRICTED = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn")}
SETTINGS: dict[str, type[ServiceSettings]] = {
    "router": RouterSettings,
    "cache": CacheSettings,
    "worker": WorkerSettings,
    "monitor": MonitorSettings,
}


def docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def names(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objects}


def as_list(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": objects}


def items_of(output: str) -> list[dict[str, Any]]:
    """The objects of `kubectl get -o json` output: a List, one object, or nothing."""
    if not output.strip():
        return []
    reply = json.loads(output)
    return reply["items"] if reply["kind"] == "List" else [reply]


def create_restricted_namespace(cluster: Cluster, name: str) -> None:
    """A namespace where Pod Security admission enforces the restricted standard on pods (and
    warns at apply time about Deployments whose pods it would refuse)."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": PSA_RESTRICTED}}
    cluster.api("POST", "/api/v1/namespaces", namespace)


def wait_for(what: str, probe: Callable[[], tuple[bool, Any]], timeout: float = 60.0) -> Any:
    """Calls `probe` until it says done (at most `timeout` s) and returns its detail; the last
    detail goes into the failure."""
    deadline = time.monotonic() + timeout
    while True:
        done, detail = probe()
        if done:
            return detail
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s: {detail}")
        time.sleep(0.5)


def pods_admitted(cluster: Cluster, namespace: str) -> None:
    """Every Deployment of the namespace gets all its pods created: admission refused none (a
    refusal shows as the ReplicaFailure condition, which fails at once)."""

    def probe() -> tuple[bool, dict[str, tuple[int, int]]]:
        items = cluster.api("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments")["items"]
        refused = [
            f"{d['metadata']['name']}: {c['message']}"
            for d in items
            for c in d.get("status", {}).get("conditions", [])
            if c["type"] == "ReplicaFailure" and c["status"] == "True"
        ]
        assert not refused, refused
        counts = {d["metadata"]["name"]: (d["status"].get("replicas", 0), d["spec"]["replicas"]) for d in items}
        return bool(items) and all(have == want for have, want in counts.values()), counts

    wait_for(f"every Deployment's pods in {namespace}", probe)


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]


def settings_env(settings: type[ServiceSettings]) -> tuple[set[str], set[str]]:
    """(every MODM_* variable the service reads, the ones it cannot start without)."""
    prefix = settings.model_config.get("env_prefix", "")
    known, required = set(), set()
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        known |= {prefix + name.upper()} | {c.upper() for c in getattr(alias, "choices", []) if isinstance(c, str)}
        if field.is_required():
            required.add(prefix + name.upper())
    return known, required


def check_env(name: str, component: str, container: dict) -> None:
    """A misspelt MODM_* variable is silently ignored by the service (the API server accepts any
    name), so each must be a setting of the component's, and the required ones must be there."""
    known, required = settings_env(SETTINGS[component])
    variables = {e["name"] for e in container.get("env", [])}
    unknown = {v for v in variables if v.startswith("MODM_") and v != "MODM_HOME"} - known
    assert not unknown, f"{name}: {sorted(unknown)} are not {component} settings"
    assert required <= variables, f"{name}: {sorted(required - variables)} missing"


def project_checks(objects: list[dict], gpu_key: str) -> None:
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    services = [o for o in objects if o["kind"] == "Service"]
    assert deployments and services
    for dep in deployments:
        labels = dep["spec"]["template"]["metadata"]["labels"]
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), f"{dep['metadata']['name']}: selector does not match its pods"
        spec = pod_spec(dep)
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["capabilities"]["drop"] == ["ALL"] and sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert c["readinessProbe"]["grpc"]["port"] in {p["containerPort"] for p in c["ports"]}
            assert "limits" in c["resources"] and "requests" in c["resources"]
            check_env(dep["metadata"]["name"], labels["app.kubernetes.io/component"], c)
        gpus = [
            (k, v) for c in spec["containers"] for k, v in c["resources"].get("limits", {}).items() if k in GPU_KEYS
        ]
        if labels["app.kubernetes.io/component"] == "worker":
            assert gpus == [(gpu_key, 1)], f"{dep['metadata']['name']}: worker pods need exactly one {gpu_key}"
            assert any(t["key"] == gpu_key for t in spec["tolerations"])
            assert "startupProbe" in spec["containers"][0]
        else:
            assert not gpus, f"{dep['metadata']['name']} asks for a GPU"
    for svc in services:
        sel = svc["spec"]["selector"]
        targets = [d for d in deployments if sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert targets, f"service {svc['metadata']['name']} selects no pods"
        for port in svc["spec"]["ports"]:
            names = {
                (p.get("name"), p["containerPort"])
                for d in targets
                for c in pod_spec(d)["containers"]
                for p in c["ports"]
            }
            target = port.get("targetPort", port["port"])
            assert any(target in pair for pair in names), (
                f"{svc['metadata']['name']}:{port['name']} has no container port"
            )
    for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        sel = pdb["spec"]["selector"]["matchLabels"]
        assert any(sel.items() <= d["spec"]["template"]["metadata"]["labels"].items() for d in deployments)
    images = {c["image"] for d in deployments for c in pod_spec(d)["containers"]}
    tags = {i.rsplit(":", 1)[1].removesuffix("-nvidia").removesuffix("-rocm") for i in images}
    assert len(tags) == 1, f"image tags differ: {sorted(images)}"
    suffix = "-nvidia" if gpu_key == "nvidia.com/gpu" else "-rocm"
    assert all(i.endswith(suffix) for i in images if "modm-worker" in i), images
    assert any(o["kind"] == "PodDisruptionBudget" for o in objects), "the router needs a PodDisruptionBudget"
    role = next(o for o in objects if o["kind"] == "Role")
    assert {
        (g, r, tuple(rule["verbs"])) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    } == {(rule.api_group, rule.resource, rule.verbs) for rule in REQUIRED_RBAC}, (
        "the Role must grant exactly what the code calls"
    )
    open_ports = [
        (p["metadata"]["name"], rule)
        for p in objects
        if p["kind"] == "NetworkPolicy"
        for rule in p["spec"].get("ingress", [])
        if "from" not in rule
    ]
    assert [name for name, _ in open_ports] and all("router" in name for name, _ in open_ports), open_ports


OVERLAYS = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu", "external-stores": "nvidia.com/gpu"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_passes_project_checks(kubectl: Path, overlay: str) -> None:
    done = subprocess.run(
        [str(kubectl), "kustomize", str(ROOT / "k8s/overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    objects = docs(done.stdout)
    project_checks(objects, OVERLAYS[overlay])
    cache = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "modm-cache")
    env = {e["name"]: e for e in cache["spec"]["template"]["spec"]["containers"][0]["env"]}
    if overlay == "external-stores":
        assert env["MODM_CACHE_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "modm-cache-stores"
        assert "MODM_MILVUS_URI" in env and not any(o["kind"] == "PersistentVolumeClaim" for o in objects)
    else:
        assert "MODM_CACHE_S3_ENDPOINT" not in env


@pytest.fixture(scope="module")
def overlays_namespace(local_cluster: Cluster) -> Iterator[str]:
    """The overlays' own namespace (they set `namespace: modm`), restricted Pod Security enforced."""
    create_restricted_namespace(local_cluster, "modm")
    yield "modm"
    local_cluster.kubectl("delete", "namespace", "modm", "--wait=false")


@pytest.mark.slow
@pytest.mark.timeout(K8S_BUILD_TIMEOUT)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_applied_admitted_and_deleted(local_cluster: Cluster, overlays_namespace: str, overlay: str) -> None:
    path = str(ROOT / "k8s/overlays" / overlay)
    rendered = names(docs(local_cluster.kubectl("kustomize", path).stdout))
    applied = local_cluster.kubectl("apply", "-k", path)
    assert not applied.stderr.strip(), applied.stderr  # the API server's warnings: Pod Security, deprecations

    def live() -> set[tuple[str, str]]:
        return names(items_of(local_cluster.kubectl("get", "-k", path, "--ignore-not-found", "-o", "json").stdout))

    assert live() == rendered
    pods_admitted(local_cluster, overlays_namespace)
    # Foreground: the pods go before their Deployments, so the next overlay starts from nothing.
    local_cluster.kubectl("delete", "-k", path, "--cascade=foreground", "--timeout=60s", timeout=90)
    assert live() == set()
    assert local_cluster.api("GET", f"/api/v1/namespaces/{overlays_namespace}/pods")["items"] == []


@pytest.mark.slow
@pytest.mark.timeout(K8S_BUILD_TIMEOUT)
def test_the_tests_run_the_local_clusters_kubectl(local_cluster: Cluster) -> None:
    assert find_tool("kubectl") == local_cluster.bin_dir / "kubectl"  # not .tools/'s older one
