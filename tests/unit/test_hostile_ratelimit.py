"""Per-tenant rate limits: the token-bucket arithmetic, bounded memory, and the interceptor on a
real in-process gRPC server (after authentication, before any servicer work)."""

from __future__ import annotations

from pathlib import Path

import grpc
from hypothesis import given
from hypothesis import strategies as st

from modm.services.router.ratelimit import TenantRateLimiter, TenantRateLimitInterceptor
from modm.v1 import router_pb2
from tests.hostile import fuzz_settings
from tests.unit.test_hostile_serving import Harness


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_sustained_rate() -> None:
    clock = Clock()
    limiter = TenantRateLimiter(2.0, 3, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [None, None, None]
    assert limiter.acquire("a") == 0.5
    assert limiter.acquire("b") is None  # another tenant has its own bucket
    clock.now += 0.5
    assert limiter.acquire("a") is None and limiter.acquire("a") == 0.5


@given(steps=st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 2)), max_size=200))
@fuzz_settings(500)
def test_no_tenant_ever_exceeds_burst_plus_rate_times_time(steps: list[tuple[str, float]]) -> None:
    clock = Clock()
    limiter = TenantRateLimiter(5.0, 4, clock=clock)
    start = clock.now
    admitted = {t: 0 for t in "abc"}
    for tenant, pause in steps:
        clock.now += pause
        wait = limiter.acquire(tenant)
        if wait is None:
            admitted[tenant] += 1
        else:
            assert 0 < wait <= 1 / 5.0 + 1e-9
        assert admitted[tenant] <= 4 + 5.0 * (clock.now - start) + 1e-6


def test_memory_stays_bounded_whatever_tenants_callers_invent() -> None:
    clock = Clock()
    limiter = TenantRateLimiter(1.0, 2, clock=clock, max_tenants=100)
    for i in range(10_000):
        limiter.acquire(f"t{i}")
        limiter.acquire(f"t{i}")
        assert len(limiter) <= 100
        clock.now += 0.001


def test_the_interceptor_refuses_a_flooding_tenant_before_any_work(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("t0k3n *\n")  # an operator token: any tenant
    limiter = TenantRateLimiter(0.001, 2)  # two calls, then nothing for ~1000 s
    harness = Harness(tokens, [TenantRateLimitInterceptor(limiter, "default")])
    try:
        flood = router_pb2.GenerateRequest(tenant="flood").SerializeToString()
        anonymous = [harness.call("Generate", flood)[0] for _ in range(5)]
        assert anonymous == [grpc.StatusCode.UNAUTHENTICATED] * 5  # spend no tokens
        codes = [harness.call(m, flood, "t0k3n") for m in ("Generate", "GenerateStream", "Generate", "GenerateStream")]
        assert [c for c, _ in codes[:2]] == [grpc.StatusCode.OK] * 2
        for code, details in codes[2:]:
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "tenant flood" in details and "retry in" in details
        assert harness.servicer.calls == 2
        empty = router_pb2.GenerateRequest().SerializeToString()  # the default tenant has its own bucket
        assert harness.call("Generate", empty, "t0k3n")[0] is grpc.StatusCode.OK
        bad = router_pb2.GenerateRequest(tenant="no spaces").SerializeToString()  # no bucket: validation's job
        assert harness.call("Generate", bad, "t0k3n")[0] is grpc.StatusCode.OK and len(limiter) == 2
        assert harness.call("Generate", b"\xff", "t0k3n")[0] is grpc.StatusCode.INVALID_ARGUMENT
        refused = harness.channel.unary_unary("/modm.v1.Router/Generate").with_call
        try:
            refused(flood, timeout=10, metadata=(("authorization", "Bearer t0k3n"),))
        except grpc.RpcError as error:
            trailers = dict(error.trailing_metadata())  # type: ignore[attr-defined]
            assert float(trailers["retry-after-s"]) > 100
        else:
            raise AssertionError("the flood went through")
    finally:
        harness.close()
