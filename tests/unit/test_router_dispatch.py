"""Per-pool queues, capacity, MoDM's large-takes-hits rule, and the sliding-window statistics."""

from __future__ import annotations

import asyncio

import pytest

from modm.errors import DeadlineExceeded
from modm.services.router.dispatch import Dispatcher, WorkerState
from modm.services.router.policy import Pool, RoutingRules
from modm.services.router.window import RequestRecord, ServiceRecord, SlidingWindow


def worker(address: str, pool: Pool, capacity: int = 1, **kw: object) -> WorkerState:
    return WorkerState(address, pool, capacity, seconds_per_step=0.1, overhead_seconds=0.5, default_steps=10, **kw)  # type: ignore[arg-type]


async def test_slots_never_exceed_capacity_and_queue_in_order() -> None:
    d = Dispatcher(RoutingRules())
    d.upsert(worker("a", Pool.LARGE, capacity=1))
    first = await d.acquire(Pool.LARGE, steps=None, wait_s=1)
    positions: list[int] = []
    second = asyncio.create_task(d.acquire(Pool.LARGE, steps=None, wait_s=5, on_queued=positions.append))
    third = asyncio.create_task(d.acquire(Pool.LARGE, steps=None, wait_s=5, on_queued=positions.append))
    await asyncio.sleep(0)
    assert positions == [0, 1] and not second.done() and d.pool_load(Pool.LARGE).queued == 2
    assert first.in_flight == 1 and first.outstanding_seconds == pytest.approx(1.5)
    d.release(first, 1.5)
    got = await second
    assert got is first and not third.done() and first.in_flight == 1
    d.release(got, 1.5)
    d.release(await third, 1.5)
    assert first.in_flight == 0 and first.outstanding_seconds == 0


async def test_least_outstanding_work_spreads_load() -> None:
    d = Dispatcher(RoutingRules())
    d.upsert(worker("a", Pool.SMALL, capacity=4))
    d.upsert(worker("b", Pool.SMALL, capacity=4))
    got = [await d.acquire(Pool.SMALL, steps=None, wait_s=1) for _ in range(4)]
    assert sorted(w.address for w in got) == ["a", "a", "b", "b"]


async def test_waiting_past_the_deadline_raises_and_leaves_the_queue() -> None:
    d = Dispatcher(RoutingRules())
    d.upsert(worker("a", Pool.LARGE))
    held = await d.acquire(Pool.LARGE, steps=None, wait_s=1)
    with pytest.raises(DeadlineExceeded):
        await d.acquire(Pool.LARGE, steps=None, wait_s=0.05)
    assert d.pool_load(Pool.LARGE).queued == 0
    d.release(held, 1.5)
    assert held.in_flight == 0


async def test_idle_large_worker_takes_a_waiting_hit() -> None:
    d = Dispatcher(RoutingRules(large_takes_hits=True))
    d.upsert(worker("s", Pool.SMALL))
    busy_small = await d.acquire(Pool.SMALL, steps=None, wait_s=1)
    hit = asyncio.create_task(d.acquire(Pool.SMALL, steps=None, strength=0.4, is_hit=True, wait_s=5))
    miss_on_small = asyncio.create_task(d.acquire(Pool.SMALL, steps=None, wait_s=5))
    await asyncio.sleep(0)
    assert not hit.done()
    d.upsert(worker("L", Pool.LARGE))  # a large worker appears, idle, no miss waiting
    got = await hit
    assert got.address == "L"
    await asyncio.sleep(0)
    assert not miss_on_small.done()  # only hits move to the large pool
    d.release(busy_small, 1.5)
    assert (await miss_on_small).address == "s"


