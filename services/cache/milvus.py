"""Vectors and entry metadata in Milvus through pymilvus' MilvusClient.

`uri` is either a local `*.db` path (Milvus Lite, embedded in this process) or
`http(s)://host:port` (a Milvus standalone/cluster server). One collection per embedder and
dimension (`<prefix>_<embedder>_<dim>`), COSINE metric.

Consistency: lookups (search) and point reads run at Session consistency by default: pymilvus
tracks this client's last write, so the cache always reads its own writes, without Strong's
wait for the server's next time tick (about 200 ms per search on a standalone server).
Reconcile's full scan and the read-modify-write of hit statistics run at Strong.

Index: HNSW by default. Milvus Lite 3.x builds HNSW through FAISS (its `faiss-cpu`
dependency) and falls back to brute force for segments too small to index; if the target
refuses the configured type, AUTOINDEX and then FLAT are tried, and the type actually built is
reported in `index_type` (and the start-up log).

Search ef: `search_ef="auto"` (the default) sizes HNSW's candidate list from the collection's
current entry count at each search (`auto_search_ef`), so a small cache keeps ef 64's latency and a
large one keeps its recall; an int fixes it. The count is read once at start-up, follows this
store's inserts and deletes, and is re-set by each full scan (the engine's reconcile).

Milvus Lite builds an index within CreateIndex and implements no AllocTimestamp, so its index is
not waited for (pymilvus' wait allocates a timestamp first, and Lite's gRPC server logs a
traceback for the unimplemented method); its queries carry no MVCC timestamp either, so the
query iterator's warning that it uses a client-side one instead is dropped for Lite.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import grpc
from pymilvus import DataType, MilvusClient, MilvusException
from pymilvus.client.utils import SciPyHelper

from modm.services.cache.stores import SearchHit, StatsUpdate, StoreUnavailable, VectorRecord
from modm.services.cache.validation import PROMPT_MAX_BYTES

log = logging.getLogger(__name__)

STRONG = "Strong"
SESSION = "Session"
SCALAR_FIELDS = (
    "id",
    "tenant",
    "shared",
    "prompt",
    "model_id",
    "object_key",
    "size_bytes",
    "width",
    "height",
    "created_at",
    "last_hit_at",
    "hit_count",
    "saved_steps",
    "params_key",
    "seed",
    "extra",
)
_ERRORS = (MilvusException, grpc.RpcError, ConnectionError, TimeoutError)
AUTO: Literal["auto"] = "auto"
_FALLBACKS = {"HNSW": ("HNSW", "AUTOINDEX", "FLAT"), "IVF_FLAT": ("IVF_FLAT", "AUTOINDEX", "FLAT")}


class _LiteIteratorTimestamp(logging.Filter):
    """Drops pymilvus' "failed to get mvccTs" warning: Lite has no MVCC timestamps to give, and
    the client-side timestamp the iterator falls back to is exact for an embedded store."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("failed to get mvccTs")


_LITE_ITERATOR_TIMESTAMP = _LiteIteratorTimestamp()


def is_server_uri(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "tcp://", "grpc://"))


def collection_name(prefix: str, embedder_slug: str, dim: int) -> str:
    return f"{prefix}_{embedder_slug}_{dim}"


AUTO_EF_BASE, AUTO_EF_BASE_ENTRIES, AUTO_EF_MAX = 64, 10_000, 1024


def auto_search_ef(entries: int, top_k: int) -> int:
    """ef 64 up to 10k entries, then growing with the square root of the count (x3.2 a decade:
    ~208 at 100k, 640 at 1M), in steps of 16, at most 1024, never under `top_k`.

    At ef 64 recall@1 fell by about half a decade's misses again with each tenfold growth in this
    project's benchmark (0.99 at 10k, 0.965 at 100k, 0.93 at 1M), and HNSW's misses fall about
    as fast as ef grows; a search costs about ef's share of one HNSW graph per segment, so a
    1M-entry cache still searches far below brute force's linear scan."""
    scale = math.sqrt(max(entries, AUTO_EF_BASE_ENTRIES) / AUTO_EF_BASE_ENTRIES)
    ef = min(AUTO_EF_MAX, 16 * math.ceil(AUTO_EF_BASE * scale / 16))
    return max(ef, top_k)


