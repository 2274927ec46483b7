"""The router's decisions: outcome planning, insertion, pool choice, degradation, admission,
least-outstanding-work dispatch, retries and deadlines."""

from __future__ import annotations

import math

import pytest

from modm.errors import InvalidArgument
from modm.grpc_errors import FailureReason
from modm.services.router.policy import (
    CacheDecision,
    CachePolicy,
    DegradeOverride,
    FailureKind,
    Outcome,
    Plan,
    Pool,
    PoolLoad,
    Reject,
    Route,
    RoutingRules,
    WorkerLoad,
    as_miss,
    as_shared,
    attempt_timeout,
    choose_worker,
    classify_failure,
    degrade_override,
    effective_deadline,
    hit_steps,
    may_retry,
    plan_request,
    route,
    should_insert,
    should_retry,
)


def decision(**kw: object) -> CacheDecision:
    base: dict[str, object] = {
        "hit": False,
        "exact_repeat": False,
        "skipped_steps": 0,
        "total_steps": 50,
        "strength": 1.0,
        "similarity": 0.1,
        "entry_id": "",
    }
    base.update(kw)
    return CacheDecision(**base)  # type: ignore[arg-type]


# --- planning ----------------------------------------------------------------------------


def test_exact_repeat_needs_no_worker() -> None:
    plan = plan_request(
        CachePolicy.READ_WRITE,
        decision(hit=True, exact_repeat=True, skipped_steps=50, strength=0.0, similarity=1.0, entry_id="e1"),
    )
    assert plan.outcome is Outcome.EXACT_REPEAT
    assert (plan.entry_id, plan.strength, plan.skipped_steps) == ("e1", 0.0, 50)
    assert not plan.needs_worker and plan.needs_image


@pytest.mark.parametrize(("k", "strength"), [(30, 0.4), (25, 0.5), (15, 0.7), (10, 0.8), (5, 0.9)])
def test_hit_carries_the_tables_strength_and_k(k: int, strength: float) -> None:
    plan = plan_request(
        CachePolicy.NO_STORE,
        decision(hit=True, skipped_steps=k, strength=strength, similarity=0.9, entry_id="e2"),
    )
    assert plan.outcome is Outcome.HIT
    assert (plan.skipped_steps, plan.total_steps, plan.strength, plan.entry_id) == (k, 50, strength, "e2")
    assert plan.needs_worker and plan.needs_image


def test_miss_keeps_the_best_similarity() -> None:
    plan = plan_request(CachePolicy.READ_WRITE, decision(similarity=0.2, entry_id="near"))
    assert plan.outcome is Outcome.MISS and plan.similarity == pytest.approx(0.2)
    assert plan.entry_id == "" and plan.cache_available and not plan.needs_image


def test_a_hit_without_entry_or_with_full_strength_is_a_miss() -> None:
    assert plan_request(CachePolicy.READ_WRITE, decision(hit=True, skipped_steps=5, strength=0.9)).outcome is (
        Outcome.MISS
    )
    assert plan_request(CachePolicy.READ_WRITE, decision(hit=True, strength=1.0, entry_id="e")).outcome is Outcome.MISS


@pytest.mark.parametrize("policy", [CachePolicy.BYPASS, CachePolicy.OFF])
def test_bypass_skips_the_cache_even_for_an_exact_repeat(policy: CachePolicy) -> None:
    plan = plan_request(policy, decision(hit=True, exact_repeat=True, entry_id="e"))
    assert plan.outcome is Outcome.BYPASSED and not plan.needs_image


def test_cache_down_is_a_miss_that_says_so() -> None:
    plan = plan_request(CachePolicy.READ_WRITE, None, cache_note="cache lookup failed (UNAVAILABLE)")
    assert plan.outcome is Outcome.MISS and not plan.cache_available
    assert "UNAVAILABLE" in plan.note


def test_a_vanished_entry_turns_into_a_miss() -> None:
    hit = plan_request(
        CachePolicy.READ_WRITE, decision(hit=True, skipped_steps=30, strength=0.4, similarity=0.95, entry_id="e")
    )
    miss = as_miss(hit, "gone")
    assert miss.outcome is Outcome.MISS and miss.entry_id == "" and miss.strength == 1.0
    assert miss.similarity == pytest.approx(0.95) and miss.note == "gone"


