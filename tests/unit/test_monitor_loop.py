"""Stats aggregation and one control-loop round with a fake stats reader and a fake scaler."""

from __future__ import annotations

import logging

import pytest

from modm.services.monitor.k8s_scaler import KubernetesScaler, PoolOutcome, ScaleOutcome
from modm.services.monitor.local_scaler import LocalScaler
from modm.services.monitor.loop import MonitorLoop
from modm.services.monitor.modm_reference import PidState
from modm.services.monitor.observations import Allocation, Decision, Fleet, PoolProfile
from modm.services.monitor.policy import policy_named
from modm.services.monitor.settings import MonitorSettings
from modm.services.monitor.stats_client import StatsReading, aggregate
from modm.v1 import router_pb2

LARGE = PoolProfile(1.83)
SMALL = PoolProfile(0.33)


def router_stats(
    *, rate: float, served: int, hits: int, repeats: int = 0, k: dict[int, float] | None = None, queue: int = 0
) -> router_pb2.RouterStats:
    misses = served - hits - repeats
    return router_pb2.RouterStats(
        window_seconds=180.0,
        requests=served,
        request_rate_per_min=rate,
        hit_rate=(hits + repeats) / served if served else 0.0,
        exact_repeat_rate=repeats / served if served else 0.0,
        k_distribution=k or {},
        outcomes={"hit": hits, "exact_repeat": repeats, "miss": misses},
        pools=[
            router_pb2.PoolStats(pool="large", workers=2, queue_depth=queue, in_flight=1),
            router_pb2.PoolStats(pool="small", workers=1, queue_depth=0, in_flight=0),
        ],
        workers=[
            router_pb2.WorkerStats(
                address="l1:1",
                pool="large",
                healthy=True,
                completed=4,
                mean_service_seconds=100,
                mean_seconds_per_step=2,
            ),
            router_pb2.WorkerStats(address="l2:1", pool="large", healthy=True, profiled_seconds_per_step=1.0),
            router_pb2.WorkerStats(address="s1:1", pool="small", healthy=True, profiled_seconds_per_step=0.4),
        ],
    )


def test_rates_add_up_and_hit_rate_and_k_are_weighted_by_counts() -> None:
    a = router_stats(rate=30.0, served=90, hits=81, k={10: 1.0}, queue=3)  # hit rate 0.9
    b = router_stats(rate=10.0, served=10, hits=1, k={30: 1.0}, queue=2)  # hit rate 0.1
    window = aggregate([a, b], LARGE, SMALL)
    assert window.request_rate_per_min == pytest.approx(40.0)
    assert window.hit_rate == pytest.approx((81 + 1) / 100)
    assert window.k_distribution == pytest.approx({10: 81 / 82, 30: 1 / 82})
    assert window.large.queue_depth == 5
    assert window.large.in_flight == 2
    # both routers see the same workers: the union, not the sum
    assert window.large.ready == 2 and window.small.ready == 1
    assert window.large.profile.seconds_per_step == pytest.approx(2.0)  # measured beats profiled
    assert window.small.profile.seconds_per_step == pytest.approx(0.4)  # profiled when nothing measured


def test_exact_repeats_weighted_and_fallback_profile_without_workers() -> None:
    stats = router_stats(rate=6.0, served=10, hits=2, repeats=3)
    del stats.workers[:]
    window = aggregate([stats], LARGE, SMALL)
    assert window.hit_rate == pytest.approx(0.5)
    assert window.exact_repeat_rate == pytest.approx(0.3)
    assert window.large.ready == 2  # from the pool stats
    assert window.large.profile == LARGE and window.small.profile == SMALL


def test_aggregate_needs_a_router() -> None:
    with pytest.raises(ValueError, match="no router"):
        aggregate([], LARGE, SMALL)


class FakeReader:
    def __init__(self, reading: StatsReading) -> None:
        self.reading = reading

    async def read(self) -> StatsReading:
        return self.reading


class FakeScaler:
    moves_one_at_a_time = False

    def __init__(self, current: Allocation) -> None:
        self.allocation = current
        self.applied: list[Decision] = []

    def current(self) -> Allocation:
        return self.allocation

    def apply(self, decision: Decision) -> Allocation:
        self.applied.append(decision)
        self.allocation = decision.target
        return decision.target


class Follower:
    is_leader = False


def busy_hits() -> router_pb2.RouterStats:
    """Many hits, few misses, the small pool swamped: the policy should move GPUs to it."""
    return router_stats(rate=60.0, served=100, hits=95, k={30: 0.5, 40: 0.5}, queue=0)


@pytest.fixture
def settings() -> MonitorSettings:
    return MonitorSettings(routers=["r1:50051", "r2:50051"], total_gpus=4, policy="modm-b", interval_s=0.01)


