"""Settings shared by every modm gRPC service.

Each service subclasses `ServiceSettings` with its own env prefix; the settings object is built
once at start-up (env vars, then CLI flags passed as keyword overrides) and handed down, so no
module reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """What every service needs to listen, log, export metrics and shut down."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    host: str = Field("127.0.0.1", description="Address the gRPC server binds to.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Prometheus /metrics port; unset disables the exporter."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    grace_seconds: float = Field(30.0, ge=0, description="How long SIGTERM waits for in-flight work.")
    drain_delay_seconds: float = Field(
        0.0, ge=0, description="NOT_SERVING is announced this long before the server stops accepting."
    )
    max_message_mb: int = Field(32, ge=1, le=512, description="Largest gRPC message accepted or sent.")
    tls_cert_file: Path | None = Field(None, description="PEM certificate: serve TLS (with tls_key_file).")
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = Field(
        None, description="PEM CA: require client certificates it signed (mutual TLS); needs tls_cert_file."
    )

    @model_validator(mode="after")
    def _tls_together(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self

    @classmethod
    def load(cls, **overrides: Any) -> Self:
        """Env vars, overridden by the non-None keyword arguments (the CLI flags)."""
        return cls(**{k: v for k, v in overrides.items() if v is not None})
