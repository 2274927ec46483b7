"""The thin gRPC edge of the cache: messages in, engine calls, messages out."""

from __future__ import annotations

from collections.abc import Iterable

from grpc import aio

from modm.errors import InvalidArgument, Unavailable
from modm.params import read_params
from modm.services.cache.engine import CacheEngine
from modm.services.cache.importer import FolderSource, ObjectStoreSource, import_items
from modm.services.cache.model import Entry, GenParams, LookupQuery, NewEntry, TenantStats
from modm.services.cache.thresholds import TOTAL_STEPS
from modm.v1 import cache_pb2, cache_pb2_grpc, common_pb2


def _params(message: common_pb2.GenerationParams) -> GenParams:
    raw = read_params(message)  # the output format is the caller's business, not the cache key's
    return GenParams(raw.prompt, raw.negative_prompt, raw.width, raw.height, raw.steps, raw.guidance_scale, raw.seed)


def _params_message(params: GenParams) -> common_pb2.GenerationParams:
    message = common_pb2.GenerationParams(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        width=params.width,
        height=params.height,
        steps=params.steps,
    )
    if params.guidance_scale is not None:
        message.guidance_scale = params.guidance_scale
    if params.seed is not None:
        message.seed = params.seed
    return message


def entry_message(entry: Entry) -> cache_pb2.CacheEntry:
    message = cache_pb2.CacheEntry(
        entry_id=entry.entry_id,
        tenant=entry.tenant,
        shared=entry.shared,
        prompt=entry.prompt,
        model_id=entry.model_id,
        size_bytes=entry.size_bytes,
        width=entry.width,
        height=entry.height,
        created_at=entry.created_at,
        last_hit_at=entry.last_hit_at,
        hit_count=entry.hit_count,
        saved_steps=entry.saved_steps,
        metadata=entry.metadata,
    )
    if entry.params is not None:
        message.params.CopyFrom(_params_message(entry.params))
    return message


def _tenant_stats(stats: TenantStats) -> cache_pb2.TenantStats:
    c = stats.counters
    return cache_pb2.TenantStats(
        tenant=stats.tenant,
        entries=stats.entries,
        bytes=stats.bytes,
        hit_count=stats.hit_count,
        saved_steps=stats.saved_steps,
        lookups=c.lookups,
        lookup_hits=c.lookup_hits,
        exact_repeats=c.exact_repeats,
        inserts=c.inserts,
        evictions=c.evictions,
    )


