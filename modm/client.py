"""The Python SDK: `modm.Client` (blocking) and `modm.AsyncClient` (asyncio) for the router.

    with modm.Client() as client:                  # 127.0.0.1:50051, what `modm up` serves
        result = client.generate("a lighthouse at dusk", seed=7)
        result.save("lighthouse.png")
        print(result.outcome, result.pool, result.strength, result.timings["total_seconds"])

Every call has a deadline (default 300 s). Calls are retried only when the router is
UNAVAILABLE, with exponential backoff inside that deadline; every other failure raises a
`ModmClientError` subclass that names the status (and, for bad input, the field).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from grpc import aio
from PIL import Image

from modm.backoff import backoff_seconds
from modm.grpc_errors import MODM_REASON_KEY, RETRY_AFTER_KEY, FailureReason
from modm.tls import channel_credentials
from modm.v1 import common_pb2, router_pb2, router_pb2_grpc

DEFAULT_ENDPOINT = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 300.0
MAX_BACKOFF_S = 5.0  # a restarting router is retried every few seconds, not ever more rarely
T = TypeVar("T")
log = logging.getLogger(__name__)

FORMATS = {
    "png": common_pb2.IMAGE_FORMAT_PNG,
    "webp": common_pb2.IMAGE_FORMAT_WEBP,
    "jpeg": common_pb2.IMAGE_FORMAT_JPEG,
}
FORMAT_NAMES = {v: k for k, v in FORMATS.items()} | {common_pb2.IMAGE_FORMAT_UNSPECIFIED: "png"}
POLICIES = {
    "read_write": router_pb2.CACHE_POLICY_READ_WRITE,
    "bypass": router_pb2.CACHE_POLICY_BYPASS,
    "no_store": router_pb2.CACHE_POLICY_NO_STORE,
    "off": router_pb2.CACHE_POLICY_OFF,
}
OUTCOMES = {
    router_pb2.CACHE_OUTCOME_EXACT_REPEAT: "exact_repeat",
    router_pb2.CACHE_OUTCOME_HIT: "hit",
    router_pb2.CACHE_OUTCOME_MISS: "miss",
    router_pb2.CACHE_OUTCOME_BYPASSED: "bypassed",
    router_pb2.CACHE_OUTCOME_UNSPECIFIED: "unknown",
}


# --- errors --------------------------------------------------------------------------------


class ModmClientError(Exception):
    """A call failed; `code` is the gRPC status name, `details` the router's message."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


class InvalidArgumentError(ModmClientError):
    @property
    def field(self) -> str:
        """The request field the router named (e.g. `params.width`)."""
        return self.details.partition(": ")[0]


class UnauthenticatedError(ModmClientError):
    pass


class PermissionDeniedError(ModmClientError):
    """The credential may not do this: e.g. act for the tenant the request names."""


class ResourceExhaustedError(ModmClientError):
    def __init__(self, code: str, details: str, retry_after_s: float | None) -> None:
        super().__init__(code, details)
        self.retry_after_s = retry_after_s


class DeadlineExceededError(ModmClientError):
    pass


class UnavailableError(ModmClientError):
    pass


class FailedPreconditionError(ModmClientError):
    """The request is valid but cannot be served as it is (e.g. the model failed on this input)."""


class OutOfMemoryError(FailedPreconditionError):
    """The size asked for did not fit the workers' memory (the message names size and batch);
    the same request will fail again, a smaller size may not."""