async def test_one_round_applies_the_decision_logs_the_reason_and_reports_the_dead_router(
    settings: MonitorSettings, caplog: pytest.LogCaptureFixture
) -> None:
    reading = StatsReading({"r1:50051": busy_hits()}, {"r2:50051": "UNAVAILABLE: connection refused"})
    scaler = FakeScaler(Allocation(3, 1))
    loop = MonitorLoop(settings, FakeReader(reading), scaler, policy_named("modm-b"))
    with caplog.at_level(logging.INFO, logger="modm.services.monitor.loop"):
        round_ = await loop.iterate()
    assert round_.errors == {}
    assert round_.unreachable == {"r2:50051": "UNAVAILABLE: connection refused"}
    assert round_.decision is not None and round_.applied
    assert scaler.applied == [round_.decision]
    assert round_.decision.target.large + round_.decision.target.small <= 4
    decision_logs = [r for r in caplog.records if r.getMessage() == "decision"]
    assert decision_logs and decision_logs[0].reason == round_.decision.reason and round_.decision.reason
    assert decision_logs[0].unreachable_routers == {"r2:50051": "UNAVAILABLE: connection refused"}


async def test_a_follower_decides_but_does_not_apply(settings: MonitorSettings) -> None:
    scaler = FakeScaler(Allocation(3, 1))
    loop = MonitorLoop(settings, FakeReader(StatsReading({"r1:50051": busy_hits()})), scaler, policy_named("modm-b"))
    loop.leader = Follower()
    round_ = await loop.iterate()
    assert round_.decision is not None and not round_.applied and scaler.applied == []


async def test_no_router_answering_is_an_error_not_a_decision(settings: MonitorSettings) -> None:
    scaler = FakeScaler(Allocation(3, 1))
    reading = StatsReading({}, {"r1:50051": "DEADLINE_EXCEEDED", "r2:50051": "UNAVAILABLE"})
    loop = MonitorLoop(settings, FakeReader(reading), scaler, policy_named("slo-aware"))
    round_ = await loop.iterate()
    assert round_.decision is None and scaler.applied == []
    assert round_.errors == {"stats": "no router answered"}
    assert set(round_.unreachable) == {"r1:50051", "r2:50051"}


async def test_budget_defaults_to_the_live_replicas(settings: MonitorSettings) -> None:
    scaler = FakeScaler(Allocation(2, 1))
    s = settings.model_copy(update={"total_gpus": None})
    loop = MonitorLoop(s, FakeReader(StatsReading({"r1:50051": busy_hits()})), scaler, policy_named("modm-b"))
    round_ = await loop.iterate()
    assert round_.decision is not None
    assert round_.decision.target.large + round_.decision.target.small <= 3


