"""The Kubernetes scaler's settings, RBAC list and API retry pauses, without a server."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from modm.services.monitor.k8s_api import Caller, KubernetesUnavailable
from modm.services.monitor.k8s_scaler import REQUIRED_RBAC
from modm.services.monitor.settings import MonitorSettings


def test_settings_come_from_the_monitor_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODM_MONITOR_NAMESPACE", "serving")
    monkeypatch.setenv("MODM_MONITOR_LARGE_DEPLOYMENT", "sd35")
    settings = MonitorSettings()
    assert (settings.namespace, settings.large_deployment, settings.small_deployment) == (
        "serving",
        "sd35",
        "modm-worker-small",
    )


def test_lease_timing_must_leave_a_leader_time_to_step_down() -> None:
    with pytest.raises(ValidationError, match="renew_deadline_seconds"):
        MonitorSettings(lease_duration_seconds=10, renew_deadline_seconds=10)


def test_required_rbac_is_least_privilege() -> None:
    granted = {(r.api_group, r.resource, verb) for r in REQUIRED_RBAC for verb in r.verbs}
    assert granted == {
        ("apps", "deployments", "get"),
        ("apps", "deployments", "patch"),
        ("apps", "deployments/scale", "get"),
        ("apps", "deployments/scale", "patch"),
        ("", "events", "create"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "update"),
    }


def test_api_calls_back_off_exponentially_with_jitter_up_to_the_cap() -> None:
    settings = MonitorSettings(api_retries=5, backoff_seconds=0.5, backoff_max_seconds=3.0)
    pauses: list[float] = []

    def unavailable(**_: object) -> None:
        raise ApiException(status=503)

    with pytest.raises(KubernetesUnavailable, match="failed 6 times"):
        Caller(settings, sleep=pauses.append)("get something", unavailable)
    ceilings = [0.5, 1.0, 2.0, 3.0, 3.0]
    assert len(pauses) == len(ceilings)
    assert all(ceiling / 2 <= pause <= ceiling for pause, ceiling in zip(pauses, ceilings, strict=True))
