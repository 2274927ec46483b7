from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from modm.batching import BatchStats, DynamicBatcher
from modm.errors import QueueFull, Unavailable


class Recorder:
    """A fake pipeline: records each call's jobs and can be held to let a queue build up."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, int]]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.called = asyncio.Event()

    async def run(self, jobs: Sequence[tuple[str, int]]) -> list[str]:
        self.calls.append(list(jobs))
        self.called.set()
        await self.release.wait()
        return [f"{key}:{n}" for key, n in jobs]


def batcher(rec: Recorder, **kw: object) -> DynamicBatcher[tuple[str, int], str]:
    options: dict[str, object] = dict(max_batch=4, window_s=0.05, max_queue=16)
    options.update(kw)
    return DynamicBatcher(rec.run, key=lambda job: job[0], **options)  # type: ignore[arg-type]


async def test_concurrent_same_key_jobs_share_a_call() -> None:
    rec = Recorder()
    b = batcher(rec)
    b.start()
    results = await asyncio.gather(*(b.submit(("a", i)) for i in range(6)))
    await b.close()
    assert results == [f"a:{i}" for i in range(6)]
    assert [len(call) for call in rec.calls] == [4, 2]


async def test_other_keys_keep_their_place_for_the_next_call() -> None:
    rec = Recorder()
    b = batcher(rec)
    b.start()
    jobs = [("a", 0), ("b", 1), ("a", 2), ("b", 3), ("c", 4)]
    results = await asyncio.gather(*(b.submit(job) for job in jobs))
    await b.close()
    assert results == [f"{k}:{n}" for k, n in jobs]
    assert rec.calls == [[("a", 0), ("a", 2)], [("b", 1), ("b", 3)], [("c", 4)]]


async def test_a_lone_job_waits_no_longer_than_the_window() -> None:
    rec = Recorder()
    b = batcher(rec, window_s=0.02)
    b.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await b.submit(("a", 1)) == "a:1"
    assert loop.time() - started < 1.0  # generous: this only guards against waiting forever
    await b.close()


async def test_full_queue_is_refused_with_a_retry_hint() -> None:
    rec = Recorder()
    rec.release.clear()
    b = batcher(rec, max_batch=1, window_s=0, max_queue=2, retry_after_s=lambda: 7.5)
    b.start()
    running = asyncio.ensure_future(b.submit(("a", 0)))
    await rec.called.wait()
    waiting = [asyncio.ensure_future(b.submit(("a", i))) for i in (1, 2)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull) as info:
        await b.submit(("a", 3))
    assert info.value.retry_after_s == 7.5
    assert b.in_flight == 3
    rec.release.set()
    assert await asyncio.gather(running, *waiting) == ["a:0", "a:1", "a:2"]
    await b.close()


async def test_a_failing_batch_fails_its_callers_and_the_loop_goes_on() -> None:
    calls = 0

    async def flaky(jobs: Sequence[tuple[str, int]]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("out of memory")
        return [k for k, _ in jobs]

    b: DynamicBatcher[tuple[str, int], str] = DynamicBatcher(
        flaky, key=lambda j: j[0], max_batch=2, window_s=0, max_queue=4
    )
    b.start()
    with pytest.raises(RuntimeError):
        await b.submit(("a", 0))
    assert await b.submit(("b", 0)) == "b"
    await b.close()


async def test_a_failing_batch_is_retried_one_job_at_a_time_so_only_the_guilty_job_fails() -> None:
    calls: list[list[int]] = []

    async def poisoned(jobs: Sequence[tuple[str, int]]) -> list[str]:
        calls.append([n for _, n in jobs])
        if any(n == 1 for _, n in jobs):
            raise ValueError("job 1 is poison")
        return [f"{k}:{n}" for k, n in jobs]

    stats: list[BatchStats] = []
    b: DynamicBatcher[tuple[str, int], str] = DynamicBatcher(
        poisoned, key=lambda j: j[0], max_batch=3, window_s=0.05, max_queue=8, on_batch=stats.append
    )
    b.start()
    outcomes = await asyncio.gather(*(b.submit(("a", i)) for i in range(3)), return_exceptions=True)
    await b.close()
    assert outcomes[0] == "a:0" and outcomes[2] == "a:2"
    assert isinstance(outcomes[1], ValueError)
    assert calls == [[0, 1, 2], [0], [1], [2]]
    assert [s.size for s in stats] == [3, 1, 1, 1]  # every pipeline call is counted


async def test_a_caller_that_gives_up_during_a_failed_batch_is_not_run_again() -> None:
    calls: list[list[int]] = []
    gone: asyncio.Future[str] | None = None

    async def failing(jobs: Sequence[tuple[str, int]]) -> list[str]:
        calls.append([n for _, n in jobs])
        if len(jobs) > 1:
            assert gone is not None
            gone.cancel()
            raise RuntimeError("the batch does not fit")
        return [f"{k}:{n}" for k, n in jobs]

    b: DynamicBatcher[tuple[str, int], str] = DynamicBatcher(
        failing, key=lambda j: j[0], max_batch=2, window_s=0.05, max_queue=4
    )
    b.start()
    gone = asyncio.ensure_future(b.submit(("a", 0)))
    kept = asyncio.ensure_future(b.submit(("a", 1)))
    assert await kept == "a:1"
    assert gone.cancelled()
    assert calls == [[0, 1], [1]]
    await b.close()


async def test_cancelled_waiters_are_dropped_before_the_call() -> None:
    rec = Recorder()
    b = batcher(rec, window_s=0.05)
    b.start()
    gone = asyncio.ensure_future(b.submit(("a", 0)))
    kept = asyncio.ensure_future(b.submit(("a", 1)))
    await asyncio.sleep(0)
    gone.cancel()
    assert await kept == "a:1"
    assert rec.calls == [[("a", 1)]]
    await b.close()


async def test_close_refuses_new_work_and_fails_waiting_jobs() -> None:
    rec = Recorder()
    rec.release.clear()
    stats: list[BatchStats] = []
    b = batcher(rec, max_batch=1, window_s=0, on_batch=stats.append)
    b.start()
    first = asyncio.ensure_future(b.submit(("a", 0)))
    await rec.called.wait()
    second = asyncio.ensure_future(b.submit(("a", 1)))
    await asyncio.sleep(0)
    await b.close()
    for fut in (first, second):
        with pytest.raises(Unavailable):
            await fut
    with pytest.raises(Unavailable):
        await b.submit(("a", 2))
    assert [s.size for s in stats] == [1]
