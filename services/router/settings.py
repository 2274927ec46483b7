"""Router settings (env prefix MODM_ROUTER_)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from modm.services.router.policy import RoutingRules
from modm.settings import ServiceSettings

DEFAULT_PORT = 50051
_TARGET = re.compile(r"^(dns:)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class RouterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MODM_ROUTER_", extra="forbid")

    port: int = Field(DEFAULT_PORT, ge=0, le=65535)

    # --- discovery ---
    large_workers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated host:port of large workers; dns:name:port re-resolves a name "
        "(e.g. a headless Service) to all its addresses.",
    )
    small_workers: Annotated[list[str], NoDecode] = Field(default_factory=list, description="As large_workers.")
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
    default_tenant: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

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

    # --- requests ---
    max_prompt_chars: int = Field(2000, ge=1, le=100_000)
    min_side: int = Field(32, ge=8)
    max_side: int = Field(2048, ge=8)
    max_steps: int = Field(150, ge=1, le=1000)

    # --- statistics ---
    window_s: float = Field(180.0, gt=0, description="Sliding window of Stats (MoDM: 180 s).")

    # --- security ---
    tokens_file: Path | None = Field(None, description="Bearer tokens, one per line; unset: no auth.")
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @field_validator("large_workers", "small_workers", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        return _split(value)

    @field_validator("large_workers", "small_workers")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        for target in value:
            if not _TARGET.match(target):
                raise ValueError(f"{target!r} is not host:port or dns:name:port")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RouterSettings:
        if not self.large_workers and not self.small_workers:
            raise ValueError("give large_workers and/or small_workers")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.min_side > self.max_side:
            raise ValueError("min_side is above max_side")
        return self

    def rules(self) -> RoutingRules:
        return RoutingRules(
            large_takes_hits=self.large_takes_hits,
            degrade_misses=self.degrade_misses,
            max_queue=self.max_queue,
            admission_safety=self.admission_safety,
        )
