"""The monitor's allocation policies: MoDM's variants A and B with their PID smoothing, and the
default's queue-, SLO- and switch-cost-awareness, hysteresis, overload and bounds."""

from __future__ import annotations

import itertools
import random

import pytest

from modm.services.monitor.modm_reference import (
    INTEGRAL_LIMIT,
    ModmPolicy,
    PidState,
    Variant,
    pid_step,
    proportional_target,
    quality_first_target,
    round_half_away,
)
from modm.services.monitor.observations import Allocation, Fleet, PoolProfile, PoolState, Window
from modm.services.monitor.policy import POLICIES, SloAwarePolicy, policy_named
from modm.services.monitor.queueing import Stream, erlang_c, forecast

LARGE_S, SMALL_S = 91.5, 16.5
TWO_AND_TWO = Allocation(2, 2)


def window(
    rate: float,
    hit_rate: float,
    *,
    k: dict[int, float] | None = None,
    large_s: float = LARGE_S,
    small_s: float = SMALL_S,
    ready: Allocation = TWO_AND_TWO,
    queued: tuple[int, int] = (0, 0),
    exact_repeats: float = 0.0,
) -> Window:
    """`hit_rate` counts hits and exact repeats, as the router's Stats do."""
    return Window(
        seconds=180.0,
        request_rate_per_min=rate,
        hit_rate=hit_rate,
        k_distribution=k if k is not None else {20: 1.0},  # kappa 0.6
        large=PoolState(ready.large, PoolProfile.from_full_run(large_s), queued[0]),
        small=PoolState(ready.small, PoolProfile.from_full_run(small_s), queued[1]),
        exact_repeat_rate=exact_repeats,
    )


# --- MoDM's references ---------------------------------------------------------------------


def test_variant_b_worked_example_gives_three_large_and_one_small() -> None:
    obs = window(10.0, 0.7, large_s=100.0, small_s=18.0)  # lat_S/lat_L = 0.18, kappa = 0.6
    assert obs.kappa == pytest.approx(0.6)
    assert proportional_target(obs, 4)[0] == 3
    decision = ModmPolicy(Variant.PROPORTIONAL).decide(obs, Allocation(3, 1), Fleet(4), PidState())
    assert decision.target == Allocation(3, 1)
    assert "modm-b" in decision.reason


def test_pid_smoothing_steps_towards_the_target() -> None:
    # e=2, I=2, D=2: u = 1.2 + 0.1 + 0.1 = 1.4 -> +1
    large, state, u = pid_step(3, 1, PidState(), 1, 4)
    assert (large, state, u) == (2, PidState(2.0, 2.0), pytest.approx(1.4))
    # e=1, I=3, D=-1: u = 0.6 + 0.15 - 0.05 = 0.7 -> +1
    large, state, u = pid_step(3, large, state, 1, 4)
    assert (large, u) == (3, pytest.approx(0.7))
    # e=0, I=3, D=-1: u = 0.1 -> stays
    large, state, u = pid_step(3, large, state, 1, 4)
    assert (large, u) == (3, pytest.approx(0.1))
    # clipped to the range
    assert pid_step(10, 3, PidState(), 1, 4)[0] == 4
    assert pid_step(-5, 2, PidState(), 1, 4)[0] == 1


def test_round_half_away_from_zero() -> None:
    assert [round_half_away(x) for x in (0.5, 1.5, 2.5, -0.5, -1.4, 0.49)] == [1, 2, 3, -1, -1, 0]


def test_variant_a_greedy_adds_large_gpus_while_derated_spare_covers_hits() -> None:
    # "Increase n while 0.9 A(n) >= W_hit" reads as: the largest n whose derated spare still
    # covers the hits. T_L = 1/min, T_S = 6/min, N = 8; R = 30, h = 0.9, kappa = 0.6:
    # W_miss = 3, W_hit = 16.2, n0 = ceil(3 / 1) = 3. A(n) = n - 3 + (8 - n) 6 = 45 - 5n:
    # 0.9 A(5) = 18 >= 16.2, 0.9 A(6) = 13.5 < 16.2 -> 5. A literal `while n: n += 1` loop
    # would stop at 6, the first n whose spare no longer covers the hits.
    obs = window(30.0, 0.9, large_s=60.0, small_s=10.0)
    assert quality_first_target(obs, 8)[0] == 5
    # R = 20, h = 0.7: W_miss = 6, W_hit = 8.4; 0.9 A(7) = 6.3 < 8.4 -> stays at n0 = 6.
    assert quality_first_target(window(20.0, 0.7, large_s=60.0, small_s=10.0), 8)[0] == 6


