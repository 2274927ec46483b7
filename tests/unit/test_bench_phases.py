"""A closed loop's phases: the warm-up lasts its requests and until the pools' split has held, at
most its timeout; the measured phase sends its requests and stops; the slots the monitor moved are
counted from the router's Stats samples."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from modm.bench.phases import Gate, Phases, settled, split_of, stable_since, switches
from modm.bench.records import StatsSample
from modm.bench.replay import ReplayOptions, replay
from modm.bench.traces import TraceRequest


def sample(at: float, pools: dict[str, str], unhealthy: tuple[str, ...] = ()) -> StatsSample:
    """A Stats sample listing these workers (address -> pool)."""
    workers = [{"address": a, "pool": p, "healthy": a not in unhealthy} for a, p in pools.items()]
    return StatsSample(at, 0.0, 0.0, 0.0, {}, workers)


EVEN = {"w0": "large", "w1": "large", "w2": "small", "w3": "small"}
MOVED = {"w0": "large", "w1": "large", "w2": "large", "w3": "small"}


def test_the_split_is_stable_since_its_last_change_and_a_draining_slot_is_a_change() -> None:
    samples = [sample(0, EVEN), sample(5, EVEN, unhealthy=("w2",)), sample(10, MOVED), sample(15, MOVED)]
    assert split_of(samples[1]) == (("w0", "large"), ("w1", "large"), ("w3", "small"))
    assert stable_since(samples) == 10 and stable_since([]) is None
    assert settled(samples, now=20, settle_s=10, workers=4)
    assert not settled(samples, now=19, settle_s=10, workers=4)
    assert not settled(samples[:2], now=60, settle_s=10, workers=4)  # a slot is still switching
    assert settled([], now=0, settle_s=0)  # nothing to wait for


def test_switches_are_the_slots_seen_serving_in_the_other_pool() -> None:
    back = dict(EVEN)
    samples = [sample(0, EVEN), sample(5, EVEN, unhealthy=("w2",)), sample(10, MOVED), sample(20, back)]
    assert switches(samples) == [10, 20]
    assert switches([sample(0, EVEN), sample(5, EVEN)]) == []


def test_the_gate_warms_up_until_the_split_has_held_then_measures_its_requests() -> None:
    gate = Gate(Phases(warmup=2, settle_s=10, measure=3, workers=4))
    moving = [sample(0, EVEN), sample(8, MOVED)]
    steady = [*moving, sample(20, MOVED)]
    assert [gate.next(1, moving), gate.next(2, moving), gate.next(9, moving)] == [False, False, False]
    assert gate.measure_start is None  # two sent, but the split changed at 8
    assert [gate.next(18, steady), gate.next(19, steady), gate.next(20, steady)] == [True, True, True]
    assert gate.next(21, steady) is None and gate.next(22, steady) is None
    assert (gate.measure_start, gate.settled, gate.sent, gate.measured) == (18, True, 6, 3)


def test_a_warmup_that_never_settles_measures_after_its_timeout_and_says_so() -> None:
    gate = Gate(Phases(warmup=1, settle_s=10, settle_timeout_s=30, workers=4))
    flapping = [sample(0, EVEN), sample(25, MOVED)]
    assert gate.next(1, flapping) is False and gate.next(29, flapping) is False
    assert gate.next(30, flapping) is True and (gate.measure_start, gate.settled) == (30, False)


def test_without_phases_every_request_is_measured() -> None:
    gate = Gate(Phases())
    assert all(gate.next(float(i), []) for i in range(5)) and gate.measure_start == 0.0


class TwoRouters:
    """Fake routers: each answers at once and names itself; Stats lists one worker, which each
    router says it gave two requests."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent = 0

    async def __aenter__(self) -> TwoRouters:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def stats(self, **_: Any) -> dict[str, Any]:
        worker = {"address": "w0", "pool": "large", "healthy": True, "in_flight": 2, "capacity": 4}
        return {"workers": [worker], "pools": []}

    async def generate(self, prompt: str, **_: Any) -> Any:
        self.sent += 1
        for _ in range(3):
            await asyncio.sleep(0)
        return SimpleNamespace(
            outcome="miss", pool="large", similarity=0.0, skipped_steps=0, total_steps=0, strength=1.0,
            steps_run=28, degraded=False, large_took_hit=False, attempts=1, timings={}, worker=self.name,
        )  # fmt: skip


async def test_a_closed_loop_marks_its_warmup_and_spreads_its_clients_over_the_routers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    routers = {"a:1": TwoRouters("a"), "b:1": TwoRouters("b")}
    monkeypatch.setattr("modm.client.AsyncClient", lambda endpoint, **_: routers[endpoint])
    requests = [TraceRequest(float(i), f"prompt {i}") for i in range(40)]
    options = ReplayOptions("modm", stats_interval_s=60, concurrency=4, phases=Phases(warmup=10, measure=20))
    run = await replay(["a:1", "b:1"], requests, None, options)
    assert len(run.records) == 30 and [r.index for r in run.records] == list(range(30))
    assert sum(r.warmup for r in run.records) == 10 and len(run.measured) == 20
    assert routers["a:1"].sent == routers["b:1"].sent == 15  # clients 0 and 2 on a, 1 and 3 on b
    assert run.info.routers == 2 and run.info.endpoint == "a:1,b:1" and run.info.measure_start_s >= 0
    assert run.samples and run.samples[0].fleet_in_flight == {"w0": 4}  # both routers' requests