@pytest.mark.parametrize(
    ("outcome", "policy", "degraded", "insert_hits", "insert_degraded", "expected"),
    [
        (Outcome.MISS, CachePolicy.READ_WRITE, False, False, False, True),
        (Outcome.BYPASSED, CachePolicy.BYPASS, False, False, False, True),
        (Outcome.MISS, CachePolicy.NO_STORE, False, True, True, False),
        (Outcome.BYPASSED, CachePolicy.OFF, False, True, True, False),
        (Outcome.HIT, CachePolicy.READ_WRITE, False, False, False, False),
        (Outcome.HIT, CachePolicy.READ_WRITE, False, True, False, True),
        (Outcome.MISS, CachePolicy.READ_WRITE, True, False, False, False),
        (Outcome.MISS, CachePolicy.READ_WRITE, True, False, True, True),
        (Outcome.EXACT_REPEAT, CachePolicy.READ_WRITE, False, True, True, False),
    ],
)
def test_should_insert(
    outcome: Outcome, policy: CachePolicy, degraded: bool, insert_hits: bool, insert_degraded: bool, expected: bool
) -> None:
    got = should_insert(outcome, policy, degraded=degraded, insert_hits=insert_hits, insert_degraded=insert_degraded)
    assert got is expected


# --- dispatch ----------------------------------------------------------------------------


def test_least_outstanding_work_wins() -> None:
    workers = [WorkerLoad("a", 1, 4, 9.0), WorkerLoad("b", 2, 4, 3.0), WorkerLoad("c", 0, 4, 5.0)]
    assert choose_worker(workers) == "b"


def test_never_above_capacity() -> None:
    workers = [WorkerLoad("a", 2, 2, 0.5), WorkerLoad("b", 3, 4, 30.0)]
    assert choose_worker(workers) == "b"
    assert choose_worker([WorkerLoad("a", 2, 2, 0.5), WorkerLoad("b", 4, 4, 1.0)]) is None


def test_unhealthy_workers_are_skipped() -> None:
    workers = [WorkerLoad("a", 0, 4, 0.0, healthy=False), WorkerLoad("b", 1, 4, 5.0)]
    assert choose_worker(workers) == "b"
    assert choose_worker([WorkerLoad("a", 0, 4, 0.0, healthy=False)]) is None


def test_a_failed_worker_is_avoided_while_another_exists() -> None:
    workers = [WorkerLoad("a", 0, 4, 0.0), WorkerLoad("b", 4, 4, 10.0)]
    assert choose_worker(workers, exclude={"a"}) is None  # wait for b rather than retry a
    assert choose_worker([WorkerLoad("a", 0, 4, 0.0)], exclude={"a"}) == "a"  # a lone worker is reused


def pool(**kw: object) -> PoolLoad:
    base: dict[str, object] = {
        "workers": 1,
        "capacity": 2,
        "in_flight": 0,
        "queued": 0,
        "outstanding_seconds": 0.0,
        "idle_workers": 1,
        "seconds_per_step": 1.0,
        "overhead_seconds": 1.0,
        "default_steps": 50,
    }
    base.update(kw)
    return PoolLoad(**base)  # type: ignore[arg-type]


NO_POOL = pool(workers=0, capacity=0, idle_workers=0)
MISS = Plan(Outcome.MISS)
HIT = Plan(Outcome.HIT, similarity=0.9, skipped_steps=30, total_steps=50, strength=0.4, entry_id="e")


def test_job_seconds_and_wait() -> None:
    p = pool(seconds_per_step=0.5, overhead_seconds=2.0, default_steps=40)
    assert p.job_seconds() == pytest.approx(22.0)
    assert p.job_seconds(10, 0.4) == pytest.approx(4.0)
    assert p.wait_seconds() == 0.0
    busy = pool(workers=2, capacity=4, in_flight=4, queued=3, outstanding_seconds=60.0)
    assert busy.wait_seconds() == pytest.approx(30.0)
    assert math.isinf(NO_POOL.wait_seconds())


def test_miss_goes_to_large_and_hit_to_small() -> None:
    rules = RoutingRules()
    assert route(MISS, pool(), pool(), remaining_s=100, steps=None, rules=rules) == Route(
        Pool.LARGE, estimate_seconds=51.0
    )
    chosen = route(HIT, pool(), pool(), remaining_s=100, steps=None, rules=rules)
    assert isinstance(chosen, Route) and chosen.pool is Pool.SMALL and not chosen.large_took_hit


def test_idle_large_worker_takes_a_hit_when_the_small_pool_is_full() -> None:
    small_full = pool(in_flight=2)
    chosen = route(HIT, pool(), small_full, remaining_s=100, steps=None, rules=RoutingRules())
    assert isinstance(chosen, Route) and chosen.pool is Pool.LARGE and chosen.large_took_hit
    # not when a miss waits for the large pool, nor when the rule is off
    waiting = pool(queued=1, in_flight=2)
    assert route(HIT, waiting, small_full, remaining_s=100, steps=None, rules=RoutingRules()).pool is Pool.SMALL  # type: ignore[union-attr]
    off = RoutingRules(large_takes_hits=False)
    assert route(HIT, pool(), small_full, remaining_s=100, steps=None, rules=off).pool is Pool.SMALL  # type: ignore[union-attr]