_ERRORS: dict[grpc.StatusCode, type[ModmClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
}


def _error(error: grpc.RpcError) -> ModmClientError:
    code = error.code()  # type: ignore[attr-defined]
    details = error.details() or ""  # type: ignore[attr-defined]
    trailers = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry = trailers.get(RETRY_AFTER_KEY)
        return ResourceExhaustedError(code.name, details, None if retry is None else float(retry))
    if trailers.get(MODM_REASON_KEY) == FailureReason.OUT_OF_MEMORY:
        return OutOfMemoryError(code.name, details)
    return _ERRORS.get(code, ModmClientError)(code.name, details)


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateResult:
    """An image and the account of how it was served."""

    request_id: str
    data: bytes
    format: str
    width: int
    height: int
    seed: int
    steps_run: int
    tenant: str
    # how the cache was used
    outcome: str  # exact_repeat, hit, miss, bypassed
    similarity: float
    skipped_steps: int
    total_steps: int
    strength: float
    source_entry_id: str
    cache_available: bool
    cache_note: str
    insert_scheduled: bool
    embedder: str
    # who served it
    pool: str  # large, small or cache
    model_id: str
    worker: str
    degraded: bool
    large_took_hit: bool
    attempts: int
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_message(cls, m: router_pb2.GenerateResponse) -> GenerateResult:
        c, s, t = m.cache, m.served_by, m.timings
        return cls(
            request_id=m.request_id,
            data=m.image,
            format=FORMAT_NAMES.get(m.format, "png"),
            width=m.width,
            height=m.height,
            seed=m.seed,
            steps_run=m.steps_run,
            tenant=m.tenant,
            outcome=OUTCOMES.get(c.outcome, "unknown"),
            similarity=round(c.similarity, 6),
            skipped_steps=c.skipped_steps,
            total_steps=c.total_steps,
            strength=round(c.strength, 6),
            source_entry_id=c.source_entry_id,
            cache_available=c.cache_available,
            cache_note=c.cache_note,
            insert_scheduled=c.insert_scheduled,
            embedder=c.embedder,
            pool=s.pool,
            model_id=s.model_id,
            worker=s.worker,
            degraded=s.degraded,
            large_took_hit=s.large_took_hit,
            attempts=s.attempts,
            timings={
                "lookup_seconds": t.lookup_seconds,
                "embed_seconds": t.embed_seconds,
                "search_seconds": t.search_seconds,
                "fetch_seconds": t.fetch_seconds,
                "queue_seconds": t.queue_seconds,
                "generate_seconds": t.generate_seconds,
                "total_seconds": t.total_seconds,
            },
        )

    @property
    def image(self) -> Image.Image:
        image = Image.open(io.BytesIO(self.data))
        image.load()
        return image

    def save(self, path: str | Path) -> Path:
        """Write the image bytes as returned (the suffix does not re-encode)."""
        target = Path(path)
        target.write_bytes(self.data)
        return target

    def metadata(self) -> dict[str, Any]:
        """Everything but the image bytes (JSON-serialisable)."""
        return {k: v for k, v in self.__dict__.items() if k != "data"}


@dataclass(frozen=True)
class Queued:
    pool: str
    outcome: str
    position: int
    attempt: int


@dataclass(frozen=True)
class Started:
    worker: str
    total_steps: int
    batch_size: int
    attempt: int


@dataclass(frozen=True)
class Step:
    step: int
    total_steps: int


StreamEvent = Queued | Started | Step | GenerateResult


def _event(m: router_pb2.GenerateEvent) -> StreamEvent:
    which = m.WhichOneof("event")
    if which == "queued":
        q = m.queued
        return Queued(q.pool, OUTCOMES.get(q.outcome, "unknown"), q.position, q.attempt)
    if which == "started":
        return Started(m.started.worker, m.started.total_steps, m.started.batch_size, m.started.attempt)
    if which == "step":
        return Step(m.step.step, m.step.total_steps)
    return GenerateResult.from_message(m.result)


def _request(
    prompt: str,
    *,
    negative_prompt: str,
    width: int,
    height: int,
    steps: int,
    guidance_scale: float | None,
    seed: int | None,
    output_format: str,
    tenant: str,
    cache_policy: str,
) -> router_pb2.GenerateRequest:
    if output_format not in FORMATS:
        raise ValueError(f"output_format must be one of {', '.join(FORMATS)}")
    if cache_policy not in POLICIES:
        raise ValueError(f"cache_policy must be one of {', '.join(POLICIES)}")
    params = common_pb2.GenerationParams(
        prompt=prompt,
        negative_prompt=negative_prompt,
        width=width,
        height=height,
        steps=steps,
        output_format=FORMATS[output_format],
    )
    if guidance_scale is not None:
        params.guidance_scale = guidance_scale
    if seed is not None:
        params.seed = seed
    return router_pb2.GenerateRequest(params=params, tenant=tenant, cache_policy=POLICIES[cache_policy])


# --- clients -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    endpoint: str
    token: str | None
    timeout_s: float
    retries: int
    backoff_s: float
    credentials: grpc.ChannelCredentials | None

    @classmethod
    def make(
        cls,
        endpoint: str | None,
        token: str | None,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        tls: bool,
        root_certificates: bytes | None,
        client_certificate: bytes | None = None,
        client_key: bytes | None = None,
    ) -> _Options:
        secure = tls or root_certificates is not None or client_certificate is not None
        credentials = channel_credentials(root_certificates, client_certificate, client_key) if secure else None
        return cls(
            endpoint or os.environ.get("MODM_ENDPOINT") or DEFAULT_ENDPOINT,
            token if token is not None else os.environ.get("MODM_TOKEN") or None,
            timeout_s,
            retries,
            backoff_s,
            credentials,
        )

    def open_channel(self, transport: Any) -> Any:
        """A channel from `grpc` (blocking) or `grpc.aio`: both spell the two factories alike."""
        if self.credentials is not None:
            return transport.secure_channel(self.endpoint, self.credentials, _CHANNEL_OPTIONS)
        return transport.insecure_channel(self.endpoint, _CHANNEL_OPTIONS)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def delay(self, attempt: int, deadline: float) -> float | None:
        """Backoff before retry `attempt` (1-based), or None when retries or time are used up."""
        pause = backoff_seconds(attempt, base=self.backoff_s, cap=MAX_BACKOFF_S)
        if attempt > self.retries or time.monotonic() + pause >= deadline:
            return None
        return pause


_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]