def test_exact_repeats_size_neither_pool_in_either_variant() -> None:
    # R = 30 of which 0.5 exact repeats and 0.4 img2img hits: 15 requests/min need a GPU,
    # h = 12/15 = 0.8. Variant A: W_miss = 3, W_hit = 12 x 0.6 = 7.2; 0.9 A(7) = 9 >= 7.2 -> 7
    # (counting repeats as hits, W_hit = 16.2, gave 5). Variant B: share = 0.2 / (0.2 + 0.8 x
    # 0.6 / 6) = 0.714 of 8 -> 6 (counting them, h = 0.9 gave 4).
    obs = window(30.0, 0.9, large_s=60.0, small_s=10.0, exact_repeats=0.5)
    assert quality_first_target(obs, 8)[0] == 7
    assert proportional_target(obs, 8)[0] == 6
    assert (obs.gpu_requests_per_min, obs.gpu_hit_rate) == pytest.approx((15.0, 0.8))
    # The same GPU work without the repeats gives the same targets.
    bare = window(15.0, 0.8, large_s=60.0, small_s=10.0)
    assert quality_first_target(bare, 8)[0] == 7 and proportional_target(bare, 8)[0] == 6


def test_variant_a_overloaded_clamps_to_the_fleet_and_says_so() -> None:
    target, why = quality_first_target(window(100.0, 0.5, large_s=60.0, small_s=10.0), 8)
    assert target == 8
    assert "overloaded" in why


def test_variant_a_is_quality_first_and_never_below_one_large() -> None:
    assert quality_first_target(window(0.0, 0.0), 4)[0] == 4  # no load: every GPU large
    assert quality_first_target(window(100.0, 1.0), 4)[0] == 1  # hits only, more than fit: n0 = 0 -> 1
    assert proportional_target(window(10.0, 1.0), 4)[0] == 1


def test_the_integral_is_clamped_so_a_long_error_does_not_overshoot() -> None:
    # The scaler follows but the error persists for 30 windows (e.g. a pool that grows one
    # worker per round): unclamped, I = 90 and the first window at the target would move
    # u = 0.05 x 90 - 0.15 = 4.35 -> 4 GPUs past it.
    state = PidState()
    for _ in range(30):
        _, state, _ = pid_step(4, 1, state, 1, 8)
    assert state.integral == INTEGRAL_LIMIT
    large, _, _ = pid_step(4, 4, state, 1, 8)
    assert large == 4


def test_the_integral_is_frozen_while_the_scaler_cannot_follow() -> None:
    state = PidState(2.0, 1.0)
    large, frozen, u = pid_step(4, 1, state, 1, 8, follows=False)
    assert frozen == PidState(2.0, 3.0)  # the integral kept, the error remembered for D
    assert (large, u) == (3, pytest.approx(0.6 * 3 + 0.05 * 2 + 0.05 * 2))
    obs = window(10.0, 0.7, large_s=100.0, small_s=18.0)  # variant B wants 3 of 4
    policy = ModmPolicy(Variant.PROPORTIONAL)
    held = policy.decide(obs, Allocation(1, 3), Fleet(4), state, scaler_follows=False)
    assert held.state == PidState(2.0, 2.0)
    assert "integral frozen" in held.reason
    assert policy.decide(obs, Allocation(1, 3), Fleet(4), state).state == PidState(4.0, 2.0)


def test_reference_policies_respect_fleet_bounds() -> None:
    fleet = Fleet(8, max_large=5, min_small=2)
    obs = window(100.0, 0.1, ready=Allocation(5, 3))
    for variant in Variant:
        decision = ModmPolicy(variant).decide(obs, Allocation(5, 3), fleet, None)
        assert decision.target.large <= 5 and decision.target.small >= 2


# --- queueing estimates --------------------------------------------------------------------


def test_erlang_c_known_values() -> None:
    assert erlang_c(1, 0.5) == pytest.approx(0.5)
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(3, 3.0) == 1.0
    assert erlang_c(3, 0.0) == 0.0


