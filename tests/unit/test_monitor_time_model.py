"""The monitor's time model, from the workers' Info through the router's Stats to the policies:
a job costs overhead + the share of its model's own default steps it runs x seconds per step, a
GPU is as many servers as the jobs it batches, and a GPU moving pools serves nothing for the
joined model's reported load time."""

from __future__ import annotations

import pytest

from modm.services.monitor.modm_reference import proportional_target, quality_first_target
from modm.services.monitor.observations import Allocation, Decision, Fleet, PoolProfile, Window
from modm.services.monitor.policy import SloAwarePolicy
from modm.services.monitor.stats_client import aggregate
from modm.services.router.discovery import Discovery
from modm.services.router.dispatch import Dispatcher
from modm.services.router.engine import RouterEngine
from modm.services.router.policy import Pool
from modm.services.router.servicer import RouterServicer
from modm.services.router.settings import RouterSettings
from modm.v1 import router_pb2, worker_pb2

# Warm-up profiles: SD3 28 steps of 1.0 s after 4.0 s of text encoding and decoding (a miss
# 32 s); SANA-Sprint 2 steps of 0.5 s after 1.0 s (a full run 2 s).
SD3 = {"default_steps": 28, "profiled_seconds_per_step": 1.0, "profiled_overhead_seconds": 4.0}
SANA_SPRINT = {"default_steps": 2, "profiled_seconds_per_step": 0.5, "profiled_overhead_seconds": 1.0}
FALLBACK = PoolProfile(91.5 / 50)  # the settings' default: MoDM's 50-step runs
K = {25: 1.0}  # every hit skips 25 of 50: kappa 0.5, so a hit runs 14 SD3 steps or 1 SANA-Sprint step


def worker(
    address: str,
    pool: str,
    profile: dict[str, float],
    *,
    jobs: int = 0,
    steps_run: float = 0.0,
    slowdown: float = 1.0,
    capacity: int = 1,
    load_seconds: float = 0.0,
) -> router_pb2.WorkerStats:
    """A worker's Stats: `jobs` completed in the window, each running `steps_run` steps and taking
    `slowdown` x what its profile says (as the router measures: overhead folded into the step)."""
    took = slowdown * (profile["profiled_overhead_seconds"] + steps_run * profile["profiled_seconds_per_step"])
    return router_pb2.WorkerStats(
        address=address,
        pool=pool,
        healthy=True,
        capacity=capacity,
        completed=jobs,
        mean_service_seconds=took if jobs else 0.0,
        mean_seconds_per_step=took / steps_run if jobs else 0.0,
        load_seconds=load_seconds,
        **profile,
    )


def read(*workers: router_pb2.WorkerStats, rate: float = 30.0, hit_rate: float = 0.7) -> Window:
    """One router's Stats over 180 s (no exact repeats), folded as the monitor folds them."""
    served = round(rate * 3)
    hits = round(served * hit_rate)
    stats = router_pb2.RouterStats(
        window_seconds=180.0,
        requests=served,
        request_rate_per_min=rate,
        hit_rate=hits / served,
        k_distribution=K,
        outcomes={"hit": hits, "miss": served - hits},
        workers=list(workers),
    )
    return aggregate([stats], FALLBACK, FALLBACK)


def sd3_and_sana_sprint(large: int = 4, small: int = 4, **large_kw: float) -> list[router_pb2.WorkerStats]:
    """SD3 workers that served misses (28 steps) and SANA-Sprint workers that served hits (1 step)."""
    return [worker(f"l{i}:1", "large", SD3, jobs=10, steps_run=28, **large_kw) for i in range(large)] + [
        worker(f"s{i}:1", "small", SANA_SPRINT, jobs=30, steps_run=1) for i in range(small)
    ]


def test_an_sd3_miss_is_priced_at_overhead_plus_its_28_steps() -> None:
    # The router measured 32 s for 28 steps: 1.143 s a step with the overhead folded in, which
    # priced a miss at 50 x 1.143 = 57.1 s. It costs 4 + 28 x 1.0 = 32 s; a hit 4 + 14 x 1.0 = 18 s.
    large = read(*sd3_and_sana_sprint()).large.profile
    assert large.full_run_seconds == pytest.approx(32.0)
    assert large.job_seconds(0.5) == pytest.approx(18.0)
    assert (large.steps, large.overhead_seconds, large.seconds_per_step) == (28, pytest.approx(4.0), pytest.approx(1.0))


def test_a_two_step_sana_sprint_pool_is_priced_by_its_own_steps() -> None:
    # Hits ran 1 step in 1.5 s: measured 1.5 s a step, once priced at 50 x 1.5 = 75 s a full
    # run and 37.5 s a hit. A full run is 1 + 2 x 0.5 = 2 s, a hit at kappa 0.5 is 1 + 1 x 0.5 = 1.5 s.
    window = read(*sd3_and_sana_sprint())
    small = window.small.profile
    assert window.kappa == pytest.approx(0.5)
    assert small.steps == 2
    assert small.full_run_seconds == pytest.approx(2.0)
    assert small.job_seconds(window.kappa) == pytest.approx(1.5)


def test_measured_service_scales_the_profile_without_folding_the_overhead() -> None:
    # Jobs measured 1.5x their profile (batches, a shared GPU): both parts scale, steps stay 28.
    large = read(*sd3_and_sana_sprint(slowdown=1.5)).large.profile
    assert large.full_run_seconds == pytest.approx(48.0)
    assert (large.overhead_seconds, large.seconds_per_step) == (pytest.approx(6.0), pytest.approx(1.5))


