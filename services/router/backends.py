"""The router's clients of the cache and the workers, behind small interfaces the engine uses.

The engine sees domain values and two error types: `CacheError` (the cache did not answer as
hoped; the request goes on without it) and `WorkerFailure` (carries the gRPC status name and
the `modm-reason` trailer so `policy.classify_failure` can judge it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modm.grpc_errors import MODM_REASON_KEY, FailureReason
from modm.services.router.policy import CacheDecision
from modm.tls import ClientTls, open_channel
from modm.v1 import cache_pb2, cache_pb2_grpc, common_pb2, worker_pb2, worker_pb2_grpc

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # Reconnect quickly after a peer restarts; the router does its own retrying.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


class CacheError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class Lookup:
    decision: CacheDecision
    embed_seconds: float
    search_seconds: float


@dataclass(frozen=True)
class CachedImage:
    data: bytes
    width: int
    height: int
    seed: int | None
    model_id: str


class CacheBackend(Protocol):
    async def lookup(
        self, tenant: str, prompt: str, params: common_pb2.GenerationParams, timeout_s: float
    ) -> Lookup: ...

    async def fetch(self, tenant: str, entry_id: str, timeout_s: float) -> CachedImage: ...

    async def insert(
        self,
        tenant: str,
        prompt: str,
        image: bytes,
        model_id: str,
        params: common_pb2.GenerationParams,
        metadata: Mapping[str, str],
        timeout_s: float,
    ) -> str: ...

    async def close(self) -> None: ...


class GrpcCache:
    """modm.v1.Cache over one channel."""

    def __init__(self, target: str, tls: ClientTls | None = None) -> None:
        self.target = target
        self._channel = open_channel(aio, target, CHANNEL_OPTIONS, tls)
        self._stub = cache_pb2_grpc.CacheStub(self._channel)

    async def lookup(self, tenant: str, prompt: str, params: common_pb2.GenerationParams, timeout_s: float) -> Lookup:
        request = cache_pb2.LookupRequest(tenant=tenant, prompt=prompt, params=params, top_k=1)
        try:
            reply = await self._stub.Lookup(request, timeout=timeout_s)
        except aio.AioRpcError as error:
            raise CacheError(error.code().name, error.details() or "") from error
        d = reply.decision
        decision = CacheDecision(
            hit=d.hit,
            exact_repeat=d.exact_repeat,
            skipped_steps=d.skipped_steps,
            total_steps=d.total_steps,
            strength=d.strength,
            similarity=d.similarity,
            entry_id=d.entry_id,
            embedder=reply.embedder,
        )
        return Lookup(decision, reply.embed_seconds, reply.search_seconds)

    async def fetch(self, tenant: str, entry_id: str, timeout_s: float) -> CachedImage:
        try:
            reply = await self._stub.Fetch(cache_pb2.FetchRequest(tenant=tenant, entry_id=entry_id), timeout=timeout_s)
        except aio.AioRpcError as error:
            raise CacheError(error.code().name, error.details() or "") from error
        entry = reply.entry
        seed = entry.params.seed if entry.HasField("params") and entry.params.HasField("seed") else None
        return CachedImage(reply.image, entry.width, entry.height, seed, entry.model_id)

    async def insert(
        self,
        tenant: str,
        prompt: str,
        image: bytes,
        model_id: str,
        params: common_pb2.GenerationParams,
        metadata: Mapping[str, str],
        timeout_s: float,
    ) -> str:
        request = cache_pb2.InsertRequest(
            tenant=tenant, prompt=prompt, image=image, model_id=model_id, params=params, metadata=metadata
        )
        try:
            reply = await self._stub.Insert(request, timeout=timeout_s)
        except aio.AioRpcError as error:
            raise CacheError(error.code().name, error.details() or "") from error
        return reply.entry_id

    async def close(self) -> None:
        await self._channel.close()


# --- workers --------------------------------------------------------------------------------


class WorkerFailure(Exception):
    def __init__(self, address: str, code: str, message: str, reason: FailureReason | None = None) -> None:
        super().__init__(f"worker {address}: {code}: {message}")
        self.address = address
        self.code = code
        self.details = message
        self.reason = reason

    @classmethod
    def of_rpc(cls, address: str, error: aio.AioRpcError) -> WorkerFailure:
        """The failure a worker call ended with, its `modm-reason` trailer read (unknown values: None)."""
        reason = None
        for key, value in error.trailing_metadata() or ():
            if key == MODM_REASON_KEY:
                with contextlib.suppress(ValueError):
                    reason = FailureReason(value)
        return cls(address, error.code().name, error.details() or "", reason)


@dataclass(frozen=True)
class WorkerEvent:
    """A progress event from the worker: kind is queued, started or step."""

    kind: str
    step: int = 0
    total_steps: int = 0
    batch_size: int = 0
    position: int = 0


class WorkerClient(Protocol):
    address: str

    async def serving(self, timeout_s: float) -> bool: ...

    async def info(self, timeout_s: float) -> worker_pb2.WorkerInfo: ...

    async def generate(
        self,
        params: common_pb2.GenerationParams,
        *,
        init_image: bytes | None,
        strength: float,
        timeout_s: float,
        on_event: Callable[[WorkerEvent], None] | None,
    ) -> worker_pb2.GeneratedImage: ...

    async def close(self) -> None: ...


WORKER_SERVICE = worker_pb2.DESCRIPTOR.services_by_name["Worker"].full_name


class GrpcWorker:
    """modm.v1.Worker over one channel; always uses the streaming RPCs so progress is free."""

    def __init__(self, address: str, tls: ClientTls | None = None) -> None:
        self.address = address
        self._channel = open_channel(aio, address, CHANNEL_OPTIONS, tls)
        self._stub = worker_pb2_grpc.WorkerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def serving(self, timeout_s: float) -> bool:
        """Whether the worker's health service says SERVING (false while loading or draining)."""
        try:
            reply = await self._health.Check(health_pb2.HealthCheckRequest(service=WORKER_SERVICE), timeout=timeout_s)
        except aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def info(self, timeout_s: float) -> worker_pb2.WorkerInfo:
        try:
            return await self._stub.Info(worker_pb2.InfoRequest(), timeout=timeout_s)
        except aio.AioRpcError as error:
            raise WorkerFailure.of_rpc(self.address, error) from error

    async def generate(
        self,
        params: common_pb2.GenerationParams,
        *,
        init_image: bytes | None,
        strength: float,
        timeout_s: float,
        on_event: Callable[[WorkerEvent], None] | None,
    ) -> worker_pb2.GeneratedImage:
        if init_image is None:
            call = self._stub.TextToImageStream(worker_pb2.TextToImageRequest(params=params), timeout=timeout_s)
        else:
            call = self._stub.ImageToImageStream(
                worker_pb2.ImageToImageRequest(params=params, init_image=init_image, strength=strength),
                timeout=timeout_s,
            )
        try:
            async for event in call:
                which = event.WhichOneof("event")
                if which == "result":
                    return event.result
                if on_event is None:
                    continue
                if which == "queued":
                    on_event(WorkerEvent("queued", position=event.queued.position))
                elif which == "started":
                    on_event(
                        WorkerEvent(
                            "started",
                            total_steps=event.started.total_steps,
                            batch_size=event.started.batch_size,
                        )
                    )
                elif which == "step":
                    on_event(WorkerEvent("step", step=event.step.step, total_steps=event.step.total_steps))
        except aio.AioRpcError as error:
            raise WorkerFailure.of_rpc(self.address, error) from error
        finally:
            call.cancel()
        raise WorkerFailure(self.address, grpc.StatusCode.UNAVAILABLE.name, "stream ended without a result")

    async def close(self) -> None:
        await self._channel.close()