def test_forecast_matches_md1_mean_wait() -> None:
    # M/D/1 at rho 0.5 and 10 s: Wq = rho s / (2 (1 - rho)) = 5 s.
    result = forecast(
        [Stream(0.05, 10.0)], servers_now=1, servers_later=1, join_after_s=0, backlog=0, horizon_s=600, slo_s=60
    )
    assert result.utilisation == pytest.approx(0.5)
    assert result.mean_response_s[0] == pytest.approx(15.0)


def test_forecast_counts_an_unstable_or_empty_pool_as_over_the_slo() -> None:
    kw = {"join_after_s": 0, "backlog": 0, "horizon_s": 600, "slo_s": 60}
    assert forecast([Stream(1.0, 10.0)], servers_now=2, servers_later=2, **kw).over_slo_share[0] == 1.0
    assert forecast([Stream(0.1, 10.0)], servers_now=0, servers_later=0, **kw).over_slo_share[0] == 1.0


def test_gpus_joining_one_after_another_serve_less_of_the_horizon_than_together() -> None:
    """4 GPUs of capacity to come for an overloaded pool of 2: together after 60 s, or one every
    60 s (the last at 240 s). Staggered, the queue grows longer, and both beat no join at all."""
    kw = {"servers_now": 2, "servers_later": 6, "join_after_s": 60.0, "backlog": 0, "horizon_s": 600, "slo_s": 60}
    streams = [Stream(0.4, 10.0)]  # 4 busy servers
    together = forecast(streams, **kw)
    staggered = forecast(streams, **kw, joins=4, join_every_s=60.0)
    never = forecast(streams, **kw | {"join_after_s": 1e9})
    assert together.mean_response_s[0] < staggered.mean_response_s[0] < never.mean_response_s[0]
    assert together.over_slo_share[0] < staggered.over_slo_share[0] < never.over_slo_share[0]
    assert forecast(streams, **kw, joins=4, join_every_s=0.0) == together  # no spacing: together


# --- the default policy --------------------------------------------------------------------


def decide(obs: Window, current: Allocation, fleet: Fleet, state: object = None):
    return SloAwarePolicy().decide(obs, current, fleet, state)


def test_default_sizes_the_large_pool_for_the_misses() -> None:
    # 10 req/min, h = 0.7: 3 misses/min x 91.5 s = 4.6 busy large GPUs; hits need about 1.2 small.
    fleet = Fleet(8, slo_seconds=300)
    decision = decide(window(10.0, 0.7, ready=Allocation(6, 2)), Allocation(6, 2), fleet)
    assert decision.target.large >= 5 and decision.target.small >= 1
    assert not decision.degrade_misses
    assert decision.reason


def test_default_counts_the_queue_already_waiting() -> None:
    fleet = Fleet(16, slo_seconds=300)
    calm = decide(window(8.0, 0.7, ready=Allocation(4, 12)), Allocation(4, 12), fleet)
    queued = decide(window(8.0, 0.7, ready=Allocation(4, 12), queued=(20, 0)), Allocation(4, 12), fleet)
    assert queued.target.large > calm.target.large
    assert "queued 20 large" in queued.reason


def test_default_does_not_flap_on_noisy_steady_load() -> None:
    rng = random.Random(7)
    fleet = Fleet(16, slo_seconds=300)
    policy = SloAwarePolicy()
    current, state = Allocation(8, 8), policy.initial_state()
    targets = []
    for _ in range(40):
        rate = 20.0 * rng.uniform(0.85, 1.15)
        hit = 0.7 + rng.uniform(-0.05, 0.05)
        decision = policy.decide(window(rate, hit, ready=current), current, fleet, state)
        current, state = decision.target, decision.state
        targets.append(current.large)
    changes = sum(1 for a, b in itertools.pairwise(targets) if a != b)
    assert changes <= 2, targets


def test_default_waits_for_a_second_window_before_a_non_urgent_move() -> None:
    # 2 req/min, half hits, on 2 + 2: a third large GPU takes the predicted share over the SLO
    # from 4% to 0%, a gain above the margin (0.02) but below what counts as urgent (0.05).
    fleet = Fleet(4, slo_seconds=300)
    obs = window(2.0, 0.5, ready=TWO_AND_TWO)
    first = decide(obs, TWO_AND_TWO, fleet)
    assert first.target == TWO_AND_TWO
    assert "waiting for window 2 of 2 to confirm" in first.reason
    second = decide(obs, TWO_AND_TWO, fleet, first.state)
    assert second.target == Allocation(3, 1)
    assert "(confirmed)" in second.reason
    # Without the first window's memory the same window only starts waiting again.
    assert decide(obs, TWO_AND_TWO, fleet).target == TWO_AND_TWO


