"""What the engine needs from a vector store and an object store, as narrow protocols.

The engine's consistency rules are written against these, so they are tested with the
in-memory implementations in `memory.py` and run unchanged on Milvus and S3. Both protocols are
synchronous: the engine calls them from worker threads, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class ObjectMissing(Exception):
    """The object store has no object under the key."""


class StoreUnavailable(Exception):
    """A backing store could not be reached or refused the operation."""


@dataclass
class VectorRecord:
    """One row of the vector store: an entry's vector and everything stored beside it."""

    entry_id: str
    tenant: str
    prompt: str
    model_id: str
    object_key: str
    size_bytes: int
    created_at: float
    shared: bool = False
    width: int = 0
    height: int = 0
    last_hit_at: float = 0.0
    hit_count: int = 0
    saved_steps: int = 0
    params_key: str = ""
    seed: str = ""
    # JSON text: {"metadata": {...}, "params": {...}}.
    extra: str = "{}"
    vector: list[float] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SearchHit:
    record: VectorRecord
    similarity: float


@dataclass(frozen=True)
class StatsUpdate:
    entry_id: str
    last_hit_at: float
    hit_count: int
    saved_steps: int


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified_at: float  # Unix seconds


class VectorStore(Protocol):
    dim: int

    def insert(self, record: VectorRecord) -> None:
        """Durably insert one row; visible to search/get as soon as this returns."""

    def search(self, vector: Sequence[float], top_k: int, tenant: str, created_after: float | None) -> list[SearchHit]:
        """Best `top_k` rows by cosine among the tenant's own and shared rows, best first."""

    def get(self, entry_ids: Sequence[str]) -> list[VectorRecord]:
        """The rows with these ids (without vectors); missing ids are left out."""

    def delete(self, entry_ids: Sequence[str]) -> None: ...

    def update_stats(self, updates: Sequence[StatsUpdate]) -> None:
        """Write hit bookkeeping of existing rows; ids no longer present are ignored."""

    def scan(self) -> Iterator[VectorRecord]:
        """Every row, without vectors."""

    def close(self) -> None: ...


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes:
        """The bytes, or ObjectMissing."""

    def exists(self, key: str) -> bool: ...

    def delete(self, keys: Iterable[str]) -> None:
        """Delete every key; keys already gone are fine."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    def close(self) -> None: ...