def test_the_policies_decide_from_the_right_prices() -> None:
    """30 req/min at h = 0.7, kappa 0.5, on 8 GPUs split 4 large + 4 small, SLO 300 s.

    Priced right: misses 9/min = 0.15/s x 32 s = 4.8 busy GPUs, more than the 4 large (120%);
    hits 21/min = 0.35/s x 1.5 s = 0.53 busy GPUs on the small model. 7 large + 1 small serves
    both (69% and 53%), so the default moves there at once. Variant B: misses are 0.3 x 32 /
    (0.3 x 32 + 0.7 x 1.5) = 0.90 of the GPU time -> 7 of 8. Variant A: n0 = ceil(9 / 1.875) = 5
    and the derated spare for hits (15.75 full runs/min) holds up to n = 7.

    Priced the old way (50 steps x measured seconds per step): a miss 57.1 s, a small-pool hit
    37.5 s, so misses alone needed 8.6 GPUs and hits 13.1: every split looked 100% over the SLO
    and the default kept 4 + 4, leaving the misses on an overloaded large pool; variant A called
    the fleet overloaded (8 large) and variant B wanted 3 large (misses 0.40 of the work).
    """
    window = read(*sd3_and_sana_sprint())
    fleet, current = Fleet(8, slo_seconds=300), Allocation(4, 4)
    decision = SloAwarePolicy().decide(window, current, fleet, None)
    assert decision.target == Allocation(7, 1) and not decision.degrade_misses
    assert "(urgent)" in decision.reason
    assert decision.prediction is not None and decision.prediction.over_slo_share < 0.05
    assert proportional_target(window, 8)[0] == 7
    assert quality_first_target(window, 8)[0] == 7


def test_batch_capacity_counts_as_servers() -> None:
    """The same load on SD3 workers that take 2 requests at once, each measured at 48 s (a batch
    of 2 runs 1.5x as long as one image): a GPU serves 2 / 48 s, so misses need 0.15 x 24 = 3.6
    GPUs and 4 large already serve them (90%): the default keeps 4 + 4, where one-at-a-time
    workers (0.15 x 32 = 4.8 GPUs) need 7 large."""
    window = read(*sd3_and_sana_sprint(slowdown=1.5, capacity=2))
    assert window.large.profile.capacity == 2
    assert window.large.profile.gpu_seconds() == pytest.approx(24.0)
    decision = SloAwarePolicy().decide(window, Allocation(4, 4), Fleet(8, slo_seconds=300), None)
    assert decision.target == Allocation(4, 4)


def test_the_switch_cost_follows_the_reported_load_time() -> None:
    """The load above (4.8 GPUs of misses on 4 large): when SD3 loads in 45 s, moving 3 GPUs to
    the large pool pays off; when it takes 5000 s, GPUs that join never serve within the 600 s
    horizon, so the split stays and the small pool takes the misses the large one cannot."""
    fleet = Fleet(8, slo_seconds=300, switch_seconds=30.0)

    def decide(load_seconds: float) -> Decision:
        window = read(*sd3_and_sana_sprint(load_seconds=load_seconds))
        assert window.large.profile.load_seconds == load_seconds
        return SloAwarePolicy().decide(window, Allocation(4, 4), fleet, None)

    quick, slow = decide(45.0), decide(5000.0)
    assert quick.target == Allocation(7, 1) and "3 model load(s) of 45s" in quick.reason
    assert slow.target == Allocation(4, 4) and slow.degrade_misses
    # With no load time reported, the fleet's assumed one is the switch cost.
    assert fleet.load_seconds(read(*sd3_and_sana_sprint()).large.profile) == 30.0


class InfoOnly:
    """A worker that only answers its health probe and Info."""

    def __init__(self, info: worker_pb2.WorkerInfo) -> None:
        self._info = info

    async def serving(self, timeout_s: float) -> bool:
        return True

    async def info(self, timeout_s: float) -> worker_pb2.WorkerInfo:
        return self._info

    async def close(self) -> None:
        pass


async def test_stats_pass_on_what_each_worker_reports() -> None:
    info = worker_pb2.WorkerInfo(
        model_id="sd3", family="sd3", role=worker_pb2.WORKER_ROLE_LARGE, max_batch_size=2, default_steps=28,
        seconds_per_step=1.0, overhead_seconds=4.0, load_seconds=41.5, default_width=1024, default_height=1024,
    )  # fmt: skip
    settings = RouterSettings(large_workers=["l0:1"])
    dispatcher = Dispatcher(settings.rules())
    discovery = Discovery({Pool.LARGE: ["l0:1"]}, dispatcher, interval_s=1, capacity_cap=None,
                          make_client=lambda address: InfoOnly(info))  # type: ignore[arg-type,return-value]  # fmt: skip
    await discovery.refresh_once()
    servicer = RouterServicer(RouterEngine(settings, dispatcher, discovery, None))
    stats = await servicer.Stats(router_pb2.RouterStatsRequest(), None)  # type: ignore[arg-type]
    (reported,) = stats.workers
    assert (reported.default_steps, reported.capacity, reported.load_seconds) == (28, 2, 41.5)
    large = aggregate([stats], FALLBACK, FALLBACK).large.profile
    assert (large.full_run_seconds, large.capacity, large.load_seconds) == (32.0, 2, 41.5)