def test_default_prices_the_switch() -> None:
    obs = window(10.0, 0.7, ready=Allocation(2, 6))
    cheap = decide(obs, Allocation(2, 6), Fleet(8, slo_seconds=300, switch_seconds=0))
    assert cheap.target.large > 2
    # A load that never finishes within the horizon: moving only loses capacity.
    dear = decide(obs, Allocation(2, 6), Fleet(8, slo_seconds=300, switch_seconds=1e6))
    assert dear.target == Allocation(2, 6)


def test_the_default_prices_moves_one_at_a_time_where_the_scaler_makes_them_so() -> None:
    """Misses overload 2 large GPUs and a model load takes 120 s. Made at once, a move to 6 large
    has them all serving after 120 s; one at a time, the fourth joins after 480 s, most of the
    horizon, and degrading misses onto the idle small pool meanwhile serves better."""
    obs = window(10.0, 0.7, ready=Allocation(2, 6))
    at_once = decide(obs, Allocation(2, 6), Fleet(8, slo_seconds=300, switch_seconds=120))
    serial = decide(obs, Allocation(2, 6), Fleet(8, slo_seconds=300, switch_seconds=120, moves_one_at_a_time=True))
    assert at_once.target == Allocation(6, 2) and not at_once.degrade_misses
    assert serial.target == Allocation(2, 6) and serial.degrade_misses


def test_default_degrades_misses_under_overload_and_never_stops() -> None:
    # 8 req/min at h = 0.5 is 1.7x what 4 GPUs serve with misses on the large model; with the
    # misses on the small model it fits.
    fleet = Fleet(4, slo_seconds=300)
    decision = decide(window(8.0, 0.5, ready=Allocation(3, 1), queued=(10, 0)), Allocation(3, 1), fleet)
    assert decision.degrade_misses
    assert "overload" in decision.degrade_reason
    assert decision.target.large >= 1 and decision.target.small >= 1
    assert decision.prediction is not None and decision.prediction.degraded_share > 0


def test_default_respects_min_and_max_replicas() -> None:
    fleet = Fleet(8, max_large=5, min_small=2, slo_seconds=300)
    heavy_misses = decide(window(30.0, 0.1, ready=Allocation(4, 4)), Allocation(4, 4), fleet)
    assert heavy_misses.target.large <= 5 and heavy_misses.target.small >= 2
    fleet = Fleet(8, min_large=3, max_small=4, slo_seconds=300)
    all_hits = decide(window(40.0, 0.99, ready=Allocation(4, 4)), Allocation(4, 4), fleet)
    assert all_hits.target.large >= 4 and all_hits.target.small <= 4


def test_default_moves_an_allocation_outside_the_bounds_at_once() -> None:
    fleet = Fleet(8, min_small=3, slo_seconds=300)
    decision = decide(window(1.0, 0.5, ready=Allocation(7, 1)), Allocation(7, 1), fleet)
    assert decision.target.small >= 3
    assert "urgent" in decision.reason


def test_never_below_one_large_while_misses_arrive() -> None:
    fleet = Fleet(4, min_large=0, slo_seconds=300)
    for policy in POLICIES.values():
        decision = policy.decide(window(60.0, 0.97, ready=Allocation(1, 3)), Allocation(1, 3), fleet, None)
        assert decision.target.large >= 1, policy.name
    queued_only = decide(window(60.0, 1.0, ready=Allocation(1, 3), queued=(2, 0)), Allocation(1, 3), fleet)
    assert queued_only.target.large >= 1


def test_every_decision_has_a_reason_and_policies_are_named() -> None:
    obs = window(10.0, 0.7)
    for name in ("slo-aware", "modm-a", "modm-b", "all-large"):
        assert policy_named(name).decide(obs, Allocation(2, 2), Fleet(4), None).reason
    with pytest.raises(ValueError, match="unknown policy"):
        policy_named("nope")


def test_fleet_validates_its_bounds() -> None:
    with pytest.raises(ValueError):
        Fleet(2, min_large=2, min_small=1)
    with pytest.raises(ValueError):
        Fleet(4, min_large=2, max_large=1)
    assert Fleet(8, max_small=3).split(2) == Allocation(2, 3)
