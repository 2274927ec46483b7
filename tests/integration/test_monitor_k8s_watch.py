"""Watching Deployments on the emulated API server with the official client's `watch.Watch`: the
current objects as ADDED, then each change as MODIFIED with its resourceVersion, and a watch
resumed from a resourceVersion sees only what came after it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch

from tests.k8s_emulator import Emulator

pytestmark = pytest.mark.integration


def collect(apps: client.AppsV1Api, until: int, **kwargs: Any) -> tuple[threading.Thread, list[tuple[str, Any]]]:
    """Watches in a thread until `until` events came (or the server-side timeout)."""
    seen: list[tuple[str, Any]] = []
    w = watch.Watch()

    def run() -> None:
        for event in w.stream(apps.list_namespaced_deployment, "default", timeout_seconds=20, **kwargs):
            seen.append((event["type"], event["object"]))
            if len(seen) >= until:
                w.stop()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, seen


def wait_for(seen: list[Any], count: int, thread: threading.Thread) -> None:
    while len(seen) < count and thread.is_alive():
        thread.join(0.05)


def test_watch_streams_added_then_modified_and_resumes_from_a_resource_version(tmp_path: Path) -> None:
    with Emulator() as emulator:
        emulator.create_deployment("modm-worker-large", 2)
        api = config.new_client_from_config(str(emulator.write_kubeconfig(tmp_path / "kubeconfig")))
        apps = client.AppsV1Api(api)

        thread, seen = collect(apps, until=3, label_selector="app.kubernetes.io/name=modm-worker-large")
        wait_for(seen, 1, thread)
        assert [(kind, d.metadata.name, d.spec.replicas) for kind, d in seen] == [("ADDED", "modm-worker-large", 2)]
        added_at = seen[0][1].metadata.resource_version

        emulator.create_deployment("modm-worker-small", 1)  # another label: not this watch's
        apps.patch_namespaced_deployment_scale("modm-worker-large", "default", {"spec": {"replicas": 3}})
        apps.patch_namespaced_deployment(
            "modm-worker-large", "default", {"metadata": {"annotations": {"modm.io/reason": "hits dominate"}}}
        )
        thread.join(30)
        assert [kind for kind, _ in seen] == ["ADDED", "MODIFIED", "MODIFIED"]
        assert seen[1][1].spec.replicas == 3 and seen[2][1].metadata.annotations["modm.io/reason"] == "hits dominate"
        versions = [int(d.metadata.resource_version) for _, d in seen]
        assert versions == sorted(versions) and len(set(versions)) == 3

        resumed, later = collect(apps, until=3, resource_version=added_at)
        resumed.join(30)
        assert [(kind, d.metadata.name) for kind, d in later] == [
            ("ADDED", "modm-worker-small"),
            ("MODIFIED", "modm-worker-large"),
            ("MODIFIED", "modm-worker-large"),
        ]
        api.close()