class Client:
    """Blocking client of a modm router. Use as a context manager or call `close()`."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = 3,
        backoff: float = 0.5,
        tls: bool = False,
        root_certificates: bytes | None = None,
        client_certificate: bytes | None = None,
        client_key: bytes | None = None,
    ) -> None:
        """`client_certificate`/`client_key` (PEM): present them to a router that requires mTLS."""
        self._o = _Options.make(
            endpoint, token, timeout, retries, backoff, tls, root_certificates, client_certificate, client_key
        )
        self._channel = self._o.open_channel(grpc)
        self._stub = router_pb2_grpc.RouterStub(self._channel)

    @property
    def endpoint(self) -> str:
        return self._o.endpoint

    def _call(self, fn: Callable[[float], T], timeout: float | None) -> T:
        deadline = time.monotonic() + (timeout or self._o.timeout_s)
        attempt = 0
        while True:
            try:
                return fn(max(0.0, deadline - time.monotonic()))
            except grpc.RpcError as error:
                attempt += 1
                pause = self._o.delay(attempt, deadline)
                if error.code() is not grpc.StatusCode.UNAVAILABLE or pause is None:  # type: ignore[attr-defined]
                    raise _error(error) from None
                log.info("router UNAVAILABLE, retry %d in %.2fs", attempt, pause)
                time.sleep(pause)

    def generate(
        self,
        prompt: str,
        *,
        negative_prompt: str = "",
        width: int = 0,
        height: int = 0,
        steps: int = 0,
        guidance_scale: float | None = None,
        seed: int | None = None,
        output_format: str = "png",
        tenant: str = "",
        cache_policy: str = "read_write",
        timeout: float | None = None,
    ) -> GenerateResult:
        """One image. 0/None take the serving model's defaults; `cache_policy` is read_write
        (default), bypass (no reuse), no_store (no insertion) or off."""
        request = _request(
            prompt,
            negative_prompt=negative_prompt,
            width=width,
            height=height,
            steps=steps,
            guidance_scale=guidance_scale,
            seed=seed,
            output_format=output_format,
            tenant=tenant,
            cache_policy=cache_policy,
        )
        reply = self._call(
            lambda left: self._stub.Generate(request, timeout=left, metadata=self._o.metadata()), timeout
        )
        return GenerateResult.from_message(reply)

    def generate_stream(self, prompt: str, *, timeout: float | None = None, **kwargs: Any) -> Iterator[StreamEvent]:
        """Queued/Started/Step events, then the GenerateResult. Retried (on UNAVAILABLE) only
        until the first event arrives."""
        request = _request(prompt, **_stream_defaults(kwargs))
        deadline = time.monotonic() + (timeout or self._o.timeout_s)
        attempt = 0
        while True:
            received = False
            try:
                for message in self._stub.GenerateStream(
                    request, timeout=max(0.0, deadline - time.monotonic()), metadata=self._o.metadata()
                ):
                    received = True
                    yield _event(message)
                return
            except grpc.RpcError as error:
                attempt += 1
                pause = self._o.delay(attempt, deadline)
                if received or error.code() is not grpc.StatusCode.UNAVAILABLE or pause is None:  # type: ignore[attr-defined]
                    raise _error(error) from None
                log.info("router UNAVAILABLE, retry %d in %.2fs", attempt, pause)
                time.sleep(pause)

    def stats(self, timeout: float | None = None) -> dict[str, Any]:
        """The router's sliding-window statistics, as a dict of the RouterStats fields."""
        reply = self._call(
            lambda left: self._stub.Stats(router_pb2.RouterStatsRequest(), timeout=left, metadata=self._o.metadata()),
            timeout or 30.0,
        )
        return _stats_dict(reply)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """asyncio client of a modm router. Use `async with` or await `close()`."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = 3,
        backoff: float = 0.5,
        tls: bool = False,
        root_certificates: bytes | None = None,
        client_certificate: bytes | None = None,
        client_key: bytes | None = None,
    ) -> None:
        """`client_certificate`/`client_key` (PEM): present them to a router that requires mTLS."""
        self._o = _Options.make(
            endpoint, token, timeout, retries, backoff, tls, root_certificates, client_certificate, client_key
        )
        self._channel = self._o.open_channel(aio)
        self._stub = router_pb2_grpc.RouterStub(self._channel)

    @property
    def endpoint(self) -> str:
        return self._o.endpoint

    async def _call(self, fn: Callable[[float], Any], timeout_s: float | None) -> Any:
        deadline = time.monotonic() + (timeout_s or self._o.timeout_s)
        attempt = 0
        while True:
            try:
                return await fn(max(0.0, deadline - time.monotonic()))
            except aio.AioRpcError as error:
                attempt += 1
                pause = self._o.delay(attempt, deadline)
                if error.code() is not grpc.StatusCode.UNAVAILABLE or pause is None:
                    raise _error(error) from None
                log.info("router UNAVAILABLE, retry %d in %.2fs", attempt, pause)
                await asyncio.sleep(pause)

    async def generate(
        self,
        prompt: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-call deadline, as in grpc
        **kwargs: Any,
    ) -> GenerateResult:
        """As `Client.generate`."""
        request = _request(prompt, **_stream_defaults(kwargs))
        reply = await self._call(
            lambda left: self._stub.Generate(request, timeout=left, metadata=self._o.metadata()), timeout
        )
        return GenerateResult.from_message(reply)

    async def generate_stream(
        self,
        prompt: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-call deadline, as in grpc
        **kwargs: Any,
    ) -> AsyncIterator[StreamEvent]:
        """As `Client.generate_stream`."""
        request = _request(prompt, **_stream_defaults(kwargs))
        deadline = time.monotonic() + (timeout or self._o.timeout_s)
        attempt = 0
        while True:
            received = False
            try:
                call = self._stub.GenerateStream(
                    request, timeout=max(0.0, deadline - time.monotonic()), metadata=self._o.metadata()
                )
                async for message in call:
                    received = True
                    yield _event(message)
                return
            except aio.AioRpcError as error:
                attempt += 1
                pause = self._o.delay(attempt, deadline)
                if received or error.code() is not grpc.StatusCode.UNAVAILABLE or pause is None:
                    raise _error(error) from None
                log.info("router UNAVAILABLE, retry %d in %.2fs", attempt, pause)
                await asyncio.sleep(pause)

    async def stats(self, timeout: float | None = None) -> dict[str, Any]:  # noqa: ASYNC109
        reply = await self._call(
            lambda left: self._stub.Stats(router_pb2.RouterStatsRequest(), timeout=left, metadata=self._o.metadata()),
            timeout or 30.0,
        )
        return _stats_dict(reply)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _stats_dict(reply: router_pb2.RouterStats) -> dict[str, Any]:
    """RouterStats as plain Python values (JSON mapping turns 64-bit integers into strings)."""
    report = json_format.MessageToDict(
        reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    for key in ("requests", "degraded", "retries"):
        report[key] = int(report[key])
    report["outcomes"] = {k: int(v) for k, v in report["outcomes"].items()}
    report["k_distribution"] = {int(k): v for k, v in report["k_distribution"].items()}
    return report


_GENERATE_DEFAULTS: dict[str, Any] = {
    "negative_prompt": "",
    "width": 0,
    "height": 0,
    "steps": 0,
    "guidance_scale": None,
    "seed": None,
    "output_format": "png",
    "tenant": "",
    "cache_policy": "read_write",
}


def _stream_defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = set(kwargs) - set(_GENERATE_DEFAULTS)
    if unknown:
        raise TypeError(f"unexpected argument(s): {', '.join(sorted(unknown))}")
    return {**_GENERATE_DEFAULTS, **kwargs}
