"""Per-pool queues and the hand-out of worker slots (asyncio, no gRPC).

A request that needs a worker takes a `Ticket` for a pool. Tickets are served in order; each
gets the worker with the least outstanding work that has a free slot (`policy.choose_worker`),
so no worker is ever given more than its advertised capacity. With `large_takes_hits`, a large
worker that is idle while no miss waits takes the oldest waiting hit from the small queue
(MoDM: large-model GPUs with nothing better to do serve hits).

Failure-based ejection: a worker whose health probe says SERVING but whose requests keep failing
(hung, timing out) would otherwise be handed traffic again every discovery round. After
`eject_after` consecutive failed attempts it is taken out of rotation for a cool-down; when that
passes it gets requests again on probation: one success clears its record, one more failure
ejects it again for twice as long (up to `max_cooldown_s`). The last usable worker of a pool is
never ejected: when every worker is slow, a slow answer beats refusing everything.
"""

from __future__ import annotations

import asyncio
import logging
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

log = logging.getLogger(__name__)


@dataclass
class WorkerState:
    """A worker found by discovery, with what its Info said and what the router gave it."""

    address: str
    pool: Pool
    capacity: int
    seconds_per_step: float = 0.0
    overhead_seconds: float = 0.0
    default_steps: int = 0
    load_seconds: float = 0.0  # what its model took to load (the monitor's switch cost)
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
    consecutive_failures: int = 0
    ejections: int = 0  # in a row; sets the next cool-down
    ejected_until: float = 0.0

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until

    def load(self, now: float) -> WorkerLoad:
        usable = self.healthy and not self.ejected(now)
        return WorkerLoad(self.address, self.in_flight, self.capacity, self.outstanding_seconds, usable)

    def job_seconds(self, steps: int | None, strength: float = 1.0) -> float:
        run = (steps or self.default_steps or 1) * strength
        return self.overhead_seconds + max(1.0, run) * self.seconds_per_step


# What discovery refreshes; in_flight, outstanding_seconds, failures and ejection belong to the dispatcher.
FACTS = (
    "pool",
    "capacity",
    "seconds_per_step",
    "overhead_seconds",
    "default_steps",
    "load_seconds",
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


MAX_COOLDOWN_S = 60.0


class Dispatcher:
    def __init__(
        self,
        rules: RoutingRules,
        clock: Callable[[], float] = time.monotonic,
        *,
        eject_after: int = 3,
        cooldown_s: float = 5.0,
        max_cooldown_s: float = MAX_COOLDOWN_S,
    ) -> None:
        self.rules = rules
        self._clock = clock
        self.eject_after = eject_after
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
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
        """An attempt on `address` failed: unhealthy until discovery's next probe says otherwise,
        and ejected for a cool-down once failures repeat (a probe cannot vouch for it then)."""
        worker = self.workers.get(address)
        if worker is None:
            return
        worker.healthy = False
        worker.failures += 1
        worker.consecutive_failures += 1
        others = [w for w in self.usable(worker.pool) if w is not worker]
        if worker.consecutive_failures >= self.eject_after and others:  # never empty a pool: slow beats none
            now = self._clock()
            cooldown = min(self.max_cooldown_s, self.cooldown_s * 2**worker.ejections)
            worker.ejected_until = now + cooldown
            worker.ejections += 1
            worker.consecutive_failures = self.eject_after - 1  # on probation: one more failure ejects it again
            log.warning(
                "worker ejected",
                extra={"worker": address, "cooldown_s": cooldown, "failures": worker.failures},
            )

    def mark_succeeded(self, address: str) -> None:
        """An attempt on `address` succeeded: its failure record is cleared (probation passed)."""
        worker = self.workers.get(address)
        if worker is not None and (worker.consecutive_failures or worker.ejections):
            if worker.ejections:
                log.info("worker back in rotation", extra={"worker": address})
            worker.consecutive_failures = 0
            worker.ejections = 0

    def ejected(self) -> list[str]:
        now = self._clock()
        return sorted(w.address for w in self.workers.values() if w.ejected(now))

    def in_pool(self, pool: Pool) -> list[WorkerState]:
        return [w for w in self.workers.values() if w.pool is pool]

    def usable(self, pool: Pool) -> list[WorkerState]:
        """Healthy and not ejected: the workers that may be given requests now."""
        now = self._clock()
        return [w for w in self.in_pool(pool) if w.healthy and not w.ejected(now)]

    # --- loads --------------------------------------------------------------------------

    def pool_load(self, pool: Pool) -> PoolLoad:
        healthy = self.usable(pool)
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
        now = self._clock()
        for pool, queue in self.queues.items():
            while queue:
                ticket = queue[0]
                if ticket.future.done():  # cancelled by its waiter
                    queue.popleft()
                    continue
                key = choose_worker((w.load(now) for w in self.in_pool(pool)), ticket.exclude)
                if key is None:
                    break
                queue.popleft()
                self._assign(ticket, self.workers[key])
        if self.rules.large_takes_hits and not self.queues[Pool.LARGE]:
            self._large_takes_hits()

    def _large_takes_hits(self) -> None:
        small_queue = self.queues[Pool.SMALL]
        now = self._clock()
        for ticket in list(small_queue):
            if not ticket.is_hit or ticket.future.done():
                continue
            idle = [w.load(now) for w in self.in_pool(Pool.LARGE) if w.in_flight == 0]
            key = choose_worker(idle, ticket.exclude)
            if key is None:
                return
            small_queue.remove(ticket)
            self._assign(ticket, self.workers[key])


def _empty(queued: int) -> PoolLoad:
    return PoolLoad(0, 0, 0, queued, 0.0, 0, 0.0, 0.0, 0)
