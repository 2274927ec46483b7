"""Monitor settings: which Deployments it scales, how it talks to the API server, how it elects a leader."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from modm.services.monitor.policy import POLICIES
from modm.settings import ServiceSettings
from modm.tls import ClientTls, client_tls


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
    shrink_poll_seconds: float = Field(
        1.0, gt=0, description="How often a move checks that the shrunk pool's pods are gone before growing the other."
    )
    lease_name: str = Field("modm-monitor", min_length=1)
    identity: str = Field(default_factory=socket.gethostname, min_length=1, description="This replica in the Lease.")
    lease_duration_seconds: int = Field(15, ge=1, description="A silent holder is replaced after this long.")
    renew_deadline_seconds: float = Field(10.0, gt=0, description="A leader that cannot renew this long stops acting.")
    retry_period_seconds: float = Field(2.0, gt=0, description="How often the Lease is renewed or tried.")

    # The control loop (services/monitor/loop.py).
    scaler: Literal["kubernetes", "local"] = Field(
        "kubernetes",
        description="What applies decisions: kubernetes (the two Deployments), local (modm up's worker slots; "
        "only inside modm up, which owns the worker processes).",
    )
    routers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated host:port of the routers; dns:name:port re-resolves a name (a headless "
        "Service) to every router pod each round.",
    )
    total_gpus: int | None = Field(
        None, ge=1, description="GPUs to split; unset: the two Deployments' replicas when the monitor starts."
    )
    policy: str = Field("slo-aware", description="Allocation policy: slo-aware (default), modm-a, modm-b, all-large.")
    interval_s: float = Field(180.0, gt=0, description="Seconds between decisions (MoDM: 180).")
    stats_timeout_s: float = Field(5.0, gt=0, description="Deadline of each router's Stats and SetDegrade call.")
    router_token_file: Path | None = Field(
        None, description="Bearer token (first line) for routers that require one (their tokens_file)."
    )
    router_tls_ca_file: Path | None = Field(None, description="PEM CA of the routers' certificates: dial over TLS.")
    router_tls_cert_file: Path | None = Field(None, description="Client certificate for routers that require mTLS.")
    router_tls_key_file: Path | None = None
    router_tls_server_name: str | None = Field(
        None, description="Name on the routers' certificate (router pods are dialled by IP)."
    )
    degrade_ttl_s: float | None = Field(
        None,
        gt=0,
        le=86400,
        description="How long a router keeps the degrade override unless renewed; unset: "
        "3 x interval_s (a dead monitor never leaves the routers degraded).",
    )
    slo_seconds: float = Field(300.0, gt=0, description="Latency target the default policy plans for.")
    switch_seconds: float = Field(
        30.0, ge=0, description="Model load assumed for a pool until its workers report theirs (Info load_seconds)."
    )
    min_large: int = Field(1, ge=0)
    max_large: int | None = Field(None, ge=0)
    min_small: int = Field(0, ge=0)
    max_small: int | None = Field(None, ge=0)
    large_seconds_per_step: float = Field(
        91.5 / 50, gt=0, description="Used until a large worker reports its speed (MoDM: SD3.5-Large on MI210)."
    )
    small_seconds_per_step: float = Field(16.5 / 50, gt=0, description="As large_seconds_per_step (SDXL).")

    @field_validator("routers", mode="before")
    @classmethod
    def _split_routers(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("routers")
    @classmethod
    def _router_targets(cls, value: list[str]) -> list[str]:
        for target in value:
            host, _, port = target.removeprefix("dns:").rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"router {target!r} is not host:port or dns:name:port")
        return value

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        if value not in POLICIES:
            raise ValueError(f"unknown policy {value!r}; choose one of {', '.join(POLICIES)}")
        return value

    @model_validator(mode="after")
    def _lease_timing(self) -> MonitorSettings:
        if not self.retry_period_seconds < self.renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError("need retry_period_seconds < renew_deadline_seconds < lease_duration_seconds")
        self.router_tls()
        return self

    def router_tls(self) -> ClientTls | None:
        """How to dial the routers: None (plaintext) unless a CA is configured."""
        return client_tls(
            "router_tls",
            self.router_tls_ca_file,
            self.router_tls_cert_file,
            self.router_tls_key_file,
            self.router_tls_server_name,
        )
