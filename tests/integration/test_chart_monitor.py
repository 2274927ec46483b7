"""The monitor, configured as the chart configures it, scales the chart's own worker Deployments.

The chart is rendered with the real helm; its worker Deployments are applied to the emulated API
server; the monitor's settings are read from the env the chart gives its container, so a name
that differs between the chart and the code fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modm.services.monitor.k8s_api import api_client
from modm.services.monitor.k8s_scaler import REASON, TARGET, KubernetesScaler
from modm.services.monitor.observations import Allocation, Decision
from modm.services.monitor.settings import MonitorSettings
from tests.integration.test_chart import CHART, run_helm, sets
from tests.integration.test_kustomize import docs
from tests.k8s_emulator import DEPLOYMENTS, Emulator

pytestmark = [pytest.mark.integration]

NAMESPACE = "modm"


def test_monitor_scales_the_charts_worker_deployments(helm: Path, tmp_path: Path) -> None:
    done = run_helm(helm, "template", "modm", str(CHART), "-n", NAMESPACE, "--set", "workers.large.replicas=3",
                    "--set", "workers.small.replicas=1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    deployments = {d["metadata"]["name"]: d for d in docs(done.stdout) if d["kind"] == "Deployment"}
    container = deployments["modm-monitor"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"].removeprefix("MODM_MONITOR_").lower(): e["value"] for e in container["env"] if "value" in e}
    with Emulator() as emulator:
        for name in ("modm-worker-large", "modm-worker-small"):
            emulator.create(DEPLOYMENTS, NAMESPACE, deployments[name])
        kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig", namespace=NAMESPACE)
        settings = MonitorSettings(**env, namespace=NAMESPACE, kubeconfig=str(kubeconfig), identity="monitor-0")
        scaler = KubernetesScaler(settings, api_client(settings))
        assert scaler.current() == Allocation(3, 1)
        scaler.apply(Decision(Allocation(1, 3), "hits dominate: move two GPUs to the small pool"))
        for name, replicas in (("modm-worker-large", 1), ("modm-worker-small", 3)):
            live = emulator.get(DEPLOYMENTS, NAMESPACE, name)
            assert live["spec"]["replicas"] == replicas
            assert live["metadata"]["annotations"][TARGET] == str(replicas)
            assert live["metadata"]["annotations"][REASON].startswith("hits dominate")
    assert int(env["total_gpus"]) == 4


def test_monitor_reaches_routers_that_require_tls_and_tokens(helm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secure = ["router.auth.enabled=true", "router.auth.existingSecret=tokens", "router.tls.enabled=true"]
    secure.append("router.tls.existingSecret=tls")
    done = run_helm(helm, "template", "rel", str(CHART), "-n", NAMESPACE, *sets(secure))
    assert done.returncode == 0, done.stderr
    objects = {o["metadata"]["name"]: o for o in docs(done.stdout)}
    pod = objects["rel-modm-monitor"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    for env in container["env"]:
        if "value" in env:
            monkeypatch.setenv(env["name"], env["value"])
    settings = MonitorSettings()  # the env the chart gives the container is valid
    assert settings.router_token_file is not None and settings.router_tls_ca_file is not None
    for path, secret in ((settings.router_token_file, "tokens"), (settings.router_tls_ca_file, "tls")):
        assert secrets[mounts[str(path.parent)]] == secret  # the router's own Secrets, mounted where the env says
    assert settings.router_tls_server_name == "rel-modm-router"
