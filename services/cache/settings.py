"""Cache settings (env prefix MODM_CACHE_; the Milvus target also reads MODM_MILVUS_URI)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from modm.paths import data_home
from modm.services.cache.ledger import Limits, parse_tenant_limits
from modm.services.cache.policies import POLICIES, EvictionPolicy, LcbfuPolicy, lcbfu_defaults, policy_named
from modm.services.cache.thresholds import ThresholdTable, parse_table
from modm.services.cache.validation import RequestLimits
from modm.settings import ServiceSettings

BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

EmbedderKind = Literal["minilm", "open_clip"]
IndexType = Literal["HNSW", "AUTOINDEX", "IVF_FLAT", "FLAT"]


class CacheSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MODM_CACHE_", extra="forbid", populate_by_name=True)

    port: int = Field(50071, ge=0, le=65535)
    data_dir: Path | None = Field(
        None, description="Local state (Milvus Lite file, embedded S3 data); default $MODM_HOME/cache."
    )

    # --- embedder ---
    embedder: EmbedderKind = Field("minilm", description="minilm (prompt-to-prompt) or open_clip.")
    device: str = Field("cpu", description="Torch device for the embedder.")
    open_clip_model: str = Field("ViT-L-14", description="open_clip name, hf-hub:org/repo or local-dir:/path.")
    open_clip_pretrained: str | None = Field("openai", description="Pretrained tag or weights file.")
    minilm_dir: str | None = Field(None, description="A sentence-transformers folder; default: the bundled one.")
    thresholds: str | None = Field(
        None, description="JSON [[min_similarity, k], ...] replacing the embedder's default table."
    )
    embed_max_batch: int = Field(32, ge=1, le=1024)
    embed_window_ms: float = Field(2.0, ge=0, le=1000)
    torch_threads: int = Field(
        1,
        ge=1,
        le=1024,
        description="Torch threads the embedder runs on. One keeps a lookup's CPU "
        "low beside the gRPC, Milvus and S3 threads; raise it for OpenCLIP images on a dedicated node.",
    )

    # --- vector store ---
    milvus_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("MODM_CACHE_MILVUS_URI", "MODM_MILVUS_URI", "milvus_uri"),
        description="Local path = Milvus Lite in-process; http(s)://host:port = a Milvus server.",
    )
    milvus_token: SecretStr | None = Field(None, description="user:password or API token for a server.")
    milvus_db: str | None = Field(None, description="Database on a Milvus server; default 'default'.")
    collection_prefix: str = Field("modm_cache", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,100}$")
    index_type: IndexType = "HNSW"
    hnsw_m: int = Field(16, ge=4, le=64)
    hnsw_ef_construction: int = Field(200, ge=8, le=2048)
    search_ef: Annotated[int, Field(ge=1, le=4096)] | Literal["auto"] = Field(
        "auto",
        description="HNSW search ef: 'auto' sizes it from the collection's entries (64 up to 10k, ~640 at 1M).",
    )
    read_consistency: Literal["Session", "Strong", "Bounded"] = Field(
        "Session", description="Milvus consistency of lookups and fetches (Session reads this process's writes)."
    )

    # --- object store ---
    s3_endpoint: str | None = Field(
        None, description="host:port of an S3 server; unset starts an embedded SeaweedFS on loopback."
    )
    s3_bucket: str = Field("modm-cache", pattern=BUCKET.pattern)
    s3_prefix: str = Field("entries/", pattern=r"^([A-Za-z0-9_.-]+/)*$")
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_secure: bool = Field(False, description="TLS to the S3 endpoint.")
    s3_cert_check: bool = Field(True, description="Verify the S3 server's TLS certificate.")
    s3_region: str | None = None
    weed_binary: str | None = Field(None, description="SeaweedFS `weed` for the embedded S3; default: found.")

    # --- capacity and eviction ---
    eviction_policy: str = Field("fifo", description="fifo, lru or lcbfu.")
    lcbfu_grace_accesses: int | None = Field(
        None, ge=0, description="LCBFU spares a new entry for this many accesses; default max_entries/10; 0 off."
    )
    lcbfu_half_life_accesses: int | None = Field(
        None, ge=0, description="LCBFU halves a saving's weight every this many accesses; default max_entries; 0 off."
    )
    max_entries: int | None = Field(10_000, ge=1, description="Global entry cap (MoDM default 10,000).")
    max_bytes: int | None = Field(None, ge=1)
    tenant_max_entries: int | None = Field(None, ge=1)
    tenant_max_bytes: int | None = Field(None, ge=1)
    tenant_limits: str | None = Field(
        None,
        description="Per-tenant overrides 'tenant=entries:bytes,...'; an empty number keeps tenant_max_*.",
    )
    ttl_seconds: float | None = Field(None, gt=0)
    stats_flush_seconds: float = Field(2.0, gt=0, description="How often hit counts are persisted.")
    ttl_sweep_seconds: float | None = Field(
        None, gt=0, description="How often expired entries are deleted; default ttl/4 within 1-60 s."
    )

    # --- requests ---
    max_prompt_chars: int = Field(2000, ge=1, le=16_000)
    max_top_k: int = Field(100, ge=1, le=1000)
    max_image_mb: float = Field(20.0, gt=0)
    max_image_pixels: int = Field(4096 * 4096, ge=1)
    import_root: Path | None = Field(None, description="Import reads folders only under this one.")
    import_buckets: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Other buckets Import may read (comma-separated); empty: only the cache's own bucket.",
    )

    # --- consistency ---
    reconcile_on_start: bool = True
    reconcile_interval_seconds: float = Field(
        600.0, ge=0, description="Reconcile this often while running too; 0: only at start-up and on request."
    )
    reconcile_grace_seconds: float = Field(
        300.0, ge=0, description="Objects younger than this are never treated as orphans."
    )
    fault_pause_after_object_put_s: float = Field(
        0.0, ge=0, description="Fault injection for tests: sleep between the two writes of an insert."
    )

    @field_validator("import_buckets", mode="before")
    @classmethod
    def _split_buckets(cls, value: object) -> object:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator("import_buckets")
    @classmethod
    def _bucket_names(cls, value: list[str]) -> list[str]:
        for bucket in value:
            if not BUCKET.match(bucket):
                raise ValueError(f"{bucket!r} is not a valid bucket name")
        return value

    @field_validator("eviction_policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        if value not in POLICIES:
            raise ValueError(f"eviction_policy must be one of {', '.join(POLICIES)}")
        return value

    @field_validator("thresholds")
    @classmethod
    def _valid_table(cls, value: str | None) -> str | None:
        if value is not None:
            parse_table(value)
        return value

    @field_validator("tenant_limits")
    @classmethod
    def _valid_tenant_limits(cls, value: str | None) -> str | None:
        if value is not None:
            parse_tenant_limits(value)
        return value

    @model_validator(mode="after")
    def _credentials_together(self) -> CacheSettings:
        if self.s3_endpoint and (self.s3_access_key is None or self.s3_secret_key is None):
            raise ValueError("s3_endpoint needs s3_access_key and s3_secret_key")
        return self

    def resolved_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else data_home() / "cache"

    def object_prefix(self, collection: str) -> str:
        """Where a collection's image bytes live: a folder of their own under `s3_prefix`, so a
        reconcile of one collection (one embedder) never takes another's images for orphans."""
        return f"{self.s3_prefix}{collection}/"

    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str(self.resolved_data_dir() / "milvus.db")

    def threshold_table(self) -> ThresholdTable | None:
        return parse_table(self.thresholds) if self.thresholds else None

    def limits(self) -> Limits:
        return Limits(
            max_entries=self.max_entries,
            max_bytes=self.max_bytes,
            tenant_max_entries=self.tenant_max_entries,
            tenant_max_bytes=self.tenant_max_bytes,
            ttl_seconds=self.ttl_seconds,
            tenant_overrides=parse_tenant_limits(self.tenant_limits) if self.tenant_limits else {},
        )

    def policy(self) -> EvictionPolicy:
        if self.eviction_policy != "lcbfu":
            return policy_named(self.eviction_policy)
        grace, half_life = lcbfu_defaults(self.max_entries)
        return LcbfuPolicy(
            grace if self.lcbfu_grace_accesses is None else self.lcbfu_grace_accesses,
            half_life if self.lcbfu_half_life_accesses is None else self.lcbfu_half_life_accesses,
        )

    def request_limits(self) -> RequestLimits:
        return RequestLimits(
            max_prompt_chars=self.max_prompt_chars,
            max_top_k=self.max_top_k,
            max_image_bytes=int(self.max_image_mb * 1024 * 1024),
            max_image_pixels=self.max_image_pixels,
        )
