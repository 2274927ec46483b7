"""The monitor process, configured as the chart configures its pod, scales the chart's own worker
Deployments on the local cluster.

The chart is rendered with the real helm and its monitor RBAC and worker Deployments applied; the
monitor runs as `python -m modm.services.monitor` with the env the chart gives its container, and
the chart's ServiceAccount token in place of the pod's mounted one, so a name that differs between
the chart and the code, or a verb the chart's Role lacks, fails here. What only a pod has is
replaced: the fieldRefs' values, a loopback address to bind, a canned router for the headless
Service, a short interval.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modm.devcluster import Cluster
from modm.launch import free_port, start_module
from modm.services.monitor.k8s_scaler import REASON, TARGET
from modm.services.monitor.settings import MonitorSettings
from tests.integration.k8s_monitor import (
    LARGE,
    MONITOR,
    SMALL,
    eventually,
    get_json,
    install_for_monitor,
    namespace,
    token_kubeconfig,
)
from tests.integration.test_chart import CHART, run_helm, sets
from tests.integration.test_kustomize import docs
from tests.integration.test_monitor_loop_k8s import CannedRouter, router  # noqa: F401 - the fixture
from tests.k8s_cluster import K8S_BUILD_TIMEOUT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(K8S_BUILD_TIMEOUT)]

NAMESPACE = "modm"


def test_the_monitor_process_scales_the_charts_worker_deployments(
    local_cluster: Cluster,
    helm: Path,
    router: tuple[str, CannedRouter],  # noqa: F811
    tmp_path: Path,
) -> None:
    address, servicer = router
    with namespace(local_cluster) as ns:
        objects = install_for_monitor(local_cluster, helm, ns, "workers.large.replicas=3", "workers.small.replicas=1")
        pod = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == MONITOR)
        pod = pod["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == MONITOR  # the token below is this account's
        (container,) = pod["containers"]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        from_pod = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"] if "valueFrom" in e}
        assert from_pod == {"MODM_MONITOR_NAMESPACE": "metadata.namespace", "MODM_MONITOR_IDENTITY": "metadata.name"}
        port = free_port()
        env |= {
            "MODM_MONITOR_NAMESPACE": ns,
            "MODM_MONITOR_IDENTITY": f"{MONITOR}-7d9f8-abcde",
            "MODM_MONITOR_HOST": "127.0.0.1",
            "MODM_MONITOR_PORT": str(port),
            "MODM_MONITOR_METRICS_PORT": str(free_port()),
            "MODM_MONITOR_ROUTERS": address,
            "MODM_MONITOR_KUBECONFIG": str(token_kubeconfig(local_cluster, ns, tmp_path / "kubeconfig")),
            "MODM_MONITOR_INTERVAL_S": "0.5",
        }

        def replicas(name: str) -> int:
            return get_json(local_cluster, ns, "deploy", name)["spec"]["replicas"]

        monitor = start_module("modm.services.monitor", env, tmp_path / "monitor.log", port)
        try:
            monitor.wait_serving(60)
            eventually(lambda: replicas(SMALL) > 1, "a move to the small pool")
            lease = get_json(local_cluster, ns, "lease", MONITOR)["spec"]
            assert lease["holderIdentity"] == env["MODM_MONITOR_IDENTITY"], monitor.log_tail()
        finally:
            exit_code = monitor.stop()  # SIGTERM: stops the loop, gives the Lease up
        assert exit_code == 0, monitor.log_tail()
        assert not get_json(local_cluster, ns, "lease", MONITOR)["spec"].get("holderIdentity")
        assert replicas(LARGE) + replicas(SMALL) <= int(env["MODM_MONITOR_TOTAL_GPUS"]) == 4
        for name in (LARGE, SMALL):
            annotations = get_json(local_cluster, ns, "deploy", name)["metadata"]["annotations"]
            assert annotations[TARGET] == str(replicas(name)) and annotations[REASON], annotations
        rescaled = get_json(local_cluster, ns, "events", "--field-selector=reason=Rescaled")["items"]
        assert {e["involvedObject"]["name"] for e in rescaled} == {LARGE, SMALL}
        assert servicer.calls >= 1
        assert "Forbidden" not in monitor.log_tail(100_000)


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
