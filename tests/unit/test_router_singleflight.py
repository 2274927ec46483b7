"""Single-flight on its own: waiters share the leader's work, the leader's client leaving does not
stop it, nobody waiting does, and late or surplus waiters run on their own."""

from __future__ import annotations

import asyncio

import pytest

from modm.services.router.singleflight import SingleFlight


class Work:
    """A piece of work that runs until released, counting its runs and whether it was cancelled."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.runs = 0
        self.cancelled = False

    async def __call__(self) -> str:
        self.runs += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return f"image {self.runs}"


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def follow(flights: SingleFlight[str, str], key: str, deadline: float) -> str | None:
    flight = flights.joinable(key, deadline)
    return None if flight is None else await flights.wait(key, flight)


async def test_waiters_get_the_leaders_result_from_one_run() -> None:
    flights: SingleFlight[str, str] = SingleFlight(max_waiters=8)
    work = Work()
    leader = asyncio.create_task(flights.lead("k", work(), done_at=10.0))
    await settle()
    waiters = [asyncio.create_task(follow(flights, "k", deadline=20.0)) for _ in range(5)]
    await settle()
    work.release.set()
    assert await leader == "image 1"
    assert await asyncio.gather(*waiters) == ["image 1"] * 5
    assert work.runs == 1
    await settle()
    assert flights.joinable("k", 20.0) is None  # a finished flight is forgotten


async def test_the_work_goes_on_when_the_leader_leaves_and_stops_when_nobody_waits() -> None:
    flights: SingleFlight[str, str] = SingleFlight(max_waiters=8)
    work = Work()
    leader = asyncio.create_task(flights.lead("k", work(), done_at=10.0))
    await settle()
    waiter = asyncio.create_task(follow(flights, "k", deadline=20.0))
    await settle()
    leader.cancel()
    await settle()
    assert not work.cancelled
    work.release.set()
    assert await waiter == "image 1"

    lonely = Work()
    leader = asyncio.create_task(flights.lead("k2", lonely(), done_at=10.0))
    await settle()
    waiter = asyncio.create_task(follow(flights, "k2", deadline=20.0))
    await settle()
    leader.cancel()
    waiter.cancel()
    await settle()
    assert lonely.cancelled and flights.joinable("k2", 20.0) is None


async def test_a_waiter_that_cannot_wait_long_enough_or_finds_no_room_runs_alone() -> None:
    flights: SingleFlight[str, str] = SingleFlight(max_waiters=1)
    work = Work()
    leader = asyncio.create_task(flights.lead("k", work(), done_at=10.0))
    await settle()
    assert flights.joinable("k", deadline=9.0) is None  # its deadline is before the leader's estimate
    first = asyncio.create_task(follow(flights, "k", deadline=20.0))
    await settle()
    assert flights.joinable("k", deadline=20.0) is None  # one waiter is the cap
    alone = Work()
    second = asyncio.create_task(flights.lead("k", alone(), done_at=10.0))  # runs, leads nothing
    await settle()
    work.release.set()
    alone.release.set()
    assert (await leader, await first, await second) == ("image 1", "image 1", "image 1")
    assert work.runs == 1 and alone.runs == 1


async def test_waiters_get_the_leaders_error() -> None:
    flights: SingleFlight[str, str] = SingleFlight(max_waiters=8)

    async def fails() -> str:
        await asyncio.sleep(0)
        raise ValueError("out of memory")

    leader = asyncio.create_task(flights.lead("k", fails(), done_at=10.0))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(follow(flights, "k", deadline=20.0))
    for task in (leader, waiter):
        with pytest.raises(ValueError, match="out of memory"):
            await task


async def test_a_finished_flight_lingers_until_its_output_is_cached() -> None:
    flights: SingleFlight[str, str] = SingleFlight(max_waiters=4)
    cached: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def work() -> str:
        flights.linger("k", cached)
        return "image"

    assert await flights.lead("k", work(), done_at=0.0) == "image"
    flight = flights.joinable("k", deadline=-1.0)  # done: any deadline may wait for it
    assert flight is not None and await flights.wait("k", flight) == "image"
    cached.set_result(None)
    await asyncio.sleep(0)
    assert flights.joinable("k", deadline=100.0) is None


async def test_a_failed_flight_does_not_linger() -> None:
    flights: SingleFlight[str, str] = SingleFlight(max_waiters=4)
    cached: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def work() -> str:
        flights.linger("k", cached)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await flights.lead("k", work(), done_at=0.0)
    assert flights.joinable("k", deadline=100.0) is None
    cached.cancel()