async def test_large_does_not_take_hits_when_the_rule_is_off() -> None:
    d = Dispatcher(RoutingRules(large_takes_hits=False))
    d.upsert(worker("s", Pool.SMALL))
    d.upsert(worker("L", Pool.LARGE))
    await d.acquire(Pool.SMALL, steps=None, wait_s=1)
    with pytest.raises(DeadlineExceeded):
        await d.acquire(Pool.SMALL, steps=None, is_hit=True, wait_s=0.05)


async def test_unhealthy_workers_get_no_work_and_refresh_keeps_in_flight() -> None:
    d = Dispatcher(RoutingRules())
    d.upsert(worker("a", Pool.LARGE, capacity=2))
    held = await d.acquire(Pool.LARGE, steps=None, wait_s=1)
    d.mark_unhealthy("a")
    assert d.pool_load(Pool.LARGE).workers == 0
    with pytest.raises(DeadlineExceeded):
        await d.acquire(Pool.LARGE, steps=None, wait_s=0.05)
    d.upsert(worker("a", Pool.LARGE, capacity=2))  # discovery saw it healthy again
    assert d.workers["a"].in_flight == 1 and d.workers["a"].failures == 1
    d.release(held, 1.5)


def test_window_rates_hit_rate_and_k_distribution() -> None:
    window = SlidingWindow(60.0, started_at=0.0)
    window.record_request(RequestRecord(1.0, "miss", total_steps=50))
    window.record_request(RequestRecord(2.0, "hit", 30, 50))
    window.record_request(RequestRecord(3.0, "hit", 10, 50, retries=1))
    window.record_request(RequestRecord(4.0, "exact_repeat", 0, 50))
    window.record_request(RequestRecord(5.0, "failed"))
    window.record_request(RequestRecord(6.0, "miss", degraded=True))
    snap = window.snapshot(now=30.0)
    assert snap.requests == 6
    assert snap.request_rate_per_min == pytest.approx(12.0)  # 6 in the 30 s observed so far
    assert snap.hit_rate == pytest.approx(3 / 5)
    assert snap.exact_repeat_rate == pytest.approx(1 / 5)
    assert snap.k_distribution == {10: 0.5, 30: 0.5}
    assert snap.kappa == pytest.approx(((1 - 0.6) + (1 - 0.2)) / 2)
    assert snap.outcomes == {"miss": 2, "hit": 2, "exact_repeat": 1, "failed": 1}
    assert (snap.degraded, snap.retries) == (1, 1)
    later = window.snapshot(now=63.5)  # records before 3.5 fall out
    assert later.requests == 3 and later.request_rate_per_min == pytest.approx(3.0)


def test_window_per_worker_service_time() -> None:
    window = SlidingWindow(10.0, started_at=0.0)
    window.record_service(ServiceRecord(1.0, "w", 2.0, 20))
    window.record_service(ServiceRecord(2.0, "w", 4.0, 20))
    window.record_service(ServiceRecord(3.0, "w", 9.0, 0, failed=True))
    stats = window.snapshot(5.0).workers["w"]
    assert (stats.completed, stats.failures) == (2, 1)
    assert stats.mean_service_seconds == pytest.approx(3.0)
    assert stats.mean_seconds_per_step == pytest.approx(0.15)
    assert window.snapshot(20.0).workers == {}


def test_empty_window() -> None:
    snap = SlidingWindow(180.0, 0.0).snapshot(1.0)
    assert (snap.requests, snap.hit_rate, snap.kappa, snap.k_distribution) == (0, 0.0, 0.0, {})


