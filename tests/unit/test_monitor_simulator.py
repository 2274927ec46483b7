"""The discrete-event simulator on cases with known answers: deterministic queues, M/D/1,
conservation of requests and GPU-seconds, switches counted, degradation under overload."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from modm.services.monitor.observations import Allocation, Decision, Fleet, PoolProfile, Window
from modm.services.monitor.policy import AllLargePolicy, SloAwarePolicy
from modm.services.monitor.simulator import Models, percentile, simulate
from modm.services.monitor.traces import Arrival, Profile, poisson_arrivals


@dataclass(frozen=True)
class Alternating:
    """Scripted: flips one GPU between the pools every window."""

    a: Allocation
    b: Allocation

    @property
    def name(self) -> str:
        return "alternating"

    def initial_state(self) -> None:
        return None

    def decide(
        self, window: Window, current: Allocation, fleet: Fleet, state: object, *, scaler_follows: bool = True
    ) -> Decision:
        return Decision(self.b if current == self.a else self.a, "scripted")


def test_a_deterministic_queue_on_one_gpu() -> None:
    arrivals = [Arrival(0.0, False), Arrival(0.0, False), Arrival(0.0, False)]
    result = simulate(arrivals, AllLargePolicy(), Fleet(1), Allocation(1, 0))
    assert result.completed == 3
    assert result.mean_latency_s == pytest.approx(183.0)  # 91.5, 183, 274.5
    assert result.makespan_s == pytest.approx(274.5)
    assert result.over_slo_share == 0.0  # default SLO 300 s
    assert result.switches == 0


def test_a_hit_runs_its_share_of_the_small_models_steps() -> None:
    arrivals = [Arrival(0.0, False), Arrival(1.0, True, 30)]  # k = 30: 40% of 16.5 s
    result = simulate(arrivals, AllLargePolicy(), Fleet(2, min_large=1), Allocation(1, 1))
    assert result.hits_on_large == 0
    assert result.ticks == ()  # done before the first window
    assert result.mean_latency_s == pytest.approx((91.5 + 16.5 * 0.4) / 2)


def test_an_idle_large_worker_takes_a_hit() -> None:
    result = simulate([Arrival(0.0, True, 25)], AllLargePolicy(), Fleet(1), Allocation(1, 0))
    assert result.hits_on_large == 1
    assert result.mean_latency_s == pytest.approx(91.5 * 0.5)


# SD3 that takes 2 requests at once and loads in 45 s; SANA-Sprint that loads in 12 s.
SD3_SANA = Models(
    PoolProfile(1.0, 4.0, steps=28, capacity=2, load_seconds=45.0),
    PoolProfile(0.5, 1.0, steps=2, load_seconds=12.0),
)


def test_jobs_take_what_the_monitor_prices_them_at() -> None:
    # Three misses on one SD3 GPU that batches 2: 4 + 28 x 1.0 = 32 s for the first two side by
    # side, 64 s for the third; a hit (k = 25 of 50) runs 1 of SANA-Sprint's 2 steps: 1 + 0.5 = 1.5 s.
    arrivals = [Arrival(0.0, False) for _ in range(3)] + [Arrival(0.0, True, 25)]
    result = simulate(arrivals, AllLargePolicy(), Fleet(2, min_large=1), Allocation(1, 1), models=SD3_SANA)
    assert result.makespan_s == pytest.approx(64.0)
    assert result.mean_latency_s == pytest.approx((32.0 + 32.0 + 64.0 + 1.5) / 4)
    assert result.gpu_seconds["busy_large"] == pytest.approx(64.0)


def test_a_switch_costs_the_joined_models_load_time() -> None:
    # One GPU flips every 100 s, ten times: five SD3 loads (45 s) and five SANA-Sprint loads (12 s).
    policy = Alternating(Allocation(2, 2), Allocation(3, 1))
    result = simulate([Arrival(1000.0, False)], policy, Fleet(4), Allocation(2, 2), models=SD3_SANA, window_s=100.0)
    assert result.switches == 10
    assert result.gpu_seconds["loading"] == pytest.approx(5 * 45.0 + 5 * 12.0)


FLAT_10_2 = Models(PoolProfile.from_full_run(10.0), PoolProfile.from_full_run(2.0))


def test_one_server_matches_md1() -> None:
    # lambda = 0.05/s, s = 10 s: rho = 0.5, Wq = rho s / (2 (1 - rho)) = 5 s, response 15 s.
    arrivals = poisson_arrivals(Profile.constant(3.0), Profile.constant(0.0), 400_000.0, seed=3)
    result = simulate(arrivals, AllLargePolicy(), Fleet(1), Allocation(1, 0), models=FLAT_10_2)
    assert result.completed == len(arrivals) > 15_000
    assert result.mean_latency_s == pytest.approx(15.0, rel=0.05)
    assert result.gpu_seconds["busy_large"] == pytest.approx(10.0 * len(arrivals))


def test_requests_and_gpu_seconds_are_conserved() -> None:
    arrivals = poisson_arrivals(Profile(((0.0, 2.0), (3600.0, 8.0))), Profile.constant(0.7), 3600.0, seed=5)
    fleet = Fleet(4, slo_seconds=300)
    result = simulate(arrivals, SloAwarePolicy(), fleet, Allocation(2, 2))
    assert result.requests == result.completed == len(arrivals)
    assert sum(result.gpu_seconds.values()) == pytest.approx(4 * result.makespan_s)
    assert result.gpu_seconds["loading"] == pytest.approx(30.0 * result.switches)
    assert result.ticks and all(t.large + t.small == 4 and t.reason for t in result.ticks)


def test_switches_are_counted_and_cost_a_load() -> None:
    # Ticks every 100 s; the only request arrives at 1000 s, so ticks at 100..1000 each flip a GPU.
    policy = Alternating(Allocation(2, 2), Allocation(3, 1))
    result = simulate([Arrival(1000.0, False)], policy, Fleet(4), Allocation(2, 2), window_s=100.0)
    assert result.switches == 10
    assert result.gpu_seconds["loading"] == pytest.approx(300.0)
    assert result.completed == 1


def test_overload_degrades_misses_and_serves_everything() -> None:
    arrivals = poisson_arrivals(Profile.constant(8.0), Profile.constant(0.5), 3600.0, seed=2)
    fleet = Fleet(4, slo_seconds=300)
    result = simulate(arrivals, SloAwarePolicy(), fleet, Allocation(3, 1))
    assert result.completed == len(arrivals)
    assert result.degraded_share > 0.1
    assert any(t.degrade_misses and "overload" in t.reason for t in result.ticks)


def test_percentile_interpolates() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 99) == 0.0
