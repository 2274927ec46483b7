"""Per-tenant request rate limits on the router's Generate calls (token buckets).

A tenant may send `burst` requests at once and `rate_per_s` sustained; beyond that its calls
are refused with RESOURCE_EXHAUSTED and a `retry-after-s` trailer before any cache lookup or
worker work, so one tenant cannot take the fleet from the others. Calls are charged to the
tenant authentication resolved (services/router/auth.py), so a tenant-bound credential cannot
invent names. Each router process keeps its own buckets: with N replicas a tenant whose calls
spread over all of them gets up to N times the limit.

Memory is bounded whatever names an operator's calls carry: at most `max_tenants` buckets, and
only full ones (no different from a fresh bucket) are ever forgotten. When every kept bucket is
still being refilled, a new name is charged to one overflow bucket shared by all newcomers, so a
flood of invented names can neither grow memory nor reset a limited tenant's bucket.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from modm.errors import ResourceExhausted
from modm.grpc_errors import abort_with
from modm.grpc_handlers import checked
from modm.tenants import is_tenant

log = logging.getLogger(__name__)

LIMITED_METHODS = ("/modm.v1.Router/Generate", "/modm.v1.Router/GenerateStream")


@dataclass
class _Bucket:
    tokens: float
    at: float


class TenantRateLimiter:
    """One token bucket per tenant, refilled continuously; at most `max_tenants` kept, newcomers
    beyond them share one overflow bucket."""

    def __init__(
        self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic, max_tenants: int = 10_000
    ) -> None:
        if rate_per_s <= 0 or burst < 1 or max_tenants < 1:
            raise ValueError("rate_per_s must be positive, burst and max_tenants at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_tenants = max_tenants
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._overflow = _Bucket(float(burst), clock())
        # No kept bucket is full before this: sweeps for full buckets wait for it, so a flood
        # of new names costs a dictionary look-up each, not a scan.
        self._next_full = math.inf

    def acquire(self, tenant: str) -> float | None:
        """Take one token: None when admitted, else the seconds until the next token."""
        now = self._clock()
        bucket = self._bucket_of(tenant, now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate_per_s)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self.rate_per_s

    def admit(self, tenant: str) -> None:
        """Take `tenant`'s token or raise ResourceExhausted with the wait. A malformed tenant name
        is left to request validation, which refuses it with the field named."""
        if not is_tenant(tenant):
            return
        wait = self.acquire(tenant)
        if wait is None:
            return
        whose = "its request rate" if tenant in self._buckets else "the request rate newcomers share"
        log.info("tenant rate limited", extra={"tenant": tenant, "retry_after_s": round(wait, 3)})
        raise ResourceExhausted(f"tenant {tenant} is over {whose}; retry in {wait:.2f} s", wait)

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket_of(self, tenant: str, now: float) -> _Bucket:
        bucket = self._buckets.get(tenant)
        if bucket is not None:
            return bucket
        if len(self._buckets) >= self.max_tenants and now >= self._next_full:
            self._forget_full(now)
        if len(self._buckets) >= self.max_tenants:
            return self._overflow
        bucket = self._buckets[tenant] = _Bucket(float(self.burst), now)
        self._next_full = min(self._next_full, now)  # full until its first token is taken
        return bucket

    def _full_at(self, bucket: _Bucket) -> float:
        """When `bucket` is back at `burst` (taking tokens only moves this later)."""
        return bucket.at + (self.burst - bucket.tokens) / self.rate_per_s

    def _forget_full(self, now: float) -> None:
        self._buckets = {t: b for t, b in self._buckets.items() if self._full_at(b) > now}
        self._next_full = min((self._full_at(b) for b in self._buckets.values()), default=math.inf)


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

        async def limit(request: Any, context: aio.ServicerContext) -> None:
            if (refused := self._refusal(request)) is not None:
                await abort_with(context, refused, "rate limit")

        return checked(handler, limit) or handler