def _schema(dim: int) -> Any:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=32)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    schema.add_field("tenant", DataType.VARCHAR, max_length=64)
    schema.add_field("shared", DataType.BOOL)
    schema.add_field("prompt", DataType.VARCHAR, max_length=PROMPT_MAX_BYTES)
    schema.add_field("model_id", DataType.VARCHAR, max_length=1024)
    schema.add_field("object_key", DataType.VARCHAR, max_length=1024)
    schema.add_field("size_bytes", DataType.INT64)
    schema.add_field("width", DataType.INT64)
    schema.add_field("height", DataType.INT64)
    schema.add_field("created_at", DataType.DOUBLE)
    schema.add_field("last_hit_at", DataType.DOUBLE)
    schema.add_field("hit_count", DataType.INT64)
    schema.add_field("saved_steps", DataType.INT64)
    schema.add_field("params_key", DataType.VARCHAR, max_length=64)
    schema.add_field("seed", DataType.VARCHAR, max_length=32)
    schema.add_field("extra", DataType.VARCHAR, max_length=65_535)
    return schema


def _row(record: VectorRecord) -> dict[str, Any]:
    return {
        "id": record.entry_id,
        "vector": record.vector,
        "tenant": record.tenant,
        "shared": record.shared,
        "prompt": record.prompt,
        "model_id": record.model_id,
        "object_key": record.object_key,
        "size_bytes": record.size_bytes,
        "width": record.width,
        "height": record.height,
        "created_at": record.created_at,
        "last_hit_at": record.last_hit_at,
        "hit_count": record.hit_count,
        "saved_steps": record.saved_steps,
        "params_key": record.params_key,
        "seed": record.seed,
        "extra": record.extra,
    }


def _record(row: dict[str, Any]) -> VectorRecord:
    vector = row.get("vector")
    return VectorRecord(
        entry_id=str(row["id"]),
        tenant=str(row["tenant"]),
        prompt=str(row["prompt"]),
        model_id=str(row["model_id"]),
        object_key=str(row["object_key"]),
        size_bytes=int(row["size_bytes"]),
        created_at=float(row["created_at"]),
        shared=bool(row["shared"]),
        width=int(row["width"]),
        height=int(row["height"]),
        last_hit_at=float(row["last_hit_at"]),
        hit_count=int(row["hit_count"]),
        saved_steps=int(row["saved_steps"]),
        params_key=str(row["params_key"]),
        seed=str(row["seed"]),
        extra=str(row["extra"]),
        vector=[float(v) for v in vector] if vector is not None else None,
    )


def _ids_expr(entry_ids: Sequence[str]) -> str:
    # Entry ids are validated 32-hex strings (or produced by uuid4().hex): safe to quote.
    return f"id in {json.dumps(list(entry_ids))}"


