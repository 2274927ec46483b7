"""Single-flight: identical requests in the air at once share one generation.

The first request for a key leads: its work runs in a task of its own, so the leader's client
going away does not stop it while others wait for it. Later requests for the key join when the
flight can answer them in time (their deadline is not before the leader's estimated finish) and
there is room (at most `max_waiters` waiting); otherwise they run on their own. The work is
cancelled only when nobody waits for it any more. A finished flight may `linger` until its
output is cached, so a request arriving in between is answered from it instead of generating
again. Knows nothing of images or gRPC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(eq=False)
class Flight(Generic[V]):
    """One generation in the air: its task, when it should finish, and who waits for it."""

    task: asyncio.Task[V]
    done_at: float  # the leader's estimate, on the caller's clock
    callers: int = 0  # the leader (while its client stays) and the waiters
    waiters: int = 0
    lingers_until: asyncio.Future[Any] | None = None


class SingleFlight(Generic[K, V]):
    def __init__(self, max_waiters: int) -> None:
        self.max_waiters = max_waiters
        self._flights: dict[K, Flight[V]] = {}

    def joinable(self, key: K, deadline: float) -> Flight[V] | None:
        """The flight for `key` if a request with this deadline may wait for it, else None."""
        flight = self._flights.get(key)
        if flight is None or flight.waiters >= self.max_waiters:
            return None
        if not flight.task.done() and deadline < flight.done_at:
            return None
        return flight

    async def lead(self, key: K, work: Coroutine[Any, Any, V], done_at: float) -> V:
        """Run `work` as the flight for `key`; when a flight for it is already in the air (this
        request chose not to wait for it), run it on its own."""
        if key in self._flights:
            return await work
        flight = Flight(asyncio.create_task(work), done_at)
        self._flights[key] = flight
        flight.task.add_done_callback(lambda _: self._settle(key, flight))
        return await self._follow(key, flight)

    def linger(self, key: K, until: asyncio.Future[Any]) -> None:
        """Keep the flight for `key` joinable after its work succeeds, until `until` is done (the
        insert of its output into the cache: a lookup before then would miss and generate again)."""
        flight = self._flights.get(key)
        if flight is not None:
            flight.lingers_until = until

    async def wait(self, key: K, flight: Flight[V]) -> V:
        """The result (or the error) of a flight `joinable` gave."""
        flight.waiters += 1
        try:
            return await self._follow(key, flight)
        finally:
            flight.waiters -= 1

    async def _follow(self, key: K, flight: Flight[V]) -> V:
        """A caller that is cancelled leaves; the last one to leave cancels the work."""
        flight.callers += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.callers -= 1
            if flight.callers == 0 and not flight.task.done():
                self._forget(key, flight)  # nobody may join work that is being cancelled
                flight.task.cancel()

    def _settle(self, key: K, flight: Flight[V]) -> None:
        """The work ended: forget the flight now, or once what it lingers for is done."""
        until = flight.lingers_until
        failed = flight.task.cancelled() or flight.task.exception() is not None
        if until is None or until.done() or failed:
            self._forget(key, flight)
        else:
            until.add_done_callback(lambda _: self._forget(key, flight))

    def _forget(self, key: K, flight: Flight[V]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
