"""Replay schedules, computed (no clock): rates, ramps, bursts and recorded times."""

from __future__ import annotations

import itertools
import statistics

import pytest

from modm.bench.schedule import Timing, offsets
from modm.bench.traces import TraceRequest


def trace(n: int) -> list[TraceRequest]:
    return [TraceRequest(10.0 + 2.0 * i, f"prompt {i}") for i in range(n)]


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_poisson_has_the_mean_rate_and_exponential_gaps() -> None:
    times = offsets(trace(20_000), Timing("poisson", rate=2.0, seed=1))
    assert times[0] == 0.0 and times == sorted(times)
    spacing = gaps(times)
    assert statistics.fmean(spacing) == pytest.approx(0.5, rel=0.03)
    assert statistics.stdev(spacing) == pytest.approx(0.5, rel=0.05)  # exponential: sd = mean


def test_schedules_are_a_function_of_the_seed() -> None:
    assert offsets(trace(50), Timing("poisson", seed=3)) == offsets(trace(50), Timing("poisson", seed=3))
    assert offsets(trace(50), Timing("poisson", seed=3)) != offsets(trace(50), Timing("poisson", seed=4))


def test_recorded_times_start_at_zero_and_scale() -> None:
    assert offsets(trace(3), Timing("recorded")) == [0.0, 2.0, 4.0]
    assert offsets(trace(3), Timing("recorded", time_scale=0.25)) == [0.0, 0.5, 1.0]


def test_ramp_goes_from_rate_to_end_rate() -> None:
    n = 30_000
    spacing = gaps(offsets(trace(n), Timing("ramp", rate=1.0, end_rate=5.0, seed=2)))
    head, tail = spacing[: n // 20], spacing[-n // 20 :]
    assert statistics.fmean(head) == pytest.approx(1 / 1.1, rel=0.08)
    assert statistics.fmean(tail) == pytest.approx(1 / 4.9, rel=0.08)


def test_burst_multiplies_the_rate_of_the_middle_third() -> None:
    n = 30_000
    spacing = gaps(offsets(trace(n), Timing("burst", rate=1.0, burst_factor=5.0, seed=2)))
    before, during = spacing[: n // 3 - 1], spacing[n // 3 : 2 * n // 3 - 1]
    assert statistics.fmean(before) == pytest.approx(1.0, rel=0.05)
    assert statistics.fmean(during) == pytest.approx(0.2, rel=0.05)


@pytest.mark.parametrize("changes", [{"shape": "zigzag"}, {"rate": 0.0}, {"time_scale": -1.0}, {"end_rate": 0.0}])
def test_bad_timings_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Timing(**changes)  # type: ignore[arg-type]
