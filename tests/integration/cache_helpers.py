"""Shared pieces of the cache integration tests: a test-owned S3 server, clients, images."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from PIL import Image

from modm.launch import ServiceProcess
from modm.services.cache.milvus import collection_name
from modm.services.cache.s3 import S3ObjectStore
from modm.services.cache.seaweed import SeaweedServer
from modm.v1 import cache_pb2, cache_pb2_grpc
from tests.procs import start_cache

# Where the default collection (MiniLM, 384-d) keeps its image bytes in the bucket.
OBJECTS = f"entries/{collection_name('modm_cache', 'minilm', 384)}/"


def png(color: tuple[int, int, int] = (200, 30, 30), size: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class S3:
    server: SeaweedServer

    def settings(self, bucket: str) -> dict[str, object]:
        creds = self.server.credentials
        return {
            "s3_endpoint": self.server.endpoint,
            "s3_access_key": creds.access_key,
            "s3_secret_key": creds.secret_key,
            "s3_bucket": bucket,
        }

    def store(self, bucket: str) -> S3ObjectStore:
        creds = self.server.credentials
        store = S3ObjectStore(self.server.endpoint, bucket, access_key=creds.access_key, secret_key=creds.secret_key)
        store.ensure_bucket()
        return store


def new_bucket() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@contextmanager
def seaweed(folder: Path) -> Iterator[S3]:
    server = SeaweedServer(folder)
    server.start()
    try:
        server.wait_ready()
        yield S3(server)
    finally:
        server.stop()


class CacheClient:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = cache_pb2_grpc.CacheStub(self.channel)

    def insert(self, tenant: str, prompt: str, image: bytes | None = None, **kw: object) -> cache_pb2.InsertResponse:
        request = cache_pb2.InsertRequest(tenant=tenant, prompt=prompt, image=image or png(), model_id="large", **kw)
        return self.stub.Insert(request, timeout=60)

    def lookup(self, tenant: str, prompt: str, **kw: object) -> cache_pb2.LookupResponse:
        return self.stub.Lookup(cache_pb2.LookupRequest(tenant=tenant, prompt=prompt, **kw), timeout=60)

    def fetch(self, tenant: str, entry_id: str) -> cache_pb2.FetchResponse:
        return self.stub.Fetch(cache_pb2.FetchRequest(tenant=tenant, entry_id=entry_id), timeout=60)

    def delete(self, tenant: str, entry_id: str) -> None:
        self.stub.Delete(cache_pb2.DeleteRequest(tenant=tenant, entry_id=entry_id), timeout=60)

    def stats(self, tenant: str = "") -> cache_pb2.StatsResponse:
        return self.stub.Stats(cache_pb2.StatsRequest(tenant=tenant), timeout=60)

    def reconcile(self, grace_seconds: float | None = None) -> cache_pb2.ReconcileResponse:
        request = cache_pb2.ReconcileRequest()
        if grace_seconds is not None:
            request.grace_seconds = grace_seconds
        return self.stub.Reconcile(request, timeout=120)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CacheClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def code_of(call, *args, **kw) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    try:
        call(*args, **kw)
    except grpc.RpcError as error:
        return error.code(), error.details()
    raise AssertionError("the call succeeded")


def started_cache(data_dir: Path, log_dir: Path, **settings: object) -> ServiceProcess:
    settings.setdefault("log_format", "text")
    proc = start_cache(data_dir, log_dir, **settings)
    try:
        proc.wait_serving(timeout=180)
    except BaseException:
        proc.stop()
        raise
    return proc
