"""Replay: open loop, each request sent at its scheduled time whether or not earlier ones have
finished (as real users do), or closed loop, C clients each sending the trace's next request as
soon as its last one is answered (the stack's saturation throughput, whatever the offered load).
The router's Stats is sampled alongside.

The client measures latency; the router's reply says how each request was served. Errors are
recorded, not raised: an overloaded baseline refusing requests is a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modm.bench.records import CACHE_POLICY, Mode, RequestRecord, Run, RunInfo, StatsSample
from modm.bench.traces import TraceRequest


@dataclass(frozen=True)
class ReplayOptions:
    mode: Mode
    timeout_s: float = 3600.0  # per request: long, so admission control does not degrade misses
    stats_interval_s: float = 5.0
    images_dir: Path | None = None  # keep every image here (for eval)
    token: str | None = None
    concurrency: int = 0  # > 0: a closed loop of this many clients (no schedule)


async def replay(
    endpoint: str,
    requests: Sequence[TraceRequest],
    send_at: Sequence[float] | None,
    options: ReplayOptions,
    *,
    trace_name: str = "",
    timing: dict[str, Any] | None = None,
    on_done: Callable[[RequestRecord], None] | None = None,
) -> Run:
    """Send every request at `send_at[i]` seconds after the start, or in a closed loop when
    `options.concurrency` is set (and `send_at` None); return what happened."""
    from modm.client import AsyncClient

    if (send_at is None) != (options.concurrency > 0):
        raise ValueError("a schedule for an open loop, or a concurrency for a closed one")
    if send_at is not None and len(send_at) != len(requests):
        raise ValueError("one send time per request")
    if options.images_dir is not None:
        options.images_dir.mkdir(parents=True, exist_ok=True)
    samples: list[StatsSample] = []
    started_wall = time.time()
    async with AsyncClient(endpoint, token=options.token, timeout=options.timeout_s) as client:
        start = time.monotonic()
        sampler = asyncio.create_task(_sample(client, start, options.stats_interval_s, samples))
        try:
            if send_at is None:
                records = await _closed_loop(client, requests, start, options, on_done)
            else:
                tasks = [
                    asyncio.create_task(_one(client, i, request, at, start, options, on_done))
                    for i, (request, at) in enumerate(zip(requests, send_at, strict=True))
                ]
                records = list(await asyncio.gather(*tasks))
            if options.images_dir is not None:  # the layout `modm eval clip` reads
                listing = [json.dumps({"file": r.image, "prompt": r.prompt}) + "\n" for r in records if r.image]
                (options.images_dir / "prompts.jsonl").write_text("".join(listing))
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        with contextlib.suppress(Exception):  # a last sample, after the load
            samples.append(StatsSample.from_stats(time.monotonic() - start, await client.stats(timeout=10.0)))
        duration = time.monotonic() - start
    info = RunInfo(
        mode=options.mode,
        endpoint=endpoint,
        trace=trace_name,
        requests=len(requests),
        timing=timing or {},
        started_at=started_wall,
        duration_s=round(duration, 3),
    )
    return Run(info, records, samples)


async def _closed_loop(
    client: Any,
    requests: Sequence[TraceRequest],
    start: float,
    options: ReplayOptions,
    on_done: Callable[[RequestRecord], None] | None,
) -> list[RequestRecord]:
    """`options.concurrency` clients, each sending the next request of the trace when its last
    one is answered; a request's scheduled time is when it was sent."""
    pending = iter(enumerate(requests))
    records: list[RequestRecord] = []

    async def client_loop() -> None:
        for index, request in pending:  # one shared iterator: each request is sent once
            records.append(await _one(client, index, request, None, start, options, on_done))

    await asyncio.gather(*(client_loop() for _ in range(options.concurrency)))
    return sorted(records, key=lambda r: r.index)


async def _one(
    client: Any,
    index: int,
    request: TraceRequest,
    at: float | None,
    start: float,
    options: ReplayOptions,
    on_done: Callable[[RequestRecord], None] | None,
) -> RequestRecord:
    """One request, sent at `at` seconds after `start` (None: now)."""
    from modm.client import ModmClientError

    if at is not None:
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
    sent = time.monotonic()
    at = sent - start if at is None else at
    kind = str(request.extra.get("kind", ""))
    try:
        result = await client.generate(
            request.prompt, tenant=request.tenant, cache_policy=CACHE_POLICY[options.mode], **request.params
        )
    except ModmClientError as error:
        done = time.monotonic()
        record = RequestRecord(
            index, request.prompt, kind, at, sent - start, done - start, done - sent, error=error.code
        )
        record.error_detail = error.details[:300]
    else:
        done = time.monotonic()
        image = ""
        if options.images_dir is not None:
            image = f"{index:05d}.{result.format}"
            await asyncio.to_thread(result.save, options.images_dir / image)
        record = RequestRecord(
            index=index,
            prompt=request.prompt,
            kind=kind,
            scheduled_s=round(at, 6),
            sent_s=round(sent - start, 6),
            done_s=round(done - start, 6),
            latency_s=round(done - sent, 6),
            outcome=result.outcome,
            pool=result.pool,
            similarity=result.similarity,
            skipped_steps=result.skipped_steps,
            total_steps=result.total_steps,
            strength=result.strength,
            steps_run=result.steps_run,
            degraded=result.degraded,
            large_took_hit=result.large_took_hit,
            attempts=result.attempts,
            worker=result.worker,
            timings={k: round(v, 6) for k, v in result.timings.items()},
            image=image,
        )
    if on_done is not None:
        on_done(record)
    return record


async def _sample(client: Any, start: float, interval: float, into: list[StatsSample]) -> None:
    from modm.client import ModmClientError

    while True:
        try:
            stats = await client.stats(timeout=min(10.0, interval * 2))
            into.append(StatsSample.from_stats(time.monotonic() - start, stats))
        except ModmClientError:
            pass  # a missed sample leaves a gap in the plots, nothing more
        await asyncio.sleep(interval)