class MilvusVectorStore:
    def __init__(
        self,
        uri: str,
        dim: int,
        collection: str,
        *,
        token: str | None = None,
        db_name: str | None = None,
        index_type: str = "HNSW",
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 200,
        search_ef: int | Literal["auto"] = AUTO,
        read_consistency: str = SESSION,
        timeout_s: float = 30.0,
    ) -> None:
        self.uri = uri
        self.dim = dim
        self.collection = collection
        self.search_ef = search_ef
        self.read_consistency = read_consistency
        self._hnsw = {"M": hnsw_m, "efConstruction": hnsw_ef_construction}
        if not is_server_uri(uri):
            if not uri.endswith(".db"):
                raise ValueError(f"a Milvus Lite path must end with .db, got {uri!r}")
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(_LITE_ITERATOR_TIMESTAMP)
        # pymilvus imports scipy.sparse on its first insert or search, unguarded: two I/O threads
        # doing that at once break the import (a circular-import AttributeError). Do it here.
        SciPyHelper.is_scipy_sparse(None)
        kwargs: dict[str, Any] = {"uri": uri, "timeout": timeout_s}
        if token:
            kwargs["token"] = token
        if db_name:
            kwargs["db_name"] = db_name
        self._entries_lock = threading.Lock()
        try:
            self.client = MilvusClient(**kwargs)
            self.index_type = self._ensure_collection(index_type)
            self.entries = self.count()
        except _ERRORS as exc:
            raise StoreUnavailable(f"Milvus at {uri}: {exc}") from exc
        log.info(
            "vector store ready",
            extra={"uri": uri, "collection": collection, "dim": dim, "index": self.index_type},
        )

    # --- set-up -------------------------------------------------------------------------

    def _ensure_collection(self, index_type: str) -> str:
        if self.client.has_collection(self.collection):
            described = self.client.describe_collection(self.collection)
            vector = next(f for f in described["fields"] if f["name"] == "vector")
            existing_dim = int(vector["params"]["dim"])
            if existing_dim != self.dim:
                raise ValueError(f"collection {self.collection} has dimension {existing_dim}, the embedder {self.dim}")
            built = self._existing_index_type()
            if built is None:
                built = self._create_index(index_type)
        else:
            self.client.create_collection(self.collection, schema=_schema(self.dim), consistency_level=STRONG)
            built = self._create_index(index_type)
        self.client.load_collection(self.collection)
        return built

    def _existing_index_type(self) -> str | None:
        for name in self.client.list_indexes(self.collection):
            info = self.client.describe_index(self.collection, name)
            if info.get("field_name") == "vector":
                return str(info.get("index_type"))
        return None

    def _create_index(self, index_type: str) -> str:
        errors = []
        for candidate in _FALLBACKS.get(index_type, (index_type, "FLAT")):
            params = self.client.prepare_index_params()
            extra: dict[str, Any] = {}
            if candidate == "HNSW":
                extra = dict(self._hnsw)
            elif candidate == "IVF_FLAT":
                extra = {"nlist": 1024}
            params.add_index(
                field_name="vector",
                index_name="vector",
                index_type=candidate,
                metric_type="COSINE",
                params=extra,
            )
            try:
                self.client.create_index(self.collection, params, sync=is_server_uri(self.uri))
            except MilvusException as exc:
                errors.append(f"{candidate}: {exc}")
                log.warning("index type refused, trying the next", extra={"index": candidate, "error": str(exc)})
                continue
            if candidate != index_type:
                log.warning("built a fallback index", extra={"wanted": index_type, "built": candidate})
            return candidate
        raise StoreUnavailable(f"no vector index could be built: {'; '.join(errors)}")

    # --- the VectorStore protocol ---------------------------------------------------------

    def _count_change(self, delta: int) -> None:
        with self._entries_lock:
            self.entries = max(0, self.entries + delta)

    def ef(self, top_k: int) -> int:
        """The HNSW search ef for a search of `top_k` (never under it) now."""
        if self.search_ef == AUTO:
            return auto_search_ef(self.entries, top_k)
        return max(int(self.search_ef), top_k)

    def insert(self, record: VectorRecord) -> None:
        self._call(self.client.insert, self.collection, [_row(record)])
        self._count_change(1)

    def search(self, vector: Sequence[float], top_k: int, tenant: str, created_after: float | None) -> list[SearchHit]:
        # Tenant ids are validated against [A-Za-z0-9_.-]: safe to quote into the filter.
        expr = f'(tenant == "{tenant}" or shared == true)'
        if created_after is not None:
            expr += f" and created_at > {created_after!r}"
        params: dict[str, Any] = {"metric_type": "COSINE"}
        if self.index_type == "HNSW":
            params["params"] = {"ef": self.ef(top_k)}
        result = self._call(
            self.client.search,
            self.collection,
            data=[list(vector)],
            limit=top_k,
            filter=expr,
            output_fields=list(SCALAR_FIELDS),
            search_params=params,
            anns_field="vector",
            consistency_level=self.read_consistency,
        )
        hits = []
        for hit in result[0]:
            entity = dict(hit["entity"])
            entity.setdefault("id", hit["id"])
            hits.append(SearchHit(_record(entity), float(hit["distance"])))
        return hits

    def get(self, entry_ids: Sequence[str]) -> list[VectorRecord]:
        if not entry_ids:
            return []
        rows = self._call(
            self.client.query,
            self.collection,
            filter=_ids_expr(entry_ids),
            output_fields=list(SCALAR_FIELDS),
            consistency_level=self.read_consistency,
        )
        return [_record(r) for r in rows]

    def delete(self, entry_ids: Sequence[str]) -> None:
        for start in range(0, len(entry_ids), 1000):
            batch = entry_ids[start : start + 1000]
            self._call(self.client.delete, self.collection, filter=_ids_expr(batch))
            self._count_change(-len(batch))

    def update_stats(self, updates: Sequence[StatsUpdate]) -> None:
        """Read-modify-upsert whole rows: partial upserts need Milvus >= 2.6, not assumed here."""
        by_id = {u.entry_id: u for u in updates}
        for start in range(0, len(updates), 500):
            ids = [u.entry_id for u in updates[start : start + 500]]
            rows = self._call(
                self.client.query,
                self.collection,
                filter=_ids_expr(ids),
                output_fields=[*SCALAR_FIELDS, "vector"],
                consistency_level=STRONG,
            )
            fresh = []
            for row in rows:
                update = by_id[str(row["id"])]
                record = _record(dict(row))
                record.last_hit_at, record.hit_count, record.saved_steps = (
                    update.last_hit_at,
                    update.hit_count,
                    update.saved_steps,
                )
                fresh.append(_row(record))
            if fresh:
                self._call(self.client.upsert, self.collection, fresh)

    def scan(self, batch_size: int = 2000) -> Iterator[VectorRecord]:
        try:
            iterator = self.client.query_iterator(
                self.collection,
                batch_size=batch_size,
                filter="",
                output_fields=list(SCALAR_FIELDS),
                consistency_level=STRONG,
            )
        except _ERRORS as exc:
            raise StoreUnavailable(f"scan {self.collection}: {exc}") from exc
        seen = 0
        try:
            while True:
                try:
                    batch = iterator.next()
                except _ERRORS as exc:
                    raise StoreUnavailable(f"scan {self.collection}: {exc}") from exc
                if not batch:
                    with self._entries_lock:
                        self.entries = seen
                    return
                seen += len(batch)
                for row in batch:
                    yield _record(dict(row))
        finally:
            iterator.close()

    def count(self) -> int:
        rows = self._call(
            self.client.query,
            self.collection,
            filter="",
            output_fields=["count(*)"],
            consistency_level=STRONG,
        )
        return int(rows[0]["count(*)"])

    def drop(self) -> None:
        self._call(self.client.drop_collection, self.collection)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            log.warning("closing the Milvus client failed", exc_info=True)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            try:
                return fn(*args, **kwargs)
            except MilvusException as exc:
                if "not loaded" not in str(exc):
                    raise
                # A restarted server loads its collections again in the background; ask for
                # ours now (this waits until it is loaded) and retry once.
                log.warning("collection not loaded (server restarted?); loading it", extra={"error": str(exc)})
                self.client.load_collection(self.collection)
                return fn(*args, **kwargs)
        except _ERRORS as exc:
            raise StoreUnavailable(f"{getattr(fn, '__name__', 'milvus call')} on {self.collection}: {exc}") from exc
