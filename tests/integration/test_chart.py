"""The Helm chart: `helm lint --strict` and `helm template` with a real helm (scripts/fetch_tools) over a
matrix of values, every rendered manifest validated against the official schemas, project checks, and a
bad values file the schema must reject."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.test_kustomize import docs, project_checks, validate

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/modm"

EXTERNAL = [
    "cache.stores.external=true",
    "cache.stores.milvus.uri=http://milvus.milvus:19530",
    "cache.stores.milvus.existingSecret=stores",
    "cache.stores.s3.endpoint=minio.minio:9000",
    "cache.stores.s3.existingSecret=stores",
]
SECURE = [
    "router.auth.enabled=true",
    "router.auth.existingSecret=tokens",
    "router.tls.enabled=true",
    "router.tls.existingSecret=tls",
]
MATRIX = {
    "nvidia-defaults": [],
    "amd": ["gpu.vendor=amd"],
    "external-stores": EXTERNAL,
    "embedded-stores-no-pvc": ["cache.persistence.enabled=false"],
    "tls-and-auth": SECURE,
    "everything": [
        "gpu.vendor=amd",
        *EXTERNAL,
        *SECURE,
        "metrics.serviceMonitor.enabled=true",
        "workers.hfToken.existingSecret=hf",
        "workers.large.model.pvc.claimName=weights",
        "global.imageRegistry=reg.example/modm",
        "global.imageTag=1.2.3",
    ],
}


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)


def sets(values: list[str]) -> list[str]:
    return [arg for v in values for arg in ("--set", v)]


@pytest.mark.parametrize("case", MATRIX)
def test_lint_template_validate(helm: Path, case: str, tmp_path: Path) -> None:
    lint = run_helm(helm, "lint", "--strict", str(CHART), *sets(MATRIX[case]))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    done = run_helm(helm, "template", "rel", str(CHART), "-n", "modm", *sets(MATRIX[case]))
    assert done.returncode == 0, done.stderr
    objects = docs(done.stdout)
    validate(objects, tmp_path)
    amd = "gpu.vendor=amd" in MATRIX[case]
    project_checks(objects, "amd.com/gpu" if amd else "nvidia.com/gpu")
    kinds = {o["kind"] for o in objects}
    assert ("ServiceMonitor" in kinds) == ("metrics.serviceMonitor.enabled=true" in MATRIX[case])
    assert "ConfigMap" in kinds  # the Grafana dashboard
    test_pod = [o for o in objects if o["kind"] == "Pod"]
    assert [p["metadata"]["annotations"]["helm.sh/hook"] for p in test_pod] == ["test"]
    assert "modm generate" in test_pod[0]["spec"]["containers"][0]["args"][0]


def test_schema_rejects_bad_values_with_clear_messages(helm: Path) -> None:
    done = run_helm(helm, "template", "rel", str(CHART), "-f", str(CHART / "ci/bad-values.yaml"))
    assert done.returncode != 0
    for needle in ("gpu.vendor", "workers.large.replicas", "workers.large.dtype", "workers.large.gpu.count"):
        assert needle in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["router.auth.enabled=true"], "router.auth.existingSecret"),
        (["cache.stores.external=true"], "cache.stores.milvus.uri"),
    ],
)
def test_incomplete_settings_fail_with_a_message(helm: Path, values: list[str], message: str) -> None:
    done = run_helm(helm, "template", "rel", str(CHART), *sets(values))
    assert done.returncode != 0 and message in done.stderr, done.stderr
