"""The Helm chart rendered: `helm lint --strict` and `helm template` with a real helm
(scripts/fetch_tools) over a matrix of values, the project checks an API server cannot make, and
a bad values file the chart's schema must reject. test_chart_install.py installs it on a real API
server, which validates the objects themselves."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.test_kustomize import docs, project_checks

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/modm"

EXTERNAL = [
    "cache.stores.external=true",
    "cache.stores.milvus.uri=http://milvus.milvus:19530",
    "cache.stores.milvus.existingSecret=stores",
    "cache.stores.s3.endpoint=minio.minio:9000",
    "cache.stores.s3.existingSecret=stores",
]
OPEN_CLIP = [
    "cache.embedder=open_clip",
    "cache.openClip.pvc.claimName=clip-weights",
    "cache.openClip.pretrained=vit.pt",
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
    "open-clip-weights-volume": OPEN_CLIP,
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
def test_lint_template_and_project_checks(helm: Path, case: str) -> None:
    lint = run_helm(helm, "lint", "--strict", str(CHART), *sets(MATRIX[case]))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    done = run_helm(helm, "template", "rel", str(CHART), "-n", "modm", *sets(MATRIX[case]))
    assert done.returncode == 0, done.stderr
    objects = docs(done.stdout)
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


def cache_pod(helm: Path, *values: str) -> tuple[dict, dict[str, str]]:
    """The rendered cache pod spec and its container's plain env values."""
    done = run_helm(helm, "template", "rel", str(CHART), *sets(list(values)))
    assert done.returncode == 0, done.stderr
    deployments = [o for o in docs(done.stdout) if o["kind"] == "Deployment"]
    spec = next(d for d in deployments if d["metadata"]["name"] == "rel-modm-cache")["spec"]["template"]["spec"]
    return spec, {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}


def test_the_cache_defaults_to_minilm_and_switches_to_open_clip_weights_on_a_volume(helm: Path) -> None:
    default, env = cache_pod(helm)
    assert env["MODM_CACHE_EMBEDDER"] == "minilm" and "MODM_CACHE_OPEN_CLIP_MODEL" not in env
    assert "open-clip" not in {v["name"] for v in default["volumes"]}
    clip, env = cache_pod(helm, *OPEN_CLIP)
    assert (env["MODM_CACHE_EMBEDDER"], env["MODM_CACHE_OPEN_CLIP_MODEL"]) == ("open_clip", "ViT-L-14")
    assert env["MODM_CACHE_OPEN_CLIP_PRETRAINED"] == "/models/open-clip/vit.pt"  # the file inside the volume
    mount = next(m for m in clip["containers"][0]["volumeMounts"] if m["name"] == "open-clip")
    assert (mount["mountPath"], mount["readOnly"]) == ("/models/open-clip", True)
    volume = next(v for v in clip["volumes"] if v["name"] == "open-clip")
    assert volume["persistentVolumeClaim"] == {"claimName": "clip-weights", "readOnly": True}
    _, env = cache_pod(helm, "cache.embedder=open_clip")  # no volume: the tag, downloaded on first start
    assert env["MODM_CACHE_OPEN_CLIP_PRETRAINED"] == "openai"