def test_hits_go_to_large_when_there_is_no_small_pool() -> None:
    chosen = route(HIT, pool(), NO_POOL, remaining_s=100, steps=None, rules=RoutingRules(large_takes_hits=False))
    assert isinstance(chosen, Route) and chosen.pool is Pool.LARGE


def test_overloaded_large_pool_degrades_misses_to_small() -> None:
    large = pool(in_flight=2, queued=4, outstanding_seconds=300.0)
    chosen = route(MISS, large, pool(seconds_per_step=0.2), remaining_s=60, steps=None, rules=RoutingRules())
    assert isinstance(chosen, Route) and chosen.pool is Pool.SMALL and chosen.degraded


def test_without_degradation_an_overloaded_miss_is_refused_with_a_retry_hint() -> None:
    large = pool(in_flight=2, queued=4, outstanding_seconds=300.0)
    rules = RoutingRules(degrade_misses=False)
    refused = route(MISS, large, pool(), remaining_s=60, steps=None, rules=rules)
    assert isinstance(refused, Reject)
    assert refused.retry_after_s == pytest.approx(300.0)
    assert "more than the 60.0s left" in refused.reason


def test_nothing_in_time_is_refused() -> None:
    refused = route(MISS, pool(), pool(), remaining_s=5, steps=None, rules=RoutingRules())
    assert isinstance(refused, Reject) and refused.retry_after_s == pytest.approx(1.0)


def test_a_full_queue_is_refused_even_with_time_left() -> None:
    rules = RoutingRules(max_queue=3, degrade_misses=False)
    refused = route(MISS, pool(queued=3, in_flight=2), pool(), remaining_s=1e6, steps=None, rules=rules)
    assert isinstance(refused, Reject) and "queue is full" in refused.reason


def test_the_monitors_override_sends_misses_the_large_pool_cannot_start_to_a_free_small_worker() -> None:
    busy_large = pool(in_flight=2)  # fits the deadline by queueing: the router alone would wait
    rules = RoutingRules()
    assert route(MISS, busy_large, pool(), remaining_s=1e6, steps=None, rules=rules).pool is Pool.LARGE  # type: ignore[union-attr]
    chosen = route(MISS, busy_large, pool(), remaining_s=1e6, steps=None, rules=rules, monitor_degrade=True)
    assert isinstance(chosen, Route) and chosen.pool is Pool.SMALL and chosen.degraded
    # a large slot free, or no small slot free: the miss stays on the large pool
    free_large = route(MISS, pool(), pool(), remaining_s=1e6, steps=None, rules=rules, monitor_degrade=True)
    assert free_large.pool is Pool.LARGE  # type: ignore[union-attr]
    small_full = route(MISS, busy_large, pool(in_flight=2), remaining_s=1e6, steps=None, rules=rules,
                       monitor_degrade=True)  # fmt: skip
    assert small_full.pool is Pool.LARGE  # type: ignore[union-attr]
    # the operator turned degradation off: the override is not acted on
    off = RoutingRules(degrade_misses=False)
    kept = route(MISS, busy_large, pool(), remaining_s=1e6, steps=None, rules=off, monitor_degrade=True)
    assert isinstance(kept, Route) and kept.pool is Pool.LARGE and not kept.degraded


def test_the_override_lapses_after_its_ttl_and_is_validated() -> None:
    override = degrade_override(True, "overload", "monitor-0", 30.0, now=100.0)
    assert override.active(129.9) and override.expires_in(110.0) == pytest.approx(20.0)
    assert not override.active(130.0) and override.expires_in(130.0) == 0.0
    cleared = degrade_override(False, "", "monitor-0", 0.0, now=100.0)
    assert not cleared.active(100.0) and not DegradeOverride().active(0.0)
    for ttl in (0.0, -1.0, math.inf, math.nan, 86401.0):
        with pytest.raises(InvalidArgument, match="ttl_seconds"):
            degrade_override(True, "overload", "m", ttl, now=0.0)
    with pytest.raises(InvalidArgument, match="reason"):
        degrade_override(True, "x" * 5000, "m", 10.0, now=0.0)


def test_no_worker_at_all_is_unavailable() -> None:
    refused = route(MISS, NO_POOL, NO_POOL, remaining_s=100, steps=None, rules=RoutingRules())
    assert isinstance(refused, Reject) and refused.retry_after_s is None


