"""Per-tenant request rate limits on the router's Generate calls (token buckets).

A tenant may send `burst` requests at once and `rate_per_s` sustained; beyond that its calls
are refused with RESOURCE_EXHAUSTED and a `retry-after-s` trailer before any cache lookup or
worker work, so one tenant cannot take the fleet from the others. Tenants that are not
well-formed get no bucket (validation refuses them next), and idle tenants' full buckets are
dropped, so memory stays bounded whatever names callers invent.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from modm.errors import ResourceExhausted
from modm.grpc_errors import abort_with

log = logging.getLogger(__name__)

TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LIMITED_METHODS = ("/modm.v1.Router/Generate", "/modm.v1.Router/GenerateStream")


@dataclass
class _Bucket:
    tokens: float
    at: float


class TenantRateLimiter:
    """One token bucket per tenant, refilled continuously; at most `max_tenants` kept."""

    def __init__(
        self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic, max_tenants: int = 100_000
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be positive and burst at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_tenants = max_tenants
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, tenant: str) -> float | None:
        """Take one token: None when admitted, else the seconds until the next token."""
        now = self._clock()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            if len(self._buckets) >= self.max_tenants:
                self._drop_full(now)
            bucket = self._buckets[tenant] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate_per_s)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self.rate_per_s

    def admit(self, tenant: str) -> None:
        """Take `tenant`'s token or raise ResourceExhausted with the wait. A malformed tenant name
        is left to request validation, which refuses it with the field named."""
        if not TENANT.match(tenant):
            return
        wait = self.acquire(tenant)
        if wait is not None:
            log.info("tenant rate limited", extra={"tenant": tenant, "retry_after_s": round(wait, 3)})
            raise ResourceExhausted(f"tenant {tenant} is over its request rate; retry in {wait:.2f} s", wait)

    def __len__(self) -> int:
        return len(self._buckets)

    def _drop_full(self, now: float) -> None:
        """Forget tenants whose bucket has refilled (a fresh bucket is the same); if every tenant
        is still limited, forget the longest idle half rather than grow."""
        refill = self.burst / self.rate_per_s
        self._buckets = {t: b for t, b in self._buckets.items() if now - b.at < refill}
        if len(self._buckets) >= self.max_tenants:
            keep = sorted(self._buckets.items(), key=lambda item: item[1].at)[len(self._buckets) // 2 :]
            self._buckets = dict(keep)


class TenantRateLimitInterceptor(aio.ServerInterceptor):
    """Applies a TenantRateLimiter to Generate and GenerateStream, after authentication."""

    def __init__(self, limiter: TenantRateLimiter, default_tenant: str) -> None:
        self._limiter = limiter
        self._default = default_tenant

    def _refusal(self, request: Any) -> ResourceExhausted | None:
        tenant = getattr(request, "tenant", None)
        if not isinstance(tenant, str):  # a malformed request: the next interceptor refuses it
            return None
        try:
            self._limiter.admit(tenant or self._default)
        except ResourceExhausted as refused:
            return refused
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method not in LIMITED_METHODS:
            return handler
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def limited_unary(request: Any, context: aio.ServicerContext) -> Any:
                if (refused := self._refusal(request)) is not None:
                    await abort_with(context, refused, "rate limit")
                return await unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                limited_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            stream = handler.unary_stream

            async def limited_stream(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
                if (refused := self._refusal(request)) is not None:
                    await abort_with(context, refused, "rate limit")
                async for item in stream(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                limited_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