async def test_a_refresh_during_a_request_does_not_leak_its_slot() -> None:
    d = Dispatcher(RoutingRules())
    d.upsert(worker("a", Pool.LARGE, capacity=1))
    held = await d.acquire(Pool.LARGE, steps=None, wait_s=1)
    d.upsert(worker("a", Pool.LARGE, capacity=1, model_id="refreshed"))  # discovery, mid-request
    d.release(held, held.outstanding_seconds)
    assert d.workers["a"].in_flight == 0 and d.workers["a"].model_id == "refreshed"
    again = await d.acquire(Pool.LARGE, steps=None, wait_s=0.1)
    assert again is d.workers["a"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def serving_again(d: Dispatcher, address: str) -> None:
    """What discovery does each round for a worker whose probe says SERVING."""
    d.upsert(worker(address, d.workers[address].pool, capacity=d.workers[address].capacity))


async def test_repeated_failures_eject_a_serving_worker_until_the_cooldown_passes() -> None:
    clock = FakeClock()
    d = Dispatcher(RoutingRules(), clock, eject_after=2, cooldown_s=5, max_cooldown_s=12)
    d.upsert(worker("bad", Pool.LARGE, capacity=2))
    d.upsert(worker("good", Pool.LARGE, capacity=2))
    d.mark_unhealthy("bad")
    serving_again(d, "bad")
    assert d.ejected() == [] and d.pool_load(Pool.LARGE).workers == 2  # one failure: the probe vouches for it
    d.mark_unhealthy("bad")
    serving_again(d, "bad")
    assert d.ejected() == ["bad"] and d.pool_load(Pool.LARGE).workers == 1
    got = [await d.acquire(Pool.LARGE, steps=None, wait_s=1) for _ in range(2)]
    assert {w.address for w in got} == {"good"}  # never the ejected one, free slots or not
    clock.now += 5
    assert d.ejected() == [] and d.pool_load(Pool.LARGE).workers == 2
    assert (await d.acquire(Pool.LARGE, steps=None, wait_s=1)).address == "bad"  # on probation


async def test_a_failure_on_probation_doubles_the_cooldown_and_a_success_clears_it() -> None:
    clock = FakeClock()
    d = Dispatcher(RoutingRules(), clock, eject_after=2, cooldown_s=5, max_cooldown_s=12)
    d.upsert(worker("w", Pool.SMALL))
    d.upsert(worker("peer", Pool.SMALL))
    for _ in range(2):
        d.mark_unhealthy("w")
    serving_again(d, "w")
    assert d.workers["w"].ejected_until == 105
    clock.now = 105
    d.mark_unhealthy("w")  # the first failure after the cool-down ejects it again, for longer
    assert d.workers["w"].ejected_until == 115
    clock.now = 115
    d.mark_unhealthy("w")
    assert d.workers["w"].ejected_until == 127  # capped at max_cooldown_s
    clock.now = 127
    serving_again(d, "w")
    d.mark_succeeded("w")
    d.mark_unhealthy("w")
    serving_again(d, "w")
    assert d.ejected() == [] and d.workers["w"].failures == 5


async def test_a_waiting_request_gets_the_worker_when_its_cooldown_ends() -> None:
    clock = FakeClock()
    d = Dispatcher(RoutingRules(), clock, eject_after=1, cooldown_s=5)
    d.upsert(worker("w", Pool.LARGE))
    d.upsert(worker("busy", Pool.LARGE))
    held = await d.acquire(Pool.LARGE, steps=None, wait_s=1)
    assert held.address == "busy"
    d.mark_unhealthy("w")
    serving_again(d, "w")
    waiting = asyncio.create_task(d.acquire(Pool.LARGE, steps=None, wait_s=5))
    await asyncio.sleep(0)
    assert not waiting.done()
    clock.now += 5
    serving_again(d, "w")  # the next discovery round pumps the queue
    assert (await waiting).address == "w"


async def test_the_last_usable_worker_of_a_pool_is_never_ejected() -> None:
    clock = FakeClock()
    d = Dispatcher(RoutingRules(), clock, eject_after=1, cooldown_s=5)
    d.upsert(worker("only", Pool.LARGE))
    d.upsert(worker("small", Pool.SMALL))  # another pool's worker does not count
    for _ in range(3):
        d.mark_unhealthy("only")
        serving_again(d, "only")
    assert d.ejected() == [] and d.pool_load(Pool.LARGE).workers == 1