def test_admission_safety_factor() -> None:
    rules = RoutingRules(admission_safety=2.0, degrade_misses=False)
    assert isinstance(route(MISS, pool(), pool(), remaining_s=80, steps=None, rules=rules), Reject)
    assert isinstance(route(MISS, pool(), pool(), remaining_s=110, steps=None, rules=rules), Route)


def test_request_steps_shape_the_estimate() -> None:
    chosen = route(MISS, pool(), pool(), remaining_s=10, steps=4, rules=RoutingRules())
    assert isinstance(chosen, Route) and chosen.estimate_seconds == pytest.approx(5.0)


# --- retries and deadlines ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason", "kind"),
    [
        ("UNAVAILABLE", None, FailureKind.WORKER),  # crashed or NOT_SERVING
        ("DEADLINE_EXCEEDED", None, FailureKind.WORKER),  # hung
        ("CANCELLED", None, FailureKind.WORKER),
        ("RESOURCE_EXHAUSTED", FailureReason.QUEUE_FULL, FailureKind.BUSY),
        ("RESOURCE_EXHAUSTED", None, FailureKind.BUSY),
        ("FAILED_PRECONDITION", FailureReason.OUT_OF_MEMORY, FailureKind.REQUEST),
        ("FAILED_PRECONDITION", FailureReason.PIPELINE_ERROR, FailureKind.REQUEST),
        ("INTERNAL", None, FailureKind.REQUEST),  # says nothing of the worker's health
        ("UNKNOWN", None, FailureKind.REQUEST),
        ("INVALID_ARGUMENT", None, FailureKind.FINAL),
        ("FAILED_PRECONDITION", None, FailureKind.FINAL),
        ("UNAUTHENTICATED", None, FailureKind.FINAL),
    ],
)
def test_failures_are_classified_by_whose_fault_they_are(
    code: str, reason: FailureReason | None, kind: FailureKind
) -> None:
    assert classify_failure(code, reason) is kind
    assert kind.ejects == (kind is FailureKind.WORKER)  # only a broken worker counts toward ejection


def test_a_per_request_failure_is_retried_once_and_a_worker_failure_until_attempts_run_out() -> None:
    assert should_retry(FailureKind.REQUEST, 1) and not should_retry(FailureKind.REQUEST, 2)
    assert should_retry(FailureKind.WORKER, 5) and should_retry(FailureKind.BUSY, 5)
    assert not should_retry(FailureKind.FINAL, 0)


def test_a_shared_generation_is_an_exact_repeat() -> None:
    shared = as_shared(plan_request(CachePolicy.READ_WRITE, decision(similarity=0.3)), "shared")
    assert shared.outcome is Outcome.EXACT_REPEAT and not shared.needs_worker
    assert (shared.similarity, shared.strength, shared.skipped_steps, shared.note) == (1.0, 0.0, 50, "shared")


def test_may_retry() -> None:
    assert may_retry(1, max_attempts=3, remaining_s=5, backoff_s=0.2)
    assert not may_retry(3, max_attempts=3, remaining_s=5, backoff_s=0.2)
    assert not may_retry(1, max_attempts=3, remaining_s=0.1, backoff_s=0.2)


def test_attempt_timeout_is_generous_but_within_the_deadline() -> None:
    assert attempt_timeout(100, 2, factor=4, floor_s=30) == 30
    assert attempt_timeout(100, 20, factor=4, floor_s=30) == 80
    assert attempt_timeout(10, 20, factor=4, floor_s=30) == 10
    assert attempt_timeout(-1, 20, factor=4, floor_s=30) == 0


def test_effective_deadline() -> None:
    assert effective_deadline(10.0, None, default_s=300, max_s=3600) == 310.0
    assert effective_deadline(10.0, 5.0, default_s=300, max_s=3600) == 15.0
    assert effective_deadline(10.0, 1e9, default_s=300, max_s=3600) == 3610.0
    assert effective_deadline(10.0, -2.0, default_s=300, max_s=3600) == 10.0


@pytest.mark.parametrize(
    ("requested", "default", "strength", "expected"),
    [
        (0, 28, 0.4, 0),  # the default runs enough steps: leave it to the worker
        (10, 28, 0.4, 10),
        (2, 28, 0.4, 3),  # 2 x 0.4 runs no step; 3 x 0.4 runs one
        (0, 2, 0.4, 3),  # a model with few default steps
        (1, 28, 0.9, 2),
        (4, 28, 0.2, 5),
        (1, 28, 1.0, 1),
    ],
)
def test_hit_steps_always_run_at_least_one(requested: int, default: int, strength: float, expected: int) -> None:
    import numpy as np

    got = hit_steps(requested, default, float(np.float32(strength)))  # strengths travel as float32
    assert got == expected
    assert int((got or default) * float(np.float32(strength))) >= 1
