"""Start-up and shutdown of a router process: bind, discover workers, report SERVING once one
answers, serve until SIGTERM, then drain (in-flight requests and pending cache inserts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from grpc import aio

from modm.logs import configure_logging
from modm.services.router.auth import BearerAuthInterceptor, TokenFile
from modm.services.router.backends import CacheBackend, GrpcCache, GrpcWorker
from modm.services.router.discovery import Discovery
from modm.services.router.dispatch import Dispatcher
from modm.services.router.engine import RouterEngine
from modm.services.router.openai_api.app import Readiness, create_app
from modm.services.router.openai_api.host import HttpHost
from modm.services.router.policy import Pool
from modm.services.router.ratelimit import TenantRateLimiter, TenantRateLimitInterceptor
from modm.services.router.servicer import RouterServicer
from modm.services.router.settings import RouterSettings
from modm.serving import ServiceHost
from modm.v1 import router_pb2, router_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name
GAUGE_INTERVAL_S = 5.0


def tenant_limiter(settings: RouterSettings) -> TenantRateLimiter | None:
    if settings.tenant_rate_per_s is None:
        return None
    return TenantRateLimiter(settings.tenant_rate_per_s, settings.tenant_burst)


def build_host(
    settings: RouterSettings, tokens: TokenFile | None = None, limiter: TenantRateLimiter | None = None
) -> ServiceHost:
    """The gRPC host; `tokens` and `limiter` (shared with the HTTP API) switch on bearer auth and
    per-tenant rate limits, `tls_client_ca_file` on tenants named by client certificates."""
    interceptors: list[aio.ServerInterceptor] = []
    certificates = settings.tls_client_ca_file is not None
    if tokens is not None or certificates:
        interceptors.append(BearerAuthInterceptor(tokens, settings.default_tenant, client_certificates=certificates))
    if limiter is not None:  # after auth: only the resolved tenant, and no anonymous call, spends tokens
        interceptors.append(TenantRateLimitInterceptor(limiter, settings.default_tenant))
    return ServiceHost(settings, [SERVICE_NAME], interceptors=interceptors)  # TLS from settings.tls_*


async def serve(settings: RouterSettings, host: ServiceHost | None = None) -> None:
    """gRPC, and with `http_port` the OpenAI HTTP API, on one engine, token file and registry.

    SIGTERM drains both at once: health and /readyz turn false, then each stops accepting and
    gives calls in flight `grace_seconds`."""
    tokens = TokenFile(settings.tokens_file, settings.default_tenant) if settings.tokens_file is not None else None
    limiter = tenant_limiter(settings)
    own_host = host is None
    host = host or build_host(settings, tokens, limiter)
    dispatcher = Dispatcher(
        settings.rules(), eject_after=settings.eject_after_failures, cooldown_s=settings.eject_cooldown_s
    )
    upstream_tls = settings.upstream_tls()
    discovery = Discovery(
        {Pool.LARGE: settings.large_workers, Pool.SMALL: settings.small_workers},
        dispatcher,
        interval_s=settings.discovery_interval_s,
        capacity_cap=settings.worker_capacity,
        any_pool=settings.workers,
        make_client=lambda address: GrpcWorker(address, upstream_tls),
    )
    cache: CacheBackend | None = GrpcCache(settings.cache, upstream_tls) if settings.cache else None
    engine = RouterEngine(settings, dispatcher, discovery, cache)
    router_pb2_grpc.add_RouterServicer_to_server(RouterServicer(engine), host.server)
    readiness = Readiness()
    app = create_app(engine, settings, tokens, readiness, limiter=limiter) if settings.http_port else None
    http = HttpHost(app, settings) if app is not None else None
    if http is not None:
        await http.start()
    async with host:
        stopping = asyncio.Event()
        if own_host and http is not None:  # SIGTERM must reach the HTTP side too, not only the gRPC host

            def stop() -> None:
                stopping.set()
                host.request_stop()

            for sig in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(sig, stop)
        discovery.start()

        async def drain_http() -> None:
            await stopping.wait()
            readiness.ready = False
            if http is not None:
                await asyncio.sleep(settings.drain_delay_seconds)
                await http.stop()

        async def announce() -> None:
            await discovery.ready.wait()
            await host.set_serving(True)
            readiness.ready = True
            log.info("serving", extra={"port": host.port, "cache": settings.cache or "none"})
            while True:  # keep the queue/in-flight gauges fresh between Stats calls
                engine.snapshot()
                await asyncio.sleep(GAUGE_INTERVAL_S)

        announcer = asyncio.create_task(announce())
        http_drainer = asyncio.create_task(drain_http())
        try:
            await host.run_until_stopped()
        finally:
            announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announcer
            stopping.set()
            await http_drainer
            await engine.close()
            await discovery.close()
            if cache is not None:
                await cache.close()


def main(settings: RouterSettings) -> None:
    configure_logging("router", settings.log_level, settings.log_format)
    asyncio.run(serve(settings))
