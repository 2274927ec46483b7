"""Optional bearer-token authentication on the router's public ports (gRPC and HTTP).

Tokens come from a file (one per line; blank lines and `#` comments ignored), typically a
mounted Kubernetes Secret; the file is re-read when it changes, so tokens rotate without a
restart. Health checks and reflection stay open (probes and load balancers carry no token).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

log = logging.getLogger(__name__)

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def parse_tokens(text: str) -> frozenset[str]:
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))


class TokenFile:
    """The tokens in a file, re-read whenever it changes: its modification time, size or inode
    (a Kubernetes Secret update swaps a symlink, and a rewrite can land in the same mtime tick)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._tokens: frozenset[str] = frozenset()
        self.tokens()  # fail at start-up, not at the first call, when the file is missing
        if not self._tokens:
            raise ValueError(f"{path} holds no token")

    def tokens(self) -> frozenset[str]:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._stamp:
                return self._tokens
            fresh = parse_tokens(self.path.read_text())
        except OSError:
            if self._stamp is None:
                raise
            return self._tokens  # keep the last good set while a secret is being swapped
        if fresh or self._stamp is None:
            self._tokens = fresh
        self._stamp = stamp
        return self._tokens

    def accepts(self, presented: str) -> bool:
        return any(hmac.compare_digest(presented.encode(), token.encode()) for token in self.tokens())


def parse_bearer(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (gRPC metadata or HTTP header)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            token = parse_bearer(value.decode() if isinstance(value, bytes) else value)
            if token is not None:
                return token
    return None


class BearerAuthInterceptor(aio.ServerInterceptor):
    def __init__(self, tokens: TokenFile) -> None:
        self._tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        token = bearer_token(handler_call_details.invocation_metadata)
        if token is not None and self._tokens.accepts(token):
            return handler
        message = "missing bearer token" if token is None else "unknown bearer token"
        log.info("unauthenticated call", extra={"method": method, "reason": message})
        return _refusal(handler, message)


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    if handler.unary_stream is not None:

        async def refuse_stream(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
            yield  # pragma: no cover - abort raises

        return grpc.unary_stream_rpc_method_handler(
            refuse_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def refuse(request: Any, context: aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
