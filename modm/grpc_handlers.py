"""A check that runs before a gRPC method's handler, for the server interceptors that refuse calls
(authentication, rate limits, malformed requests): one wrapper for both kinds of method modm
serves, unary-unary and unary-stream, instead of one per interceptor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

Check = Callable[[Any, aio.ServicerContext], Awaitable[None]]


def checked(
    handler: grpc.RpcMethodHandler, check: Check, *, request_deserializer: Callable[[bytes], Any] | None = None
) -> grpc.RpcMethodHandler | None:
    """`handler` awaiting `check(request, context)` first (it aborts the call to refuse it), and
    parsing requests with `request_deserializer` when given; None for a streamed-request method."""
    deserialize = request_deserializer or handler.request_deserializer
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def checked_unary(request: Any, context: aio.ServicerContext) -> Any:
            await check(request, context)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            checked_unary, request_deserializer=deserialize, response_serializer=handler.response_serializer
        )
    if handler.unary_stream is not None:
        stream = handler.unary_stream

        async def checked_stream(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            await check(request, context)
            async for item in stream(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            checked_stream, request_deserializer=deserialize, response_serializer=handler.response_serializer
        )
    return None
