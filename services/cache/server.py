"""Start-up and shutdown of a cache process: bind, bring up the stores and the embedder, load
the ledger, reconcile, report SERVING; on SIGTERM drain, persist hit statistics, stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from modm.logs import configure_logging
from modm.services.cache import metrics
from modm.services.cache.embedders import BatchingEmbedder, Embedder, load_embedder
from modm.services.cache.engine import CacheEngine
from modm.services.cache.milvus import MilvusVectorStore, collection_name
from modm.services.cache.s3 import S3ObjectStore
from modm.services.cache.seaweed import S3Credentials, SeaweedServer
from modm.services.cache.servicer import CacheServicer
from modm.services.cache.settings import CacheSettings
from modm.serving import ServiceHost
from modm.v1 import cache_pb2, cache_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = cache_pb2.DESCRIPTOR.services_by_name["Cache"].full_name


@dataclass
class Backends:
    """Everything a cache process opened, so shutdown can close exactly that."""

    seaweed: SeaweedServer | None = None
    objects: S3ObjectStore | None = None
    vectors: MilvusVectorStore | None = None
    embedder: BatchingEmbedder | None = None
    extra_stores: list[S3ObjectStore] = field(default_factory=list)

    async def close(self) -> None:
        if self.embedder is not None:
            await self.embedder.close()
        for store in (self.vectors, self.objects, *self.extra_stores):
            if store is not None:
                with contextlib.suppress(Exception):
                    store.close()
        if self.seaweed is not None:
            await asyncio.to_thread(self.seaweed.stop)


def _s3_target(settings: CacheSettings, backends: Backends) -> tuple[str, S3Credentials, bool]:
    if settings.s3_endpoint:
        assert settings.s3_access_key is not None and settings.s3_secret_key is not None
        creds = S3Credentials(settings.s3_access_key, settings.s3_secret_key.get_secret_value())
        return settings.s3_endpoint, creds, settings.s3_secure
    assert backends.seaweed is not None
    return backends.seaweed.endpoint, backends.seaweed.credentials, False


async def open_backends(settings: CacheSettings, backends: Backends) -> tuple[Embedder, CacheEngine]:
    data_dir = settings.resolved_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    if not settings.s3_endpoint:
        # Spawned from the loop's (main) thread: its parent-death signal is tied to this thread.
        backends.seaweed = SeaweedServer(data_dir / "s3", weed=settings.weed_binary)
        backends.seaweed.start()
        await asyncio.to_thread(backends.seaweed.wait_ready)
    endpoint, creds, secure = _s3_target(settings, backends)

    def store_for(bucket: str) -> S3ObjectStore:
        store = S3ObjectStore(
            endpoint,
            bucket,
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            secure=secure,
            cert_check=settings.s3_cert_check,
            region=settings.s3_region,
        )
        return store

    backends.objects = store_for(settings.s3_bucket)
    await asyncio.to_thread(backends.objects.ensure_bucket)

    def extra_store(bucket: str) -> S3ObjectStore:
        store = store_for(bucket)
        backends.extra_stores.append(store)
        return store

    embedder = await asyncio.to_thread(
        load_embedder,
        settings.embedder,
        device=settings.device,
        open_clip_model=settings.open_clip_model,
        open_clip_pretrained=settings.open_clip_pretrained,
        minilm_dir=settings.minilm_dir,
    )
    backends.embedder = BatchingEmbedder(
        embedder,
        max_batch=settings.embed_max_batch,
        window_ms=settings.embed_window_ms,
        torch_threads=settings.torch_threads,
    )
    token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
    collection = collection_name(settings.collection_prefix, embedder.slug, embedder.dim)
    backends.vectors = await asyncio.to_thread(
        MilvusVectorStore,
        settings.resolved_milvus_uri(),
        embedder.dim,
        collection,
        token=token,
        db_name=settings.milvus_db,
        index_type=settings.index_type,
        hnsw_m=settings.hnsw_m,
        hnsw_ef_construction=settings.hnsw_ef_construction,
        search_ef=settings.search_ef,
        read_consistency=settings.read_consistency,
    )
    engine = CacheEngine(
        backends.vectors,
        backends.objects,
        backends.embedder,
        policy=settings.policy(),
        limits=settings.limits(),
        request_limits=settings.request_limits(),
        thresholds=settings.threshold_table(),
        object_prefix=settings.object_prefix(collection),
        reconcile_grace_seconds=settings.reconcile_grace_seconds,
        reconcile_interval_seconds=settings.reconcile_interval_seconds,
        stats_flush_seconds=settings.stats_flush_seconds,
        ttl_sweep_seconds=settings.ttl_sweep_seconds,
        fault_pause_after_object_put_s=settings.fault_pause_after_object_put_s,
        object_store_for_bucket=extra_store,
    )
    return embedder, engine


async def serve(settings: CacheSettings) -> None:
    """Bind first (health answers NOT_SERVING while the stores come up), then serve until SIGTERM."""
    host = ServiceHost(settings, [SERVICE_NAME])
    servicer = CacheServicer()
    cache_pb2_grpc.add_CacheServicer_to_server(servicer, host.server)
    async with host:
        backends = Backends()
        engine: CacheEngine | None = None
        try:
            embedder, engine = await open_backends(settings, backends)
            backends.embedder.start()  # type: ignore[union-attr]
            report = await engine.start(reconcile=settings.reconcile_on_start)
            servicer.attach(
                engine,
                import_root=settings.import_root,
                import_buckets=settings.import_buckets,
                entries_prefix=settings.s3_prefix,
            )
            await host.set_serving(True)
            metrics.READY.set(1)
            log.info(
                "serving",
                extra={
                    "port": host.port,
                    "embedder": embedder.name,
                    "dim": embedder.dim,
                    "index": backends.vectors.index_type if backends.vectors else None,
                    "milvus": settings.resolved_milvus_uri(),
                    "s3": backends.objects.endpoint if backends.objects else None,
                    "entries": len(engine.ledger),
                    "reconcile": report.__dict__ if report else None,
                },
            )
            await host.run_until_stopped()
        finally:
            metrics.READY.set(0)
            if engine is not None:
                await engine.close()
            await backends.close()


def main(settings: CacheSettings) -> None:
    configure_logging("cache", settings.log_level, settings.log_format)
    asyncio.run(serve(settings))
