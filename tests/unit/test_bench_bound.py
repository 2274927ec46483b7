"""The bound 1 / ((1 - h) + h_i kappa c) and the quantities it is computed from."""

from __future__ import annotations

import math

import pytest

from modm.bench.bound import Bound, cost_ratio_of, hit_rate_of, img2img_rate_of, kappa_of, speedup_bound
from modm.bench.records import RequestRecord, StatsSample


def record(outcome: str, k: int = 0, total: int = 50, error: str = "") -> RequestRecord:
    return RequestRecord(0, "p", "", 0, 0, 1, 1, outcome=outcome, skipped_steps=k, total_steps=total, error=error)


def test_the_bound_arithmetic() -> None:
    assert speedup_bound(0.0, 0.0, 0.5, 0.2) == 1.0  # no reuse, no gain
    assert speedup_bound(0.7, 0.7, 0.5, 0.2) == pytest.approx(1 / (0.3 + 0.7 * 0.5 * 0.2))
    assert speedup_bound(0.7, 0.4, 0.5, 0.2) == pytest.approx(1 / (0.3 + 0.4 * 0.5 * 0.2))  # 0.3 repeats
    assert speedup_bound(0.5, 0.5, 1.0, 1.0) == pytest.approx(1.0)  # a hit that costs a miss gains nothing
    assert math.isinf(speedup_bound(1.0, 0.0, 0.5, 0.2))  # every request an exact repeat
    with pytest.raises(ValueError):
        speedup_bound(1.5, 0.5, 0.5, 0.2)
    with pytest.raises(ValueError):
        speedup_bound(0.5, 0.6, 0.5, 0.2)  # more img2img hits than reuses
    with pytest.raises(ValueError):
        speedup_bound(0.5, 0.5, -0.1, 0.2)


def test_kappa_is_over_img2img_hits_only() -> None:
    # An exact repeat runs no step, but it is not a hit: it must not pull kappa down (the
    # router's Stats and the monitor read kappa the same way).
    records = [record("hit", 10), record("hit", 30), record("exact_repeat", 50), record("miss")]
    assert kappa_of(records) == pytest.approx(((1 - 10 / 50) + (1 - 30 / 50)) / 2)
    assert kappa_of([record("miss"), record("exact_repeat", 50)]) == 0.0


def test_hit_rate_counts_served_requests_only() -> None:
    records = [record("hit", 10), record("exact_repeat", 50), record("miss"), record("", error="UNAVAILABLE")]
    assert hit_rate_of(records) == pytest.approx(2 / 3)
    assert img2img_rate_of(records) == pytest.approx(1 / 3)
    assert hit_rate_of([]) == 0.0


def sample(large: float, small: float | None, field: str = "profiled_seconds_per_step") -> StatsSample:
    workers = [{"pool": "large", field: large}]
    if small is not None:
        workers.append({"pool": "small", field: small})
    return StatsSample(0.0, 0.0, 0.0, 0.0, {}, workers)


def test_cost_ratio_averages_each_pool_over_the_samples() -> None:
    assert cost_ratio_of([sample(0.1, 0.02), sample(0.1, None)]) == pytest.approx(0.2)
    assert cost_ratio_of([sample(0.1, 0.02), sample(0.3, 0.04)]) == pytest.approx(0.03 / 0.2)
    assert cost_ratio_of([sample(0.1, None)]) is None
    served = [sample(0.5, 0.05, "mean_seconds_per_step"), sample(0.0, 0.0, "mean_seconds_per_step")]
    assert cost_ratio_of(served, "mean_seconds_per_step") == pytest.approx(0.1)  # zeros: no request yet
    assert cost_ratio_of(served) is None


def test_bound_of_records() -> None:
    records = [record("hit", 25)] * 6 + [record("miss")] * 4
    bound = Bound.of(records, 0.2)
    assert (bound.hit_rate, bound.img2img_rate, bound.kappa) == pytest.approx((0.6, 0.6, 0.5))
    assert bound.speedup == pytest.approx(1 / (0.4 + 0.6 * 0.5 * 0.2))
    with_repeats = Bound.of([*records, record("exact_repeat", 50), record("exact_repeat", 50)], 0.2)
    assert (with_repeats.hit_rate, with_repeats.img2img_rate, with_repeats.kappa) == pytest.approx((8 / 12, 0.5, 0.5))
    assert with_repeats.speedup == pytest.approx(1 / (4 / 12 + 0.5 * 0.5 * 0.2))


def test_a_failed_warm_up_profile_is_not_a_cost() -> None:
    assert cost_ratio_of([sample(1e-6, 0.02)]) is None  # the worker's floor after a failed fit
