"""Typed domain errors. Services raise these; `modm.grpc_errors` turns them into status codes."""

from __future__ import annotations


class ModmError(Exception):
    """Base of every error a modm service reports to its caller."""


class InvalidArgument(ModmError):
    """A request field is wrong; the message always names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(ModmError):
    """The named thing does not exist (or is not visible to the caller)."""


class Unauthenticated(ModmError):
    """The caller presented no credential, or one the service does not know."""


class PermissionDenied(ModmError):
    """The caller is who it says, but its credential does not allow this (another tenant)."""


class ResourceExhausted(ModmError):
    """The service is at capacity; the caller may retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFull(ResourceExhausted):
    """The service's queue is full: another replica, or this one later, can take the request."""


class Unavailable(ModmError):
    """The service cannot serve right now (loading, draining, dependency down)."""


class DeadlineExceeded(ModmError):
    """The request's deadline passed before it could be served."""


class FailedPrecondition(ModmError):
    """The request is valid but the service is not in a state to perform it."""


class OutOfMemory(FailedPrecondition):
    """This request's size and batch do not fit the accelerator's memory; the message names
    them. Retrying the same request will not help; a smaller size or batch may."""


class PipelineError(FailedPrecondition):
    """The model failed on this input (not for lack of memory); the service itself is fine."""
