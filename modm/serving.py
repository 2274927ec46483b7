"""The production harness every modm gRPC service runs inside.

It owns what services must not each reinvent: the aio server with the error-mapping
interceptor and message limits, standard health checking (NOT_SERVING until the service says it
is ready, and again while draining), server reflection, the Prometheus exporter, and graceful
shutdown on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from modm.grpc_errors import ErrorMappingInterceptor
from modm.grpc_handlers import checked
from modm.settings import ServiceSettings
from modm.tls import server_credentials

log = logging.getLogger(__name__)

OVERALL = ""  # the health service's name for the server as a whole


class _Malformed:
    """What the request deserializer hands on in place of bytes that do not parse."""

    def __init__(self, error: DecodeError) -> None:
        self.reason = str(error)


class MalformedRequestInterceptor(aio.ServerInterceptor):
    """Bytes that do not parse as the request message (truncated, a string that is not UTF-8)
    are the caller's fault: INVALID_ARGUMENT, where gRPC would answer UNKNOWN for a failing
    deserializer. Runs inside authentication, so an anonymous caller learns nothing more."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        parse = handler.request_deserializer

        def deserialize(data: bytes) -> Any:
            try:
                return parse(data)
            except DecodeError as error:
                return _Malformed(error)

        async def check(request: Any, context: aio.ServicerContext) -> None:
            if isinstance(request, _Malformed):
                reason = f"request: not a valid message ({request.reason})"
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)

        return checked(handler, check, request_deserializer=deserialize) or handler


class ServiceHost:
    """One gRPC server plus its health, reflection, metrics and shutdown behaviour."""

    def __init__(
        self,
        settings: ServiceSettings,
        service_names: Sequence[str],
        *,
        handle_signals: bool = True,
        interceptors: Sequence[aio.ServerInterceptor] = (),
    ) -> None:
        """`interceptors` run before the error mapping (e.g. authentication). The settings' tls_*
        files switch the port to TLS, mutual when a client CA is given."""
        limit = settings.max_message_mb * 1024 * 1024
        self.settings = settings
        self._credentials: grpc.ServerCredentials | None = None
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            self._credentials = server_credentials(
                settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
            )
        self.server = aio.server(
            interceptors=[*interceptors, MalformedRequestInterceptor(), ErrorMappingInterceptor()],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ],
        )
        self._names = [OVERALL, *service_names]
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self.server)
        reflection.enable_server_reflection(
            [
                *service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        self._stop = asyncio.Event()
        self._handle_signals = handle_signals
        self.port = 0

    async def start(self) -> int:
        """Bind and start answering (health says NOT_SERVING until `set_serving(True)`)."""
        await self.set_serving(False)
        address = f"{self.settings.host}:{self.settings.port}"
        if self._credentials is not None:
            self.port = self.server.add_secure_port(address, self._credentials)
        else:
            self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"could not bind {self.settings.host}:{self.settings.port}")
        await self.server.start()
        if self._handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):  # from here on, even while still loading
                loop.add_signal_handler(sig, self._stop.set)
        if self.settings.metrics_port is not None:
            start_http_server(self.settings.metrics_port, addr=self.settings.host)
        log.info(
            "listening",
            extra={"host": self.settings.host, "port": self.port, "metrics_port": self.settings.metrics_port},
        )
        return self.port

    async def __aenter__(self) -> ServiceHost:
        try:
            await self.start()
        except BaseException:
            await self.server.stop(0)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop the server at once if the service failed before `run_until_stopped` drained it:
        one left for the interpreter's exit would print teardown noise after the real error."""
        await self.server.stop(0)

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self._names:
            await self._health.set(name, status)

    def request_stop(self) -> None:
        self._stop.set()

    async def run_until_stopped(self) -> None:
        """Serve until SIGTERM/SIGINT (or `request_stop`), then drain gracefully.

        Draining: health turns NOT_SERVING so balancers stop routing here, new RPCs are
        refused once the drain delay has passed, and in-flight RPCs get `grace_seconds`.
        """
        await self._stop.wait()
        log.info("draining", extra={"grace_seconds": self.settings.grace_seconds})
        await self.set_serving(False)
        if self.settings.drain_delay_seconds:
            await asyncio.sleep(self.settings.drain_delay_seconds)
        await self.server.stop(self.settings.grace_seconds)
        log.info("stopped")
