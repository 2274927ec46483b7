"""The one place where domain errors become OpenAI-shaped HTTP errors:
`{"error": {"message", "type", "param", "code"}}` with the matching status (429 and 503 with
Retry-After). Field names of the engine (`params.steps`) become the HTTP parameter names
(`num_inference_steps`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from modm.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ModmError,
    NotFound,
    OutOfMemory,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

# Engine field -> HTTP parameter.
PARAMS = {
    "params.prompt": "prompt",
    "params.negative_prompt": "negative_prompt",
    "params.width": "size",
    "params.height": "size",
    "params.steps": "num_inference_steps",
    "params.guidance_scale": "guidance_scale",
    "params.seed": "seed",
    "params.output_format": "output_format",
    "params": None,
    "tenant": "user",
    "cache_policy": "cache",
}


LOCATIONS = ("body", "query", "path", "header", "cookie")


@dataclass(eq=False)
class ApiError(Exception):
    """An HTTP error in OpenAI's shape."""

    status: int
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.message}"

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def http_param(engine_field: str) -> str | None:
    return PARAMS.get(engine_field, engine_field)


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def invalid(param: str | None, problem: str) -> ApiError:
    message = f"{param}: {problem}" if param else problem
    return ApiError(400, message, "invalid_request_error", param, "invalid_value")


def from_domain(error: ModmError) -> ApiError:
    match error:
        case InvalidArgument(field=name, problem=problem):
            return invalid(http_param(name), problem)
        case NotFound():
            return ApiError(404, str(error), "invalid_request_error", None, "not_found")
        case Unauthenticated():
            return unauthenticated(str(error))
        case PermissionDenied():
            return ApiError(403, str(error), "invalid_request_error", "user", "permission_denied")
        case ResourceExhausted(retry_after_s=retry):
            return ApiError(429, str(error), "rate_limit_error", None, "rate_limit_exceeded", _retry_after(retry))
        case Unavailable():
            return ApiError(503, str(error), "server_error", None, "unavailable", _retry_after(1.0))
        case DeadlineExceeded():
            return ApiError(504, str(error), "server_error", None, "timeout")
        case OutOfMemory():  # never 429: this size does not fit, retrying the same will not help
            return ApiError(422, str(error), "invalid_request_error", "size", "out_of_memory")
        case FailedPrecondition():
            return ApiError(400, str(error), "invalid_request_error", None, "failed_precondition")
    return ApiError(500, f"internal error: {type(error).__name__}", "server_error", None, "internal_error")


def unauthenticated(reason: str) -> ApiError:
    return ApiError(401, reason, "invalid_request_error", None, "invalid_api_key", {"WWW-Authenticate": "Bearer"})


def from_status(status: int, detail: str) -> ApiError:
    """Errors raised by the framework itself (unknown route, wrong method, body too large)."""
    codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return ApiError(status, detail, kind, None, codes.get(status, "http_error"))


def from_validation(errors: Sequence[dict[str, object]]) -> ApiError:
    """The first of the framework's body/form validation errors, naming the parameter."""
    if not errors:
        return invalid(None, "invalid request")
    first = errors[0]
    where = first.get("loc", ())
    names = [part for part in where if isinstance(part, str) and part not in LOCATIONS]  # type: ignore[union-attr]
    param = ".".join(names) or None
    return invalid(param, str(first.get("msg", "is invalid")))


def internal() -> ApiError:
    return ApiError(500, "internal error", "server_error", None, "internal_error")
