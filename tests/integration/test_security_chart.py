"""The chart's security properties, on manifests rendered by the real helm.

Every pod (Deployments and the helm test Pod, all containers and init containers) runs without
privileges; the NetworkPolicies, evaluated the way Kubernetes does (a pod selected by any policy
accepts only what some selecting policy's rule allows), keep every port but the router's public
ones (gRPC, and HTTP when enabled) unreachable from outside the release; the monitor's RBAC is a
namespaced Role with only the verbs its scaler calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_chart import CHART, MATRIX, run_helm, sets
from tests.integration.test_kustomize import docs

pytestmark = pytest.mark.integration

CASES = ["nvidia-defaults", "amd", "everything"]
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "Pod"}
METRICS_PORT = 9090
RELEASE = {"app.kubernetes.io/name": "modm", "app.kubernetes.io/instance": "rel"}
# Who might knock, by namespace and labels: the release's own pods, then strangers.
STRANGERS = {
    "a pod of another app in the namespace": ("modm", {"app": "intruder"}),
    "a pod of another release": ("modm", {"app.kubernetes.io/name": "modm", "app.kubernetes.io/instance": "other"}),
    "a pod in another namespace": ("elsewhere", {**RELEASE, "app.kubernetes.io/component": "router"}),
}


def rendered(helm: Path, case: str) -> list[dict[str, Any]]:
    done = run_helm(helm, "template", "rel", str(CHART), "-n", "modm", *sets(MATRIX[case]))
    assert done.returncode == 0, done.stderr
    return docs(done.stdout)


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj["metadata"]["labels"] if obj["kind"] == "Pod" else obj["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("case", CASES)
def test_every_pod_runs_without_privileges(helm: Path, case: str) -> None:
    pods = [o for o in rendered(helm, case) if o["kind"] in POD_KINDS]
    assert {pod_labels(p)["app.kubernetes.io/component"] for p in pods} >= {
        "router",
        "cache",
        "worker",
        "monitor",
        "test",
    }
    for pod in pods:
        name, spec = pod["metadata"]["name"], pod_spec(pod)
        sc = spec["securityContext"]
        assert sc["runAsNonRoot"] is True and sc.get("runAsUser", 1) != 0, name
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
        assert not any("hostPath" in v for v in spec.get("volumes", [])), name
        monitor = pod_labels(pod)["app.kubernetes.io/component"] == "monitor"
        assert spec.get("automountServiceAccountToken") is monitor, f"{name}: only the monitor talks to the API"
        for container in spec["containers"] + spec.get("initContainers", []):
            csc = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert csc["allowPrivilegeEscalation"] is False and not csc.get("privileged"), where
            assert csc["readOnlyRootFilesystem"] is True, where
            assert csc["capabilities"]["drop"] == ["ALL"] and not csc["capabilities"].get("add"), where
            assert csc.get("runAsUser", 1) != 0 and csc.get("runAsNonRoot", True) is True, where


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"  # no matchExpressions here
    return selector.get("matchLabels", {}).items() <= labels.items()


def admits(rule: dict[str, Any], namespace: str, labels: dict[str, str], port: int) -> bool:
    """Whether one ingress rule lets a pod (namespace, labels) in on `port` (policy namespace: modm)."""
    ports = rule.get("ports")
    if ports and not any(p.get("port") == port for p in ports):
        return False
    peers = rule.get("from")
    if not peers:
        return True  # no `from`: every source, in the cluster and outside it
    for peer in peers:
        assert "ipBlock" not in peer, "an ipBlock would admit sources outside the cluster"
        if "namespaceSelector" in peer:
            return True  # conservatively: some other namespace
        if namespace == "modm" and selects(peer["podSelector"], labels):
            return True
    return False


def reachable(
    policies: list[dict[str, Any]], target: dict[str, str], port: int, source: tuple[str, dict[str, str]]
) -> bool:
    selecting = [p for p in policies if selects(p["spec"]["podSelector"], target)]
    if not any("Ingress" in p["spec"]["policyTypes"] for p in selecting):
        return True  # isolated by nothing
    return any(admits(rule, *source, port) for p in selecting for rule in p["spec"].get("ingress", []))


@pytest.mark.parametrize("case", CASES)
def test_only_the_routers_public_port_is_reachable_from_outside_the_release(helm: Path, case: str) -> None:
    objects = rendered(helm, case)
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    assert policies, "networkPolicy.enabled is the default"
    pods = [o for o in objects if o["kind"] == "Deployment"]
    checked = 0
    for pod in pods:
        labels = pod_labels(pod)
        component = labels["app.kubernetes.io/component"]
        for port in {p["containerPort"] for c in pod_spec(pod)["containers"] for p in c.get("ports", [])}:
            for who, source in STRANGERS.items():
                allowed = reachable(policies, labels, port, source)
                checked += 1
                if component == "router" and port != METRICS_PORT:  # gRPC, and the HTTP API when enabled
                    assert allowed, f"the router's public port {port} is closed to {who}"
                elif port == METRICS_PORT and source[0] == "modm":
                    continue  # scraped from the release's namespace
                else:
                    assert not allowed, f"{component}:{port} is reachable by {who}"
            if component in ("cache", "worker") and port != METRICS_PORT:
                router = ("modm", {**RELEASE, "app.kubernetes.io/component": "router"})
                assert reachable(policies, labels, port, router), f"the router cannot reach {component}:{port}"
    assert checked >= len(pods) * len(STRANGERS)


def test_the_monitors_rbac_is_least_privilege(helm: Path) -> None:
    objects = rendered(helm, "nvidia-defaults")
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = [o for o in objects if o["kind"] == "Role"]
    assert [r["metadata"]["name"] for r in roles] == ["rel-modm-monitor"]
    granted = {
        (group, resource, verb)
        for rule in roles[0]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert not any("*" in entry for entry in granted)
    assert granted <= {
        ("apps", "deployments", "get"),
        ("apps", "deployments", "patch"),
        ("apps", "deployments/scale", "get"),
        ("apps", "deployments/scale", "patch"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "update"),
        ("", "events", "create"),
    }
    assert not any(verb in {"delete", "deletecollection", "escalate", "bind", "impersonate"} for _, _, verb in granted)
