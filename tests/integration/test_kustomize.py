"""The kustomize overlays render with kubectl, validate against the official schemas
(kubernetes-validate --strict) and pass the project checks schemas cannot express.
The checks below are shared with test_chart.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from modm.services.monitor.k8s_scaler import REQUIRED_RBAC
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.34.0"
GPU_KEYS = {"nvidia.com/gpu", "amd.com/gpu"}
SKIP_KINDS = {"ServiceMonitor"}  # a CRD: not in the official schemas


def docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def validate(objects: list[dict], tmp_path: Path) -> None:
    binary = require_tool("kubernetes-validate")
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all([o for o in objects if o["kind"] not in SKIP_KINDS]))
    done = subprocess.run(
        [str(binary), "--strict", "--quiet", "-k", K8S_VERSION, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]


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
def test_overlay_renders_validates_and_passes_project_checks(kubectl: Path, overlay: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(kubectl), "kustomize", str(ROOT / "k8s/overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    objects = docs(done.stdout)
    validate(objects, tmp_path)
    project_checks(objects, OVERLAYS[overlay])
    cache = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "modm-cache")
    env = {e["name"]: e for e in cache["spec"]["template"]["spec"]["containers"][0]["env"]}
    if overlay == "external-stores":
        assert env["MODM_CACHE_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "modm-cache-stores"
        assert "MODM_MILVUS_URI" in env and not any(o["kind"] == "PersistentVolumeClaim" for o in objects)
    else:
        assert "MODM_CACHE_S3_ENDPOINT" not in env
