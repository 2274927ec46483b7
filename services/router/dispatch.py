"""Per-pool queues and the hand-out of worker slots (asyncio, no gRPC).

A request that needs a worker takes a `Ticket` for a pool. Tickets are served in order; each
gets the worker with the least outstanding work that has a free slot (`policy.choose_worker`),
so no worker is ever given more than its advertised capacity. With `large_takes_hits`, a large
worker that is idle while no miss waits takes the oldest waiting hit from the small queue
(MoDM: large-model GPUs with nothing better to do serve hits).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from modm.errors import DeadlineExceeded
from modm.services.router.policy import (
    Pool,
    PoolLoad,
    RoutingRules,
    WorkerLoad,
    choose_worker,
)


@dataclass
class WorkerState:
    """A worker found by discovery, with what its Info said and what the router gave it."""

    address: str
    pool: Pool
    capacity: int
    seconds_per_step: float = 0.0
    overhead_seconds: float = 0.0
    default_steps: int = 0
    default_width: int = 0
    default_height: int = 0
    default_guidance_scale: float | None = None
    size_multiple: int = 8
    model_id: str = ""
    family: str = ""
    healthy: bool = True
    in_flight: int = 0
    outstanding_seconds: float = 0.0
    failures: int = 0

    def load(self) -> WorkerLoad:
        return WorkerLoad(self.address, self.in_flight, self.capacity, self.outstanding_seconds, self.healthy)

    def job_seconds(self, steps: int | None, strength: float = 1.0) -> float:
        run = (steps or self.default_steps or 1) * strength
        return self.overhead_seconds + max(1.0, run) * self.seconds_per_step


# What discovery refreshes; in_flight, outstanding_seconds and failures belong to the dispatcher.
FACTS = (
    "pool",
    "capacity",
    "seconds_per_step",
    "overhead_seconds",
    "default_steps",
    "default_width",
    "default_height",
    "default_guidance_scale",
    "size_multiple",
    "model_id",
    "family",
    "healthy",
)


@dataclass(eq=False)
class Ticket:
    pool: Pool
    steps: int | None
    strength: float
    is_hit: bool
    exclude: frozenset[str]
    enqueued_at: float
    future: asyncio.Future[WorkerState] = field(repr=False, default_factory=lambda: _new_future())
    cost: float = 0.0  # estimated seconds, set when a worker is assigned


def _new_future() -> asyncio.Future[WorkerState]:
    return asyncio.get_running_loop().create_future()


class Dispatcher:
    def __init__(self, rules: RoutingRules, clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = rules
        self._clock = clock
        self.workers: dict[str, WorkerState] = {}
        self.queues: dict[Pool, deque[Ticket]] = {pool: deque() for pool in Pool}

    # --- membership ---------------------------------------------------------------------

    def upsert(self, state: WorkerState) -> None:
        """Add a worker or refresh its facts in place: requests in flight hold the same object,
        so what they give back on release lands where it was taken."""
        current = self.workers.get(state.address)
        if current is None:
            self.workers[state.address] = state
        else:
            for name in FACTS:
                setattr(current, name, getattr(state, name))
        self._pump()

    def remove(self, address: str) -> None:
        self.workers.pop(address, None)

    def mark_unhealthy(self, address: str) -> None:
        worker = self.workers.get(address)
        if worker is not None:
            worker.healthy = False
            worker.failures += 1

    def in_pool(self, pool: Pool) -> list[WorkerState]:
        return [w for w in self.workers.values() if w.pool is pool]

    # --- loads --------------------------------------------------------------------------

    def pool_load(self, pool: Pool) -> PoolLoad:
        healthy = [w for w in self.in_pool(pool) if w.healthy]
        if not healthy:
            return _empty(len(self.queues[pool]))
        n = len(healthy)
        queued = self.queues[pool]
        reference = healthy[0]
        queued_work = sum(reference.job_seconds(t.steps, t.strength) for t in queued)
        return PoolLoad(
            workers=n,
            capacity=sum(w.capacity for w in healthy),
            in_flight=sum(w.in_flight for w in healthy),
            queued=len(queued),
            outstanding_seconds=sum(w.outstanding_seconds for w in healthy) + queued_work,
            idle_workers=sum(1 for w in healthy if w.in_flight == 0),
            seconds_per_step=sum(w.seconds_per_step for w in healthy) / n,
            overhead_seconds=sum(w.overhead_seconds for w in healthy) / n,
            default_steps=reference.default_steps,
        )

    # --- tickets ------------------------------------------------------------------------

    async def acquire(
        self,
        pool: Pool,
        *,
        steps: int | None,
        strength: float = 1.0,
        is_hit: bool = False,
        exclude: Iterable[str] = (),
        wait_s: float,
        on_queued: Callable[[int], None] | None = None,
    ) -> WorkerState:
        """Wait for a worker slot; DeadlineExceeded when `wait_s` passes first."""
        ticket = Ticket(pool, steps, strength, is_hit, frozenset(exclude), self._clock())
        self.queues[pool].append(ticket)
        if on_queued is not None:
            on_queued(len(self.queues[pool]) - 1)
        self._pump()
        try:
            return await asyncio.wait_for(asyncio.shield(ticket.future), timeout=max(0.0, wait_s))
        except TimeoutError:
            if ticket.future.done() and not ticket.future.cancelled():
                self.release(ticket.future.result(), ticket.cost)  # assigned as time ran out
            self._drop(ticket)
            raise DeadlineExceeded(f"no {pool} worker became free before the deadline") from None
        except asyncio.CancelledError:
            if ticket.future.done() and not ticket.future.cancelled():
                self.release(ticket.future.result(), ticket.cost)
            self._drop(ticket)
            raise

    def release(self, worker: WorkerState, cost: float) -> None:
        worker.in_flight = max(0, worker.in_flight - 1)
        worker.outstanding_seconds = max(0.0, worker.outstanding_seconds - cost)
        self._pump()

    def _drop(self, ticket: Ticket) -> None:
        for queue in self.queues.values():
            if ticket in queue:
                queue.remove(ticket)
        if not ticket.future.done():
            ticket.future.cancel()

    def _assign(self, ticket: Ticket, worker: WorkerState) -> None:
        ticket.cost = worker.job_seconds(ticket.steps, ticket.strength)
        worker.in_flight += 1
        worker.outstanding_seconds += ticket.cost
        ticket.future.set_result(worker)

    def _pump(self) -> None:
        """Hand free slots to waiting tickets, oldest first, per pool."""
        for pool, queue in self.queues.items():
            while queue:
                ticket = queue[0]
                if ticket.future.done():  # cancelled by its waiter
                    queue.popleft()
                    continue
                key = choose_worker((w.load() for w in self.in_pool(pool)), ticket.exclude)
                if key is None:
                    break
                queue.popleft()
                self._assign(ticket, self.workers[key])
        if self.rules.large_takes_hits and not self.queues[Pool.LARGE]:
            self._large_takes_hits()

    def _large_takes_hits(self) -> None:
        small_queue = self.queues[Pool.SMALL]
        for ticket in list(small_queue):
            if not ticket.is_hit or ticket.future.done():
                continue
            idle = [w.load() for w in self.in_pool(Pool.LARGE) if w.in_flight == 0]
            key = choose_worker(idle, ticket.exclude)
            if key is None:
                return
            small_queue.remove(ticket)
            self._assign(ticket, self.workers[key])


def _empty(queued: int) -> PoolLoad:
    return PoolLoad(0, 0, 0, queued, 0.0, 0, 0.0, 0.0, 0)
