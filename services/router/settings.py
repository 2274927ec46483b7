"""Router settings (env prefix MODM_ROUTER_)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from modm.services.router.policy import RoutingRules
from modm.settings import ServiceSettings
from modm.tenants import TENANT_PATTERN
from modm.tls import ClientTls, client_tls

DEFAULT_PORT = 50051
_TARGET = re.compile(r"^(dns:)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class RouterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MODM_ROUTER_", extra="forbid")

    port: int = Field(DEFAULT_PORT, ge=0, le=65535)

    # --- OpenAI-compatible HTTP API (services/router/openai_api) ---
    http_port: int = Field(0, ge=0, le=65535, description="Port of the OpenAI Images API; 0 disables it.")
    http_host: str | None = Field(None, description="Address the HTTP server binds to; default: host.")
    max_images_per_request: int = Field(4, ge=1, le=64, description="Largest n of one images call.")
    image_url_ttl_s: float = Field(600.0, gt=0, description="How long a response_format=url image stays fetchable.")
    image_url_store_mb: int = Field(256, ge=1, description="Memory kept for url images; oldest go first.")
    public_url: str | None = Field(
        None,
        pattern=r"^https?://[^/?#]+(/[^?#]*)?$",
        description="Base URL clients reach the HTTP port at (behind an ingress); default: the request's Host.",
    )
    max_init_image_mb: float = Field(20.0, gt=0, description="Largest image an edits call may upload.")
    max_init_image_pixels: int = Field(4096 * 4096, ge=1)

    # --- discovery ---
    large_workers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated host:port of large workers; dns:name:port re-resolves a name "
        "(e.g. a headless Service) to all its addresses.",
    )
    small_workers: Annotated[list[str], NoDecode] = Field(default_factory=list, description="As large_workers.")
    workers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="As large_workers, but each worker's pool is the role its Info reports, re-read every "
        "round (a worker restarted as the other model moves pools; modm up's worker slots).",
    )
    discovery_interval_s: float = Field(2.0, gt=0, description="How often workers' Info is polled.")
    worker_capacity: int | None = Field(
        None, ge=1, description="Cap on requests in flight per worker; default its max_batch_size."
    )

    # --- cache ---
    cache: str | None = Field(None, description="host:port of the cache service; unset: no cache.")
    cache_timeout_s: float = Field(5.0, gt=0, description="Deadline of one cache lookup or fetch.")
    insert_timeout_s: float = Field(30.0, gt=0)
    insert_hits: bool = Field(False, description="Also insert small-model refinements (hits).")
    insert_degraded: bool = Field(False, description="Also insert degraded misses (small text-to-image).")
    max_pending_inserts: int = Field(
        256, ge=1, description="Inserts waiting to be sent after their reply; beyond it an output is not cached."
    )
    singleflight_max_waiters: int = Field(
        64, ge=0, description="Identical misses that may wait for one generation; 0 turns single-flight off."
    )
    default_tenant: str = Field("default", pattern=TENANT_PATTERN)

    # --- scheduling ---
    large_takes_hits: bool = Field(True, description="Idle large workers with no miss waiting take hits.")
    degrade_misses: bool = Field(True, description="Serve misses with the small pool when the large is overloaded.")
    max_queue: int = Field(256, ge=1, description="Requests waiting per pool before refusing.")
    admission_safety: float = Field(1.0, gt=0, description="Admit when estimate x this fits the deadline.")
    default_deadline_s: float = Field(300.0, gt=0, description="Deadline of a call that names none.")
    max_deadline_s: float = Field(3600.0, gt=0)
    max_attempts: int = Field(3, ge=1, le=10)
    retry_backoff_s: float = Field(0.2, ge=0)
    retry_backoff_cap_s: float = Field(2.0, ge=0)
    attempt_timeout_factor: float = Field(4.0, gt=0, description="One attempt may take estimate x this.")
    attempt_timeout_floor_s: float = Field(30.0, gt=0)
    eject_after_failures: int = Field(
        3, ge=1, description="Consecutive failed attempts that take a worker out of rotation, SERVING or not."
    )
    eject_cooldown_s: float = Field(
        5.0, gt=0, description="First time out of rotation; doubles (to 60 s) while it keeps failing on return."
    )

    # --- requests ---
    max_prompt_chars: int = Field(2000, ge=1, le=100_000)
    min_side: int = Field(32, ge=8)
    max_side: int = Field(2048, ge=8)
    max_steps: int = Field(150, ge=1, le=1000)

    # --- statistics ---
    window_s: float = Field(180.0, gt=0, description="Sliding window of Stats (MoDM: 180 s).")

    # --- security ---
    tokens_file: Path | None = Field(None, description="Bearer tokens, one per line; unset: no auth.")
    tenant_rate_per_s: float | None = Field(
        None, gt=0, description="Generate calls per second each tenant may sustain; unset: no limit."
    )
    tenant_burst: int = Field(10, ge=1, description="Generate calls a tenant may send at once (tenant_rate_per_s).")
    # The public port's TLS (tls_cert_file, tls_key_file, tls_client_ca_file) is every service's.
    # Outbound TLS to workers and cache (they serve it with their own tls_* settings): trust this
    # CA, present this client certificate when they require mTLS, expect this server name.
    upstream_tls_ca_file: Path | None = Field(None, description="PEM CA of workers and cache: dial them over TLS.")
    upstream_tls_cert_file: Path | None = Field(None, description="Client certificate for workers and cache (mTLS).")
    upstream_tls_key_file: Path | None = None
    upstream_tls_server_name: str | None = Field(
        None, description="Name on the workers' and cache's certificates (pods are dialled by IP)."
    )

    @field_validator("large_workers", "small_workers", "workers", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("large_workers", "small_workers", "workers")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        for target in value:
            if not _TARGET.match(target):
                raise ValueError(f"{target!r} is not host:port or dns:name:port")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RouterSettings:
        if not self.large_workers and not self.small_workers and not self.workers:
            raise ValueError("give large_workers, small_workers and/or workers")
        self.upstream_tls()
        if self.min_side > self.max_side:
            raise ValueError("min_side is above max_side")
        if self.http_port and self.http_port == self.port:
            raise ValueError("http_port and port must differ")
        return self

    def upstream_tls(self) -> ClientTls | None:
        """How to dial workers and cache: None (plaintext) unless a CA is configured."""
        return client_tls(
            "upstream_tls",
            self.upstream_tls_ca_file,
            self.upstream_tls_cert_file,
            self.upstream_tls_key_file,
            self.upstream_tls_server_name,
        )

    def rules(self) -> RoutingRules:
        return RoutingRules(
            large_takes_hits=self.large_takes_hits,
            degrade_misses=self.degrade_misses,
            max_queue=self.max_queue,
            admission_safety=self.admission_safety,
        )
