"""Dynamic batching: requests that can share a pipeline call are run as one.

The first waiting request opens a window; requests with the same batch key that arrive within
it join, up to `max_batch`. Requests with other keys keep their place in line for the next
call. The queue is bounded so overload is refused at the door instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from modm.errors import ResourceExhausted, Unavailable

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
    """Feeds `run_batch` with lists of same-key jobs; one batch runs at a time."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[J]], Awaitable[Sequence[R]]],
        key: Callable[[J], Hashable],
        *,
        max_batch: int,
        window_s: float,
        max_queue: int,
        retry_after_s: Callable[[], float] = lambda: 1.0,
        on_batch: Callable[[BatchStats], None] = lambda stats: None,
    ) -> None:
        self._run_batch = run_batch
        self._key = key
        self._max_batch = max_batch
        self._window_s = window_s
        self._max_queue = max_queue
        self._retry_after_s = retry_after_s
        self._on_batch = on_batch
        self._waiting: list[_Pending[J, R]] = []
        self._arrived = asyncio.Event()
        self._running = 0
        self._closed = False
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def in_flight(self) -> int:
        """Admitted and not yet answered: waiting plus running."""
        return len(self._waiting) + self._running

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="dynamic-batcher")

    async def close(self) -> None:
        """Refuse new jobs, fail the waiting ones, and stop after the running batch."""
        self._closed = True
        self._fail(self._waiting, Unavailable("worker is shutting down"))
        self._waiting.clear()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task

    def admit(self, job: J) -> tuple[asyncio.Future[R], int]:
        """Queue a job; returns its future and how many requests were waiting ahead of it."""
        if self._closed:
            raise Unavailable("worker is shutting down")
        if len(self._waiting) >= self._max_queue:
            raise ResourceExhausted(
                f"worker queue is full ({self._max_queue} waiting)", retry_after_s=self._retry_after_s()
            )
        ahead = len(self._waiting)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(job, self._key(job), future))
        self._arrived.set()
        return future, ahead

    async def submit(self, job: J) -> R:
        future, _ = self.admit(job)
        return await future

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
        started = time.monotonic()
        self._on_batch(BatchStats(len(batch), tuple(started - p.enqueued_at for p in batch)))
        self._running = len(batch)
        try:
            results = await self._run_batch([p.job for p in batch])
        except asyncio.CancelledError:
            self._fail(batch, Unavailable("worker stopped before the batch finished"))
            raise
        except Exception as error:
            self._fail(batch, error)
        else:
            for pending, result in zip(batch, results, strict=True):
                if not pending.future.done():
                    pending.future.set_result(result)
        finally:
            self._running = 0

    @staticmethod
    def _fail(batch: Sequence[_Pending[J, R]], error: BaseException) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error)
