"""Tenants are who the credential says: the tokens file's bindings, client certificates' tenant
URIs, the resolution of a request's tenant, and both public ports refusing a tenant the
credential does not allow before any rate-limit charge or engine work. The live stack with real
certificates is tests/integration/test_tenant_credentials.py."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from starlette.testclient import TestClient

from modm.errors import InvalidArgument, PermissionDenied, ResourceExhausted, Unauthenticated
from modm.services.cache.validation import check_tenant as cache_check_tenant
from modm.services.router.auth import (
    ANYONE,
    Authenticator,
    Principal,
    TokenFile,
    certificate_principal,
    operator_token,
    parse_tokens,
)
from modm.services.router.openai_api.app import Readiness, create_app
from modm.services.router.ratelimit import TenantRateLimiter, TenantRateLimitInterceptor
from modm.services.router.settings import RouterSettings
from modm.services.router.validation import validate
from modm.tenants import is_tenant
from modm.v1 import router_pb2
from tests.unit.test_hostile_serving import Harness
from tests.unit.test_openai_app import FakeEngine
from tests.unit.test_router_validation import LIMITS, raw

TOKENS = "# two tenants and an operator\ntok-a tenant-a\n\ntok-b tenant-b,shared\ntok-op *\n"


def principal(*tenants: str) -> Principal:
    return Principal(frozenset(tenants))


def tokens_file(tmp_path: Path, text: str = TOKENS) -> Path:
    path = tmp_path / "tokens"
    path.write_text(text)
    return path


# --- the tokens file ---------------------------------------------------------------------------


def test_each_token_acts_for_the_tenants_its_line_names(tmp_path: Path) -> None:
    tokens = TokenFile(tokens_file(tmp_path, TOKENS + "bare-token\n"), "house")
    assert tokens.principal("tok-a") == principal("tenant-a")
    assert tokens.principal("tok-b") == principal("tenant-b", "shared")
    assert tokens.principal("tok-op") == ANYONE
    assert tokens.principal("bare-token") == principal("house")  # today's format: the default tenant only
    assert tokens.principal("tok-a ") is None and tokens.principal("tenant-a") is None
    assert parse_tokens(TOKENS) == {"tok-a", "tok-b", "tok-op"}
    assert operator_token(TOKENS) == "tok-op"  # what the monitor presents
    assert operator_token("tok-a tenant-a\nbare\n") is None


def test_bare_tokens_are_reported_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tokens_file(tmp_path, "first\n")
    with caplog.at_level(logging.WARNING, logger="modm.services.router.auth"):
        tokens = TokenFile(path)
        path.write_text("first\nsecond-and-longer\n")
        assert tokens.accepts("second-and-longer")
    assert [r.message for r in caplog.records].count(
        "bare tokens act for the default tenant only; bind them with '<token> <tenant>'"
    ) == 1


@pytest.mark.parametrize(
    "line",
    [
        "s3cret-x tenant-a extra",
        "s3cret-x tenant-a,,tenant-b",
        "s3cret-x tenant-a,",
        "s3cret-x *,tenant-a",
        "s3cret-x tenant/a",
        "s3cret-x -tenant",
        "tok-a tenant-b",  # a token twice
    ],
)
def test_a_malformed_line_stops_start_up_naming_its_line(tmp_path: Path, line: str) -> None:
    with pytest.raises(ValueError, match=r"tokens, line 6: ") as refused:
        TokenFile(tokens_file(tmp_path, f"{TOKENS}{line}\n"))
    assert "s3cret" not in str(refused.value)  # a token is never quoted


def test_a_bad_rewrite_keeps_the_last_good_tokens(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tokens_file(tmp_path)
    tokens = TokenFile(path)
    with caplog.at_level(logging.ERROR, logger="modm.services.router.auth"):
        path.write_text("tok-new tenant-a\ntok-worse tenant a\n")
        assert tokens.principal("tok-a") == principal("tenant-a") and tokens.principal("tok-new") is None
        assert tokens.principal("tok-b") == principal("tenant-b", "shared")
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "line 2" in record.error  # type: ignore[attr-defined]
    path.write_text("tok-new tenant-a\n")
    assert tokens.principal("tok-new") == principal("tenant-a") and tokens.principal("tok-a") is None


# --- which tenant a request acts for -----------------------------------------------------------


def test_a_request_acts_for_a_tenant_its_credential_allows() -> None:
    single, several = principal("tenant-a"), principal("tenant-b", "shared")
    assert single.tenant_for("tenant-a", "default") == "tenant-a"
    assert single.tenant_for("", "default") == "tenant-a"  # names none: the credential's only tenant
    assert several.tenant_for("shared", "default") == "shared"
    assert ANYONE.tenant_for("anyone-at-all", "default") == "anyone-at-all"
    assert ANYONE.tenant_for("", "default") == "default"
    with pytest.raises(PermissionDenied, match="tenant tenant-b"):
        single.tenant_for("tenant-b", "default")
    with pytest.raises(PermissionDenied, match="tenant default"):  # several: the default, not allowed here
        several.tenant_for("", "default")
    assert principal("tenant-b", "default").tenant_for("", "default") == "default"
    with pytest.raises(InvalidArgument) as malformed:  # a malformed name is a field error, never echoed
        single.tenant_for("not a tenant\n", "default")
    assert malformed.value.field == "tenant" and "not a tenant" not in str(malformed.value)


def test_certificates_name_tenants_in_san_uris_only() -> None:
    assert certificate_principal([]) is None
    assert certificate_principal(["spiffe://cluster/ns/web", "https://example.com"]) is None
    assert certificate_principal(["modm://tenant/tenant-a", "modm://tenant/shared"]) == principal("tenant-a", "shared")
    assert certificate_principal(["modm://tenant/*"]) == ANYONE
    with pytest.raises(PermissionDenied, match="names no valid tenant"):
        certificate_principal(["modm://tenant/a b"])


def test_tokens_and_certificates_together_allow_what_both_allow(tmp_path: Path) -> None:
    both = Authenticator(TokenFile(tokens_file(tmp_path)), "default", client_certificates=True)
    assert both.principal("tok-a") == principal("tenant-a")  # a certificate that names none
    assert both.principal("tok-b", ["modm://tenant/shared"]) == principal("shared")
    assert both.principal("tok-a", ["modm://tenant/tenant-b"]) == principal()  # nothing in common
    assert both.principal("tok-op", ["modm://tenant/tenant-b"]) == principal("tenant-b")
    assert both.principal("tok-b", ["modm://tenant/*"]) == principal("tenant-b", "shared")
    with pytest.raises(Unauthenticated, match="missing"):
        both.principal(None, ["modm://tenant/*"])  # a certificate does not stand in for a token
    with pytest.raises(Unauthenticated, match="unknown"):
        both.principal("tok-x")
    certificates = Authenticator(None, "house", client_certificates=True)
    assert certificates.principal(None, ["modm://tenant/tenant-a"]) == principal("tenant-a")
    assert certificates.principal("ignored-token", []) == principal("house")  # names none: the default only
    assert Authenticator(None, "house").principal(None, ["modm://tenant/tenant-a"]) == ANYONE  # auth off


# --- the gRPC port -----------------------------------------------------------------------------


def generate(harness: Harness, tenant: str, token: str) -> tuple[grpc.StatusCode, str]:
    """The tenant the servicer saw (the Echo servicer answers with it), or the refusal."""
    request = router_pb2.GenerateRequest(tenant=tenant).SerializeToString()
    call = harness.channel.unary_unary(
        "/modm.v1.Router/Generate", response_deserializer=router_pb2.GenerateResponse.FromString
    )
    try:
        reply = call(request, timeout=10, metadata=(("authorization", f"Bearer {token}"),))
    except grpc.RpcError as error:
        return error.code(), error.details() or ""  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, reply.tenant


def test_grpc_refuses_another_tenant_before_the_rate_limit_and_the_servicer(tmp_path: Path) -> None:
    limiter = TenantRateLimiter(0.001, 5)
    harness = Harness(tokens_file(tmp_path), [TenantRateLimitInterceptor(limiter, "default")])
    try:
        for token, other in (("tok-a", "tenant-b"), ("tok-b", "tenant-a"), ("tok-a", "default")):
            for method in ("Generate", "GenerateStream"):
                code, details = harness.call(
                    method, router_pb2.GenerateRequest(tenant=other).SerializeToString(), token
                )
                assert code is grpc.StatusCode.PERMISSION_DENIED and f"tenant {other}" in details
        assert harness.servicer.calls == 0 and len(limiter) == 0  # nothing ran, no bucket was charged
        assert generate(harness, "", "tok-a") == (grpc.StatusCode.OK, "tenant-a")  # names none: its tenant
        assert generate(harness, "shared", "tok-b") == (grpc.StatusCode.OK, "shared")
        assert generate(harness, "tenant-b", "tok-op") == (grpc.StatusCode.OK, "tenant-b")
        assert generate(harness, "tenant-a", "tok-op") == (grpc.StatusCode.OK, "tenant-a")
        assert generate(harness, "", "tok-op") == (grpc.StatusCode.OK, "default")
        assert harness.call("Stats", b"", "tok-a")[0] is not grpc.StatusCode.PERMISSION_DENIED
    finally:
        harness.close()


def test_only_an_operator_may_set_the_fleet_wide_degrade_override(tmp_path: Path) -> None:
    harness = Harness(tokens_file(tmp_path))
    try:
        request = router_pb2.SetDegradeRequest(degrade_misses=True, reason="x", ttl_seconds=5).SerializeToString()
        for token in ("tok-a", "tok-b"):
            code, details = harness.call("SetDegrade", request, token)
            assert code is grpc.StatusCode.PERMISSION_DENIED and "operator" in details
        code, details = harness.call("SetDegrade", request, "tok-op")  # through to Echo, which lacks it
        assert code is grpc.StatusCode.INTERNAL and "NotImplementedError" in details
    finally:
        harness.close()


def test_grpc_stream_handlers_read_the_resolved_tenant(tmp_path: Path) -> None:
    harness = Harness(tokens_file(tmp_path))
    try:
        stream = harness.channel.unary_stream(
            "/modm.v1.Router/GenerateStream", response_deserializer=router_pb2.GenerateEvent.FromString
        )
        events = list(stream(b"", timeout=10, metadata=(("authorization", "Bearer tok-a"),)))
        assert [e.result.tenant for e in events] == ["tenant-a"]
    finally:
        harness.close()


# --- the HTTP port -----------------------------------------------------------------------------


def test_http_refuses_another_tenant_with_403_before_any_work(tmp_path: Path) -> None:
    engine = FakeEngine()
    limiter = TenantRateLimiter(0.001, 5)
    settings = RouterSettings(large_workers=["a:1"])
    ready = Readiness()
    app = create_app(engine, settings, TokenFile(tokens_file(tmp_path)), ready, limiter=limiter)  # type: ignore[arg-type]
    with TestClient(app) as client:

        def post(token: str, **body: object) -> tuple[int, dict[str, object]]:
            reply = client.post(
                "/v1/images/generations", json={"prompt": "x", **body}, headers={"Authorization": f"Bearer {token}"}
            )
            return reply.status_code, reply.json()

        for token, other in (("tok-a", "tenant-b"), ("tok-b", "tenant-a")):
            status, body = post(token, user=other)
            assert status == 403, body
            assert body == {
                "error": {
                    "message": f"tenant {other}: this credential may not act for it",
                    "type": "invalid_request_error",
                    "param": "user",
                    "code": "permission_denied",
                }
            }
            form = {"prompt": "x", "user": other}
            edit = client.post(
                "/v1/images/edits",
                data=form,
                files={"image": ("a.png", b"png", "image/png")},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert edit.status_code == 403
        assert not engine.calls and len(limiter) == 0
        assert post("tok-a")[1]["data"][0]["modm"]["tenant"] == "tenant-a"  # type: ignore[index]
        assert post("tok-op", user="tenant-b")[0] == post("tok-op", user="tenant-a")[0] == 200
        assert [raw.tenant for raw, _ in engine.calls] == ["tenant-a", "tenant-b", "tenant-a"]
        assert post("tok-a", user="not a tenant")[1]["error"]["param"] == "user"  # type: ignore[index]


# --- rate limits under a flood of names ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_invented_tenants_neither_grows_memory_nor_frees_a_limited_tenant() -> None:
    clock = Clock()
    limiter = TenantRateLimiter(0.001, 2, clock=clock, max_tenants=100)  # a token per 1000 s
    assert limiter.acquire("gold") is None and limiter.acquire("gold") is None
    assert limiter.acquire("gold") is not None
    admitted = 0
    for i in range(10_000):  # an operator token naming a new tenant every millisecond
        admitted += limiter.acquire(f"invented-{i}") is None
        clock.now += 0.001
        assert len(limiter) <= 100
    assert limiter.acquire("gold") is not None  # still limited: its bucket was never reset
    assert admitted <= 99 + 2  # one call per free slot, then the shared overflow bucket's burst
    with pytest.raises(ResourceExhausted, match="the request rate newcomers share"):
        limiter.admit("yet-another")


def test_full_buckets_make_room_for_new_tenants() -> None:
    clock = Clock()
    limiter = TenantRateLimiter(1.0, 1, clock=clock, max_tenants=2)
    assert limiter.acquire("a") is None and limiter.acquire("b") is None
    assert limiter.acquire("c") is None and limiter.acquire("d") is not None  # c took the overflow's token
    clock.now += 1.0  # a and b are full again: no different from fresh buckets
    assert limiter.acquire("c") is None and limiter.acquire("d") is None
    assert len(limiter) == 2 and limiter.acquire("c") is not None and limiter.acquire("d") is not None


# --- one tenant pattern ------------------------------------------------------------------------


@pytest.mark.parametrize("tenant", ["a\n", "tenant-a\n", "\ntenant"])
def test_a_trailing_newline_is_not_a_tenant_anywhere(tenant: str) -> None:
    assert not is_tenant(tenant)
    with pytest.raises(InvalidArgument):
        cache_check_tenant(tenant)
    with pytest.raises(InvalidArgument) as refused:
        validate(raw(tenant), LIMITS, "default")
    assert refused.value.field == "tenant"


def test_the_tenant_pattern_is_written_once() -> None:
    root = Path(__file__).resolve().parents[2]
    copies = [
        str(path.relative_to(root))
        for folder in ("modm", "services")
        for path in (root / folder).rglob("*.py")
        if "[A-Za-z0-9][A-Za-z0-9_.-]" in path.read_text()
    ]
    assert copies == ["modm/tenants.py"]
