"""The monitor's tests on the local cluster (tests/k8s_cluster.py), set up as the chart sets it up.

Each test module works in a namespace of its own. The chart is rendered with the real helm and the
objects the monitor works with are applied: its ServiceAccount, Role and RoleBinding and the two
worker Deployments (with the workers' ServiceAccount, which their pods need to be created). The
monitor then talks to the API server with that ServiceAccount's token, in a kubeconfig of its own,
so what it may do is what the chart's Role grants, enforced by the API server.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from modm.devcluster import Cluster
from modm.services.monitor.settings import MonitorSettings
from tests.integration.test_chart import CHART, run_helm, sets
from tests.integration.test_kustomize import docs

RELEASE = "modm"
LARGE, SMALL = f"{RELEASE}-worker-large", f"{RELEASE}-worker-small"
MONITOR = f"{RELEASE}-monitor"  # its ServiceAccount, Role, RoleBinding, Deployment and Lease
FOR_THE_MONITOR = {
    ("ServiceAccount", MONITOR),
    ("Role", MONITOR),
    ("RoleBinding", MONITOR),
    ("ServiceAccount", f"{RELEASE}-worker"),
    ("Deployment", LARGE),
    ("Deployment", SMALL),
}


@contextmanager
def namespace(cluster: Cluster, create: bool = True) -> Iterator[str]:
    """A fresh namespace's name (created unless the test creates it), deleted at the end."""
    name = f"mon-{uuid.uuid4().hex[:8]}"
    if create:
        cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def install_for_monitor(cluster: Cluster, helm: Path, ns: str, *values: str) -> list[dict]:
    """Applies the chart's objects the monitor works with into `ns`; returns every rendered object."""
    done = run_helm(helm, "template", RELEASE, str(CHART), "-n", ns, *sets(list(values)))
    assert done.returncode == 0, done.stderr
    objects = docs(done.stdout)
    chosen = [o for o in objects if (o["kind"], o["metadata"]["name"]) in FOR_THE_MONITOR]
    assert len(chosen) == len(FOR_THE_MONITOR), [(o["kind"], o["metadata"]["name"]) for o in chosen]
    cluster.kubectl(
        "-n", ns, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": chosen})
    )
    return objects


def rolled_out(cluster: Cluster, ns: str) -> None:
    """Until every pod of both pools runs (kwok marks scheduled pods Running and ready)."""
    cluster.kubectl("-n", ns, "rollout", "status", f"deploy/{LARGE}", f"deploy/{SMALL}", "--timeout=120s", timeout=130)


def token_kubeconfig(cluster: Cluster, ns: str, path: Path, account: str = MONITOR) -> Path:
    """A kubeconfig holding only the ServiceAccount's token (no admin certificate), as the
    pod's mounted token would be."""
    token = cluster.kubectl("-n", ns, "create", "token", account, "--duration=1h").stdout.strip()
    ca = base64.b64encode(cluster.ca_file.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": cluster.server, "certificate-authority-data": ca}}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "local", "user": account, "namespace": ns}}],
        "current-context": account,
    }
    path.write_text(json.dumps(config))
    return path


def monitor_settings(kubeconfig: Path, ns: str, **overrides: object) -> MonitorSettings:
    """Settings for the chart's names, with API back-off short enough for a test."""
    values: dict[str, object] = {
        "kubeconfig": str(kubeconfig),
        "namespace": ns,
        "large_deployment": LARGE,
        "small_deployment": SMALL,
        "lease_name": MONITOR,
        "identity": "monitor-0",
        "backoff_seconds": 0.05,
        "shrink_poll_seconds": 0.2,
    }
    return MonitorSettings(**(values | overrides))


def get_json(cluster: Cluster, ns: str, *args: str) -> dict:
    return json.loads(cluster.kubectl("-n", ns, "get", *args, "-o", "json").stdout)


def eventually(condition: Callable[[], object], what: str, within_s: float = 60.0) -> None:
    """Polls `condition` until it is true; fails naming `what` after `within_s` (a bound on a
    hang, not a measurement)."""
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {within_s:g}s"
        time.sleep(0.2)
