"""The one windowed micro-batcher: concurrent jobs that can share a call are run as one.

The worker batches generation requests into pipeline calls and the cache batches embedding
requests into model calls with it. The first waiting job opens a window; jobs with the same key
that arrive within it join, up to `max_batch`. Jobs with other keys keep their place in line for
the next call. A bounded queue refuses overload at the door instead of growing memory.

A batch whose call fails is run again one job at a time, so one job the model cannot take fails
only its own caller, never the jobs that happened to share its call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from modm.errors import QueueFull, Unavailable

J = TypeVar("J")
R = TypeVar("R")


@dataclass
class _Pending(Generic[J, R]):
    job: J
    key: Hashable
    future: asyncio.Future[R]
    enqueued_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class BatchStats:
    size: int
    waited_seconds: tuple[float, ...]


class DynamicBatcher(Generic[J, R]):
    """Feeds `run_batch` with lists of same-key jobs; one call runs at a time.

    `service` names the owner in the error callers get once it closes ("worker is shutting
    down"); `max_queue=None` leaves the queue unbounded.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[J]], Awaitable[Sequence[R]]],
        key: Callable[[J], Hashable],
        *,
        max_batch: int,
        window_s: float,
        max_queue: int | None = None,
        service: str = "worker",
        retry_after_s: Callable[[], float] = lambda: 1.0,
        on_batch: Callable[[BatchStats], None] = lambda stats: None,
    ) -> None:
        self._run_batch = run_batch
        self._key = key
        self._max_batch = max_batch
        self._window_s = window_s
        self._max_queue = max_queue
        self._service = service
        self._retry_after_s = retry_after_s
        self._on_batch = on_batch
        self._waiting: list[_Pending[J, R]] = []
        self._running: list[_Pending[J, R]] = []
        self._arrived = asyncio.Event()
        self._closed = False
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def in_flight(self) -> int:
        """Admitted and not yet answered: waiting plus running."""
        return len(self._waiting) + sum(1 for p in self._running if not p.future.done())

    def start(self) -> None:
        """Start the batching loop (idempotent; the first admitted job starts it too)."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._loop(), name=f"{self._service}-batcher")

    async def close(self) -> None:
        """Refuse new jobs, fail the waiting ones, and stop after the running call."""
        self._closed = True
        self._fail(self._waiting, self._shutting_down())
        self._waiting.clear()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task

    def admit(self, job: J) -> tuple[asyncio.Future[R], int]:
        """Queue a job; returns its future and how many jobs were waiting ahead of it."""
        if self._closed:
            raise self._shutting_down()
        if self._max_queue is not None and len(self._waiting) >= self._max_queue:
            raise QueueFull(
                f"{self._service} queue is full ({self._max_queue} waiting)", retry_after_s=self._retry_after_s()
            )
        self.start()
        ahead = len(self._waiting)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(job, self._key(job), future))
        self._arrived.set()
        return future, ahead

    async def submit(self, job: J) -> R:
        future, _ = self.admit(job)
        return await future

    def _shutting_down(self) -> Unavailable:
        return Unavailable(f"{self._service} is shutting down")

    async def _loop(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch:
                await self._run(batch)

    async def _next_batch(self) -> list[_Pending[J, R]]:
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        head = self._waiting[0]
        deadline = head.enqueued_at + self._window_s
        while self._count(head.key) < self._max_batch and (left := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=left)
        batch: list[_Pending[J, R]] = []
        rest: list[_Pending[J, R]] = []
        for pending in self._waiting:
            if pending.future.done():  # the caller gave up (cancelled) while waiting
                continue
            (batch if pending.key == head.key and len(batch) < self._max_batch else rest).append(pending)
        self._waiting = rest
        return batch

    def _count(self, key: Hashable) -> int:
        return sum(1 for p in self._waiting if p.key == key and not p.future.done())

    async def _run(self, batch: list[_Pending[J, R]]) -> None:
        self._running = batch
        try:
            await self._settle(batch)
        except asyncio.CancelledError:
            self._fail(batch, Unavailable(f"{self._service} stopped before the batch finished"))
            raise
        finally:
            self._running = []

    async def _settle(self, batch: Sequence[_Pending[J, R]]) -> None:
        """Answer every job of `batch`: from one call, or, when that call fails, from one call each."""
        started = time.monotonic()
        self._on_batch(BatchStats(len(batch), tuple(started - p.enqueued_at for p in batch)))
        try:
            results = await self._run_batch([p.job for p in batch])
        except Exception as error:
            if len(batch) == 1:
                self._fail(batch, error)
                return
            results = None  # retried below, once the failed call's traceback (and what it holds) is gone
        if results is None:
            for pending in batch:
                if not pending.future.done():  # a caller that gave up is not run again
                    await self._settle([pending])
            return
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    @staticmethod
    def _fail(batch: Sequence[_Pending[J, R]], error: BaseException) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error)
