"""Replay: open loop, each request sent at its scheduled time whether or not earlier ones have
finished (as real users do), or closed loop, C clients each sending the trace's next request as
soon as its last one is answered (the stack's saturation throughput, whatever the offered load),
warming up and then measuring as `modm.bench.phases` says. With several routers (endpoints), the
requests (open loop) or the clients (closed loop) take them in turn, as a client-side round robin
does. The router's Stats is sampled alongside (every router's, with several: only the sum shows
what a worker was given), and so is the machine's load average.

The client measures latency; the router's reply says how each request was served. Errors are
recorded, not raised: an overloaded baseline refusing requests is a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modm.bench.harness import load_average
from modm.bench.phases import Gate, Phases
from modm.bench.records import CACHE_POLICY, Mode, RequestRecord, Run, RunInfo, StatsSample
from modm.bench.traces import TraceRequest

LOAD_INTERVAL_S = 5.0  # the kernel's 1-minute load average changes little faster


@dataclass(frozen=True)
class ReplayOptions:
    mode: Mode
    timeout_s: float = 3600.0  # per request: long, so admission control does not degrade misses
    stats_interval_s: float = 5.0
    images_dir: Path | None = None  # keep every image here (for eval)
    token: str | None = None
    concurrency: int = 0  # > 0: a closed loop of this many clients (no schedule)
    phases: Phases = field(default_factory=Phases)  # a closed loop's warm-up and measured phase


async def replay(
    endpoint: str | Sequence[str],
    requests: Sequence[TraceRequest],
    send_at: Sequence[float] | None,
    options: ReplayOptions,
    *,
    trace_name: str = "",
    timing: dict[str, Any] | None = None,
    on_done: Callable[[RequestRecord], None] | None = None,
) -> Run:
    """Send every request at `send_at[i]` seconds after the start, or in a closed loop when
    `options.concurrency` is set (and `send_at` None); return what happened. Several endpoints:
    routers over the same workers, taken in turn."""
    from modm.client import AsyncClient

    if (send_at is None) != (options.concurrency > 0):
        raise ValueError("a schedule for an open loop, or a concurrency for a closed one")
    if send_at is not None and len(send_at) != len(requests):
        raise ValueError("one send time per request")
    endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
    if options.images_dir is not None:
        options.images_dir.mkdir(parents=True, exist_ok=True)
    samples: list[StatsSample] = []
    loads: list[list[float]] = []
    gate = Gate(options.phases)
    started_wall = time.time()
    async with contextlib.AsyncExitStack() as opened:
        clients = [
            await opened.enter_async_context(AsyncClient(e, token=options.token, timeout=options.timeout_s))
            for e in endpoints
        ]
        start = time.monotonic()
        watchers = [
            asyncio.create_task(_sample(clients, start, options.stats_interval_s, samples)),
            asyncio.create_task(_load(start, loads)),
        ]
        try:
            if send_at is None:
                records = await _closed_loop(clients, requests, start, options, gate, samples, on_done)
            else:
                tasks = [
                    asyncio.create_task(_one(clients[i % len(clients)], i, request, at, start, options, on_done))
                    for i, (request, at) in enumerate(zip(requests, send_at, strict=True))
                ]
                records = list(await asyncio.gather(*tasks))
            if options.images_dir is not None:  # the layout `modm eval clip` reads
                listing = [json.dumps({"file": r.image, "prompt": r.prompt}) + "\n" for r in records if r.image]
                (options.images_dir / "prompts.jsonl").write_text("".join(listing))
        finally:
            for watcher in watchers:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        with contextlib.suppress(Exception):  # a last sample, after the load
            samples.append(await _read(clients, time.monotonic() - start))
        duration = time.monotonic() - start
    info = RunInfo(
        mode=options.mode,
        endpoint=",".join(endpoints),
        trace=trace_name,
        requests=len(records),
        timing=timing or {},
        started_at=started_wall,
        duration_s=round(duration, 3),
        measure_start_s=round(gate.measure_start or 0.0, 3),
        settled=gate.settled if options.phases.settle_s > 0 else None,
        routers=len(endpoints),
        load_average=loads,
        cores=len(os.sched_getaffinity(0)),
    )
    return Run(info, records, samples)


async def _closed_loop(
    clients: Sequence[Any],
    requests: Sequence[TraceRequest],
    start: float,
    options: ReplayOptions,
    gate: Gate,
    samples: Sequence[StatsSample],
    on_done: Callable[[RequestRecord], None] | None,
) -> list[RequestRecord]:
    """`options.concurrency` clients, each sending the next request of the trace when its last
    one is answered, while `gate` lets it (warm-up, then the measured phase); client i talks to
    router i mod R. A request's scheduled time is when it was sent."""
    pending = iter(enumerate(requests))
    records: list[RequestRecord] = []

    async def client_loop(client: Any) -> None:
        for index, request in pending:  # one shared iterator: each request is sent once
            measured = gate.next(time.monotonic() - start, samples)
            if measured is None:
                return
            record = await _one(client, index, request, None, start, options, None)
            record.warmup = not measured
            records.append(record)
            if on_done is not None:
                on_done(record)

    await asyncio.gather(*(client_loop(clients[i % len(clients)]) for i in range(options.concurrency)))
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


async def _read(clients: Sequence[Any], at: float) -> StatsSample:
    first, *others = await asyncio.gather(*(client.stats(timeout=10.0) for client in clients))
    return StatsSample.from_stats(at, first, others)


async def _sample(clients: Sequence[Any], start: float, interval: float, into: list[StatsSample]) -> None:
    from modm.client import ModmClientError

    while True:
        with contextlib.suppress(ModmClientError):  # a missed sample leaves a gap in the plots, nothing more
            into.append(await _read(clients, time.monotonic() - start))
        await asyncio.sleep(interval)


async def _load(start: float, into: list[list[float]]) -> None:
    """The machine's 1-minute load average every few seconds (none where the system has none)."""
    while True:
        value = load_average()
        if value is not None:
            into.append([round(time.monotonic() - start, 3), value])
        await asyncio.sleep(LOAD_INTERVAL_S)