class CacheServicer(cache_pb2_grpc.CacheServicer):
    """Registered before the stores are up, so early callers get UNAVAILABLE, not UNIMPLEMENTED."""

    def __init__(self) -> None:
        self._ready: CacheEngine | None = None
        self.embedder_name = ""
        self.policy_name = ""
        self.import_root = None
        self.import_buckets: frozenset[str] = frozenset()
        self.entries_prefix: str | None = None

    def attach(
        self,
        engine: CacheEngine,
        *,
        import_root: object = None,
        import_buckets: Iterable[str] = (),
        entries_prefix: str | None = None,
    ) -> None:
        """Serve `engine`; Import never reads under `entries_prefix` (all collections' entries)."""
        self._ready = engine
        self.embedder_name = engine.embedder.embedder.name
        self.policy_name = engine.ledger.policy.name
        self.import_root = import_root
        self.import_buckets = frozenset(import_buckets)
        self.entries_prefix = entries_prefix

    @property
    def _engine(self) -> CacheEngine:
        if self._ready is None:
            raise Unavailable("cache is starting: stores and embedder are not ready yet")
        return self._ready

    async def Lookup(self, request: cache_pb2.LookupRequest, context: aio.ServicerContext) -> cache_pb2.LookupResponse:
        result = await self._engine.lookup(
            LookupQuery(
                tenant=request.tenant,
                prompt=request.prompt,
                embedding=list(request.embedding),
                top_k=request.top_k,
                params=_params(request.params) if request.HasField("params") else None,
                dry_run=request.dry_run,
            )
        )
        d = result.decision
        return cache_pb2.LookupResponse(
            matches=[cache_pb2.Match(entry=entry_message(m.entry), similarity=m.similarity) for m in result.matches],
            decision=cache_pb2.Decision(
                hit=d.hit,
                exact_repeat=result.exact_repeat,
                skipped_steps=d.skipped_steps,
                total_steps=TOTAL_STEPS,
                strength=d.strength,
                similarity=d.similarity if result.matches else -1.0,
                entry_id=result.entry_id,
            ),
            embedder=self.embedder_name,
            embed_seconds=result.embed_seconds,
            search_seconds=result.search_seconds,
        )

    async def Fetch(self, request: cache_pb2.FetchRequest, context: aio.ServicerContext) -> cache_pb2.FetchResponse:
        data, entry = await self._engine.fetch(request.tenant, request.entry_id)
        return cache_pb2.FetchResponse(image=data, entry=entry_message(entry))

    async def Insert(self, request: cache_pb2.InsertRequest, context: aio.ServicerContext) -> cache_pb2.InsertResponse:
        result = await self._engine.insert(
            NewEntry(
                tenant=request.tenant,
                prompt=request.prompt,
                image=request.image,
                model_id=request.model_id,
                params=_params(request.params) if request.HasField("params") else None,
                metadata=dict(request.metadata),
                shared=request.shared,
            )
        )
        return cache_pb2.InsertResponse(entry_id=result.entry_id, evicted_ids=result.evicted_ids)

    async def Delete(self, request: cache_pb2.DeleteRequest, context: aio.ServicerContext) -> cache_pb2.DeleteResponse:
        await self._engine.delete(request.tenant, request.entry_id)
        return cache_pb2.DeleteResponse()

    async def Stats(self, request: cache_pb2.StatsRequest, context: aio.ServicerContext) -> cache_pb2.StatsResponse:
        engine = self._engine
        report = engine.stats(request.tenant)
        limits = engine.limits
        # For one tenant: its own capacity (a per-tenant override, or the default).
        tenant_entries, tenant_bytes = (
            limits.for_tenant(request.tenant)
            if request.tenant
            else (limits.tenant_max_entries, limits.tenant_max_bytes)
        )
        return cache_pb2.StatsResponse(
            total=_tenant_stats(report.total),
            tenants=[_tenant_stats(t) for t in report.tenants],
            embedder=self.embedder_name,
            dimension=engine.dim,
            eviction_policy=self.policy_name,
            max_entries=limits.max_entries or 0,
            max_bytes=limits.max_bytes or 0,
            tenant_max_entries=tenant_entries or 0,
            tenant_max_bytes=tenant_bytes or 0,
            ttl_seconds=limits.ttl_seconds or 0.0,
        )

    async def Reconcile(
        self, request: cache_pb2.ReconcileRequest, context: aio.ServicerContext
    ) -> cache_pb2.ReconcileResponse:
        grace = request.grace_seconds if request.HasField("grace_seconds") else None
        report = await self._engine.reconcile(grace)
        return cache_pb2.ReconcileResponse(
            vectors_scanned=report.vectors_scanned,
            objects_scanned=report.objects_scanned,
            stale_vectors_removed=report.stale_vectors_removed,
            orphan_objects_removed=report.orphan_objects_removed,
            expired_removed=report.expired_removed,
        )

    async def Import(self, request: cache_pb2.ImportRequest, context: aio.ServicerContext) -> cache_pb2.ImportResponse:
        engine = self._engine
        which = request.WhichOneof("source")
        if which == "folder":
            source = FolderSource.under_root(request.folder, self.import_root)
        elif which == "bucket_prefix":
            source = ObjectStoreSource.for_request(
                engine,
                request.bucket,
                request.bucket_prefix,
                allowed_buckets=self.import_buckets,
                reserved_prefix=self.entries_prefix,
            )
        else:
            raise InvalidArgument("source", "give a folder or a bucket_prefix")
        report = await import_items(
            engine,
            source,
            tenant=request.tenant,
            model_id=request.model_id or "imported",
            shared=request.shared,
            limit=request.limit or None,
        )
        return cache_pb2.ImportResponse(
            imported=len(report.entry_ids),
            skipped=report.skipped,
            errors=report.errors[:100],
            entry_ids=report.entry_ids,
        )