def test_settings_match_the_chart_env(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "MODM_MONITOR_HOST": "0.0.0.0",
        "MODM_MONITOR_PORT": "50081",
        "MODM_MONITOR_METRICS_PORT": "9090",
        "MODM_MONITOR_SCALER": "kubernetes",
        "MODM_MONITOR_ROUTERS": "dns:rel-modm-router-headless:50051",
        "MODM_MONITOR_LARGE_DEPLOYMENT": "rel-modm-worker-large",
        "MODM_MONITOR_SMALL_DEPLOYMENT": "rel-modm-worker-small",
        "MODM_MONITOR_LEASE_NAME": "rel-modm-monitor",
        "MODM_MONITOR_TOTAL_GPUS": "8",
        "MODM_MONITOR_NAMESPACE": "serving",
        "MODM_MONITOR_IDENTITY": "monitor-0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = MonitorSettings.load()
    assert s.routers == ["dns:rel-modm-router-headless:50051"]
    assert (s.total_gpus, s.scaler, s.port, s.metrics_port, s.interval_s) == (8, "kubernetes", 50081, 9090, 180.0)


def test_settings_reject_unknown_policy_and_bad_router() -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        MonitorSettings(policy="nope")
    with pytest.raises(ValueError, match="router"):
        MonitorSettings(routers="no-port")


class FakeControl:
    def __init__(self, missing: dict[str, str] | None = None) -> None:
        self.told: list[tuple[bool, str, float]] = []
        self.missing = missing or {}

    async def set_degrade(self, degrade: bool, reason: str, ttl_s: float) -> dict[str, str]:
        self.told.append((degrade, reason, ttl_s))
        return self.missing


class Overloaded:
    """A policy that says: overload, degrade."""

    name = "overloaded"

    def initial_state(self) -> None:
        return None

    def decide(
        self, window: object, current: Allocation, fleet: object, state: object, *, scaler_follows: bool = True
    ) -> Decision:
        return Decision(current, "keep", degrade_misses=True, degrade_reason="overload: the large pool is swamped")


async def test_every_round_tells_the_routers_the_override_with_a_ttl(settings: MonitorSettings) -> None:
    control = FakeControl({"r2:50051": "UNAVAILABLE: connection refused"})
    reading = StatsReading({"r1:50051": busy_hits()})
    loop = MonitorLoop(settings, FakeReader(reading), FakeScaler(Allocation(3, 1)), Overloaded(), control=control)
    round_ = await loop.iterate()
    assert control.told == [(True, "overload: the large pool is swamped", 3 * settings.interval_s)]
    assert round_.degrade_unreachable == {"r2:50051": "UNAVAILABLE: connection refused"}
    assert "r2:50051" in round_.errors["degrade"]
    # a plain decision clears it; a follower tells nobody
    loop.policy = policy_named("modm-b")
    await loop.iterate()
    assert control.told[-1][0] is False
    loop.leader = Follower()
    await loop.iterate()
    assert len(control.told) == 2


class Recording:
    """Keeps the split and records whether the loop said the scaler can follow."""

    name = "recording"

    def __init__(self) -> None:
        self.follows: list[bool] = []
        self.fleets: list[Fleet] = []

    def initial_state(self) -> None:
        return None

    def decide(
        self, window: object, current: Allocation, fleet: Fleet, state: object, *, scaler_follows: bool = True
    ) -> Decision:
        self.follows.append(scaler_follows)
        self.fleets.append(fleet)
        return Decision(current, "keep")


class OneAtATime(FakeScaler):
    moves_one_at_a_time = True


async def test_the_policy_hears_how_the_scaler_moves_gpus(settings: MonitorSettings) -> None:
    reading = FakeReader(StatsReading({"r1:50051": busy_hits()}))
    policy = Recording()
    for scaler in (FakeScaler(Allocation(2, 1)), OneAtATime(Allocation(2, 1))):
        await MonitorLoop(settings, reading, scaler, policy).iterate()
    assert [fleet.moves_one_at_a_time for fleet in policy.fleets] == [False, True]
    assert LocalScaler.moves_one_at_a_time and not KubernetesScaler.moves_one_at_a_time


class PausedScaler(FakeScaler):
    """The Kubernetes scaler's answer when the large Deployment carries modm.io/paused."""

    def apply(self, decision: Decision) -> ScaleOutcome:  # type: ignore[override]
        self.applied.append(decision)
        return ScaleOutcome(
            PoolOutcome("large", "modm-worker-large", "paused", self.allocation.large, decision.target.large),
            PoolOutcome("small", "modm-worker-small", "unchanged", self.allocation.small, decision.target.small),
        )


async def test_the_policy_is_told_when_the_scaler_cannot_follow(settings: MonitorSettings) -> None:
    reading = FakeReader(StatsReading({"r1:50051": busy_hits()}))  # 2 large + 1 small ready
    policy = Recording()
    ready = MonitorLoop(settings, reading, FakeScaler(Allocation(2, 1)), policy)
    await ready.iterate()
    follower = MonitorLoop(settings, reading, FakeScaler(Allocation(2, 1)), policy)
    follower.leader = Follower()
    await follower.iterate()
    loading = MonitorLoop(settings, reading, FakeScaler(Allocation(3, 1)), policy)  # a third large still loading
    await loading.iterate()
    paused = MonitorLoop(settings, reading, PausedScaler(Allocation(2, 1)), policy)
    await paused.iterate()  # the outcome says paused: the next round knows it
    await paused.iterate()
    assert policy.follows == [True, False, False, True, False]


async def test_a_follower_banks_no_integral(settings: MonitorSettings) -> None:
    reading = FakeReader(StatsReading({"r1:50051": busy_hits()}))
    loop = MonitorLoop(settings, reading, FakeScaler(Allocation(2, 1)), policy_named("modm-b"))
    loop.leader = Follower()
    for _ in range(3):
        round_ = await loop.iterate()
    assert round_.decision is not None and isinstance(round_.decision.state, PidState)
    assert round_.decision.state.integral == 0.0
    assert "integral frozen" in round_.decision.reason


def test_a_scale_outcome_says_which_deployments_it_left_alone() -> None:
    def pool(action: str) -> PoolOutcome:
        return PoolOutcome("large", "modm-worker-large", action, 2, 3)  # type: ignore[arg-type]

    small = PoolOutcome("small", "modm-worker-small", "held", 1, 1)
    assert ScaleOutcome(pool("scaled"), small).held_back == "modm-worker-small held"
    assert ScaleOutcome(pool("paused"), small).held_back == "modm-worker-large paused, modm-worker-small held"
    unchanged = PoolOutcome("small", "modm-worker-small", "unchanged", 1, 1)
    assert ScaleOutcome(pool("scaled"), unchanged).held_back is None
    assert ScaleOutcome(pool("manual"), unchanged).held_back == "modm-worker-large manual"


async def test_an_idle_window_keeps_the_split(settings: MonitorSettings) -> None:
    idle = router_stats(rate=0.0, served=0, hits=0)
    for pool in idle.pools:
        pool.in_flight = 0
    scaler = FakeScaler(Allocation(1, 3))
    loop = MonitorLoop(settings, FakeReader(StatsReading({"r1:50051": idle})), scaler, policy_named("modm-b"))
    round_ = await loop.iterate()
    assert round_.decision is not None and round_.decision.target == Allocation(1, 3)
    assert "no request" in round_.decision.reason and scaler.allocation == Allocation(1, 3)


async def test_a_monitor_process_refuses_the_local_scaler() -> None:
    from modm.services.monitor.server import serve

    with pytest.raises(ValueError, match="inside modm up"):
        await serve(MonitorSettings(routers=["r1:50051"], scaler="local"))
