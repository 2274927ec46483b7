"""A fix of the default policy that the SLO-day benchmark (benchmarks/slo_day.py) found: a split
whose prediction relies on the small pool taking queued misses must tell the router to degrade."""

from __future__ import annotations

from modm.services.monitor.observations import Allocation, Fleet, PoolProfile, PoolState, Window
from modm.services.monitor.policy import SloAwarePolicy


def test_default_tells_the_router_to_degrade_when_its_split_relies_on_moving_queued_misses() -> None:
    # 2 req/min at h = 0.5 keeps 3 large GPUs (91.5 s a miss) half busy, but 40 misses already
    # wait for them, most beyond what they reach within the SLO: the split predicts well only with
    # the 5 small GPUs taking those, so the decision must ask for it and price them as degraded.
    fleet = Fleet(8, slo_seconds=300, switch_seconds=1e6)  # no move pays: only degrading helps
    window = Window(
        seconds=180.0,
        request_rate_per_min=2.0,
        hit_rate=0.5,
        k_distribution={20: 1.0},
        large=PoolState(3, PoolProfile.from_full_run(91.5), queue_depth=40),
        small=PoolState(5, PoolProfile.from_full_run(16.5)),
    )
    policy = SloAwarePolicy()
    decision = policy.decide(window, Allocation(3, 5), fleet, policy.initial_state())
    assert decision.target == Allocation(3, 5)
    assert decision.degrade_misses and "overload" in decision.degrade_reason
    assert decision.prediction is not None
    # No arrival is degraded (the large pool keeps up with them): the moved queue is the share.
    assert 0 < decision.prediction.degraded_share < 40 / (2.0 / 60 * policy.horizon_s + 40)
