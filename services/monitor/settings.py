"""Monitor settings: which Deployments it scales, how it talks to the API server, how it elects a leader."""

from __future__ import annotations

import socket

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from modm.settings import ServiceSettings


class MonitorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MODM_MONITOR_", extra="forbid")

    namespace: str = Field("default", min_length=1, description="Namespace of the worker Deployments and the Lease.")
    large_deployment: str = Field("modm-worker-large", min_length=1)
    small_deployment: str = Field("modm-worker-small", min_length=1)
    kubeconfig: str | None = Field(
        None, description="Path of a kubeconfig; unset: in-cluster config, then the default kubeconfig."
    )
    field_manager: str = Field("modm-monitor", min_length=1, description="Named on every write (managedFields).")
    manual_hold_seconds: float = Field(
        900.0, ge=0, description="After a hand scale, leave that Deployment alone this long (never fight a human)."
    )
    conflict_retries: int = Field(5, ge=0, le=50, description="Re-reads after a 409 before giving up.")
    api_retries: int = Field(4, ge=0, le=20, description="Retries of a failed API call (5xx, 429, no connection).")
    backoff_seconds: float = Field(0.5, gt=0, description="First back-off; doubles up to backoff_max_seconds.")
    backoff_max_seconds: float = Field(10.0, gt=0)
    request_timeout_seconds: float = Field(10.0, gt=0)
    lease_name: str = Field("modm-monitor", min_length=1)
    identity: str = Field(default_factory=socket.gethostname, min_length=1, description="This replica in the Lease.")
    lease_duration_seconds: int = Field(15, ge=1, description="A silent holder is replaced after this long.")
    renew_deadline_seconds: float = Field(10.0, gt=0, description="A leader that cannot renew this long stops acting.")
    retry_period_seconds: float = Field(2.0, gt=0, description="How often the Lease is renewed or tried.")

    @model_validator(mode="after")
    def _lease_timing(self) -> MonitorSettings:
        if not self.retry_period_seconds < self.renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError("need retry_period_seconds < renew_deadline_seconds < lease_duration_seconds")
        return self
