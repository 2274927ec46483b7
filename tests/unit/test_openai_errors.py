"""Domain errors to OpenAI's error shape and HTTP status, in one table."""

from __future__ import annotations

import pytest

from modm.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ModmError,
    NotFound,
    OutOfMemory,
    ResourceExhausted,
    Unavailable,
)
from modm.services.router.openai_api.errors import from_domain, from_status, from_validation, unauthenticated


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (InvalidArgument("params.prompt", "must not be empty"), 400, "invalid_request_error"),
        (NotFound("no entry"), 404, "invalid_request_error"),
        (ResourceExhausted("queue full", 2.2), 429, "rate_limit_error"),
        (Unavailable("no worker is reachable"), 503, "server_error"),
        (DeadlineExceeded("too late"), 504, "server_error"),
        (FailedPrecondition("worker refused"), 400, "invalid_request_error"),
        (OutOfMemory("out of memory generating 2048x2048 at batch 1 on cuda:0"), 422, "invalid_request_error"),
        (ModmError("something new"), 500, "server_error"),
    ],
)
def test_status_and_type(error: ModmError, status: int, kind: str) -> None:
    mapped = from_domain(error)
    assert (mapped.status, mapped.type) == (status, kind)
    body = mapped.body()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]


@pytest.mark.parametrize(
    ("field", "param"),
    [
        ("params.prompt", "prompt"),
        ("params.width", "size"),
        ("params.height", "size"),
        ("params.steps", "num_inference_steps"),
        ("params.guidance_scale", "guidance_scale"),
        ("params.seed", "seed"),
        ("tenant", "user"),
        ("cache_policy", "cache"),
        ("image", "image"),
        ("strength", "strength"),
        ("n", "n"),
    ],
)
def test_invalid_argument_names_the_http_parameter(field: str, param: str) -> None:
    mapped = from_domain(InvalidArgument(field, "is wrong"))
    assert mapped.status == 400 and mapped.param == param and mapped.message == f"{param}: is wrong"


def test_out_of_memory_is_a_client_error_naming_the_size_never_a_rate_limit() -> None:
    mapped = from_domain(OutOfMemory("out of memory generating 2048x2048 at batch 1 on cuda:0"))
    assert (mapped.status, mapped.code, mapped.param) == (422, "out_of_memory", "size")
    assert "2048x2048" in mapped.message and "Retry-After" not in mapped.headers


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert from_domain(ResourceExhausted("busy", 2.2)).headers == {"Retry-After": "3"}
    assert from_domain(ResourceExhausted("busy", 0.1)).headers == {"Retry-After": "1"}
    assert "Retry-After" in from_domain(Unavailable("down")).headers


def test_unauthenticated_asks_for_a_bearer_token() -> None:
    mapped = unauthenticated("missing bearer token")
    assert mapped.status == 401 and mapped.code == "invalid_api_key"
    assert mapped.headers == {"WWW-Authenticate": "Bearer"}


def test_framework_errors() -> None:
    assert from_status(404, "Not Found").code == "not_found"
    assert from_status(413, "too big").status == 413
    assert from_status(405, "Method Not Allowed").type == "invalid_request_error"


def test_validation_errors_name_the_first_bad_field() -> None:
    mapped = from_validation([{"loc": ("body", "n"), "msg": "Input should be greater than or equal to 1"}])
    assert mapped.status == 400 and mapped.param == "n" and "greater" in mapped.message
    nested = from_validation([{"loc": ("body", "prompt"), "msg": "Field required"}, {"loc": ("body", "n")}])
    assert nested.param == "prompt"
    malformed = from_validation([{"loc": ("body", 17), "msg": "JSON decode error"}])
    assert malformed.param is None and malformed.status == 400
