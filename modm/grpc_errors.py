"""The one place where domain errors become gRPC status codes.

A server interceptor wraps every handler, so servicers raise `ModmError`s like any other Python
code and never touch status codes themselves. Anything unexpected becomes INTERNAL with a
logged traceback, never a dead process.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import StrEnum
from typing import Any

import grpc
from grpc import aio

from modm.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ModmError,
    NotFound,
    OutOfMemory,
    PermissionDenied,
    PipelineError,
    QueueFull,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger(__name__)

_STATUS: dict[type[ModmError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
}

RETRY_AFTER_KEY = "retry-after-s"
# Trailer saying why a call failed, so the router can tell a worker's fault from a request's.
MODM_REASON_KEY = "modm-reason"


class FailureReason(StrEnum):
    """Values of the `modm-reason` trailer."""

    QUEUE_FULL = "QUEUE_FULL"  # with RESOURCE_EXHAUSTED: retry later or elsewhere
    OUT_OF_MEMORY = "OUT_OF_MEMORY"  # with FAILED_PRECONDITION: this size/batch does not fit
    PIPELINE_ERROR = "PIPELINE_ERROR"  # with FAILED_PRECONDITION: the model failed on this input


_REASON: dict[type[ModmError], FailureReason] = {
    OutOfMemory: FailureReason.OUT_OF_MEMORY,
    PipelineError: FailureReason.PIPELINE_ERROR,
    QueueFull: FailureReason.QUEUE_FULL,
}


def reason_for(error: ModmError) -> FailureReason | None:
    """The `modm-reason` trailer value for `error`, if its class has one."""
    for cls in type(error).__mro__:
        if cls in _REASON:
            return _REASON[cls]
    return None


def status_for(error: ModmError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return grpc.StatusCode.INTERNAL


async def abort_with(context: aio.ServicerContext, error: Exception, method: str) -> None:
    """End the call with `error`'s status and trailers: RESOURCE_EXHAUSTED carries retry-after,
    and errors with a `FailureReason` carry `modm-reason`."""
    if isinstance(error, ModmError):
        trailers: list[tuple[str, str]] = []
        if isinstance(error, ResourceExhausted):
            trailers.append((RETRY_AFTER_KEY, f"{error.retry_after_s:.3f}"))
        reason = reason_for(error)
        if reason is not None:
            trailers.append((MODM_REASON_KEY, reason.value))
        if trailers:
            context.set_trailing_metadata(tuple(trailers))
        await context.abort(status_for(error), str(error))
    log.exception("unhandled error in %s", method, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}")


def _wrap_unary(behavior: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except aio.AbortError:
            raise
        except Exception as error:
            await abort_with(context, error, method)

    return handler


def _wrap_stream(behavior: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in behavior(request, context):
                yield item
        except aio.AbortError:
            raise
        except Exception as error:
            await abort_with(context, error, method)

    return handler


class ErrorMappingInterceptor(aio.ServerInterceptor):
    """Maps `ModmError`s raised by unary-unary and unary-stream handlers to status codes."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
