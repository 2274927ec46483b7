"""In-process vector and object stores: exact (brute-force cosine) and volatile.

They implement the same protocols as the Milvus and S3 adapters and are what the engine's
consistency tests run on. `fail_next` lets a test make the next call of an operation raise, to
stand in for a crash or an outage between two writes.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from modm.services.cache.stores import (
    ObjectInfo,
    ObjectMissing,
    SearchHit,
    StatsUpdate,
    StoreUnavailable,
    VectorRecord,
)


class _Faults:
    def __init__(self) -> None:
        self._fail: dict[str, int] = {}

    def fail_next(self, operation: str, times: int = 1) -> None:
        self._fail[operation] = self._fail.get(operation, 0) + times

    def _check(self, operation: str) -> None:
        if self._fail.get(operation, 0) > 0:
            self._fail[operation] -= 1
            raise StoreUnavailable(f"injected failure of {operation}")


class MemoryVectorStore(_Faults):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.rows: dict[str, VectorRecord] = {}
        self._lock = threading.Lock()

    def insert(self, record: VectorRecord) -> None:
        self._check("insert")
        if record.vector is None or len(record.vector) != self.dim:
            raise ValueError("record needs a vector of the store's dimension")
        with self._lock:
            self.rows[record.entry_id] = dataclasses.replace(record)

    def search(self, vector: Sequence[float], top_k: int, tenant: str, created_after: float | None) -> list[SearchHit]:
        self._check("search")
        with self._lock:
            rows = [
                r
                for r in self.rows.values()
                if (r.tenant == tenant or r.shared) and (created_after is None or r.created_at > created_after)
            ]
        if not rows:
            return []
        query = np.asarray(vector, dtype=np.float64)
        matrix = np.asarray([r.vector for r in rows], dtype=np.float64)
        sims = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
        order = np.argsort(-sims, kind="stable")[:top_k]
        return [SearchHit(self._bare(rows[i]), float(sims[i])) for i in order]

    def get(self, entry_ids: Sequence[str]) -> list[VectorRecord]:
        self._check("get")
        with self._lock:
            return [self._bare(self.rows[i]) for i in entry_ids if i in self.rows]

    def delete(self, entry_ids: Sequence[str]) -> None:
        self._check("delete")
        with self._lock:
            for entry_id in entry_ids:
                self.rows.pop(entry_id, None)

    def update_stats(self, updates: Sequence[StatsUpdate]) -> None:
        self._check("update_stats")
        with self._lock:
            for u in updates:
                row = self.rows.get(u.entry_id)
                if row is not None:
                    row.last_hit_at, row.hit_count, row.saved_steps = (
                        u.last_hit_at,
                        u.hit_count,
                        u.saved_steps,
                    )

    def scan(self) -> Iterator[VectorRecord]:
        self._check("scan")
        with self._lock:
            rows = [self._bare(r) for r in self.rows.values()]
        return iter(rows)

    def close(self) -> None:
        pass

    @staticmethod
    def _bare(record: VectorRecord) -> VectorRecord:
        return dataclasses.replace(record, vector=None)


class MemoryObjectStore(_Faults):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._clock = clock
        self.objects: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._check("put")
        with self._lock:
            self.objects[key] = (bytes(data), self._clock())

    def get(self, key: str) -> bytes:
        self._check("get")
        with self._lock:
            if key not in self.objects:
                raise ObjectMissing(key)
            return self.objects[key][0]

    def exists(self, key: str) -> bool:
        self._check("exists")
        with self._lock:
            return key in self.objects

    def delete(self, keys: Iterable[str]) -> None:
        self._check("delete")
        with self._lock:
            for key in keys:
                self.objects.pop(key, None)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self._check("list")
        with self._lock:
            items = [ObjectInfo(k, len(data), at) for k, (data, at) in self.objects.items() if k.startswith(prefix)]
        return iter(sorted(items, key=lambda o: o.key))

    def close(self) -> None:
        pass
