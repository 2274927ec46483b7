"""The cache's domain objects: what the engine takes and returns, free of gRPC and of stores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modm.params import ParamsFingerprint, fingerprint
from modm.services.cache.thresholds import Decision


@dataclass(frozen=True)
class GenParams:
    """Generation parameters as the caller gave them; 0/None mean the model's default."""

    prompt: str = ""
    negative_prompt: str = ""
    width: int = 0
    height: int = 0
    steps: int = 0
    guidance_scale: float | None = None
    seed: int | None = None

    def fingerprint(self, prompt: str) -> ParamsFingerprint:
        return fingerprint(
            prompt, self.negative_prompt, self.width, self.height, self.steps, self.guidance_scale, self.seed
        )

    def to_dict(self, prompt: str) -> dict[str, Any]:
        return {
            "prompt": prompt,
            "negative_prompt": self.negative_prompt,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> GenParams:
        return cls(
            str(raw.get("prompt", "")),
            str(raw.get("negative_prompt", "")),
            int(raw.get("width") or 0),
            int(raw.get("height") or 0),
            int(raw.get("steps") or 0),
            None if raw.get("guidance_scale") is None else float(raw["guidance_scale"]),
            None if raw.get("seed") is None else int(raw["seed"]),
        )


@dataclass(frozen=True)
class Entry:
    entry_id: str
    tenant: str
    shared: bool
    prompt: str
    model_id: str
    size_bytes: int
    width: int
    height: int
    created_at: float
    last_hit_at: float
    hit_count: int
    saved_steps: int
    metadata: dict[str, str]
    params: GenParams | None


@dataclass(frozen=True)
class Match:
    entry: Entry
    similarity: float


@dataclass(frozen=True)
class LookupQuery:
    tenant: str
    prompt: str = ""
    embedding: Sequence[float] = ()
    top_k: int = 1
    params: GenParams | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class LookupResult:
    matches: list[Match]
    decision: Decision
    exact_repeat: bool
    entry_id: str
    embed_seconds: float
    search_seconds: float


@dataclass(frozen=True)
class NewEntry:
    tenant: str
    prompt: str
    image: bytes
    model_id: str
    params: GenParams | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    shared: bool = False


@dataclass(frozen=True)
class InsertResult:
    entry_id: str
    evicted_ids: list[str]


@dataclass
class TenantCounters:
    lookups: int = 0
    lookup_hits: int = 0
    exact_repeats: int = 0
    inserts: int = 0
    evictions: int = 0


@dataclass(frozen=True)
class TenantStats:
    tenant: str
    entries: int
    bytes: int
    hit_count: int
    saved_steps: int
    counters: TenantCounters


@dataclass(frozen=True)
class StatsReport:
    total: TenantStats
    tenants: list[TenantStats]


@dataclass(frozen=True)
class ReconcileReport:
    vectors_scanned: int = 0
    objects_scanned: int = 0
    stale_vectors_removed: int = 0
    orphan_objects_removed: int = 0
    expired_removed: int = 0


_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


def content_type_of(data: bytes) -> str:
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"
