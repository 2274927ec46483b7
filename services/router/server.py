"""Start-up and shutdown of a router process: bind, discover workers, report SERVING once one
answers, serve until SIGTERM, then drain (in-flight requests and pending cache inserts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from modm.logs import configure_logging
from modm.services.router.auth import BearerAuthInterceptor, TokenFile
from modm.services.router.backends import CacheBackend, GrpcCache
from modm.services.router.discovery import Discovery
from modm.services.router.dispatch import Dispatcher
from modm.services.router.engine import RouterEngine
from modm.services.router.policy import Pool
from modm.services.router.servicer import RouterServicer
from modm.services.router.settings import RouterSettings
from modm.serving import ServiceHost
from modm.v1 import router_pb2, router_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name
GAUGE_INTERVAL_S = 5.0


def build_host(settings: RouterSettings) -> ServiceHost:
    interceptors = []
    if settings.tokens_file is not None:
        interceptors.append(BearerAuthInterceptor(TokenFile(settings.tokens_file)))
    credentials = None
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        credentials = grpc.ssl_server_credentials(
            [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())]
        )
    return ServiceHost(settings, [SERVICE_NAME], interceptors=interceptors, credentials=credentials)


async def serve(settings: RouterSettings, host: ServiceHost | None = None) -> None:
    host = host or build_host(settings)
    dispatcher = Dispatcher(settings.rules())
    discovery = Discovery(
        {Pool.LARGE: settings.large_workers, Pool.SMALL: settings.small_workers},
        dispatcher,
        interval_s=settings.discovery_interval_s,
        capacity_cap=settings.worker_capacity,
    )
    cache: CacheBackend | None = GrpcCache(settings.cache) if settings.cache else None
    engine = RouterEngine(settings, dispatcher, discovery, cache)
    router_pb2_grpc.add_RouterServicer_to_server(RouterServicer(engine), host.server)
    await host.start()
    discovery.start()

    async def announce() -> None:
        await discovery.ready.wait()
        await host.set_serving(True)
        log.info("serving", extra={"port": host.port, "cache": settings.cache or "none"})
        while True:  # keep the queue/in-flight gauges fresh between Stats calls
            engine.snapshot()
            await asyncio.sleep(GAUGE_INTERVAL_S)

    announcer = asyncio.create_task(announce())
    try:
        await host.run_until_stopped()
    finally:
        announcer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await announcer
        await engine.close()
        await discovery.close()
        if cache is not None:
            await cache.close()


def main(settings: RouterSettings) -> None:
    configure_logging("router", settings.log_level, settings.log_format)
    asyncio.run(serve(settings))
