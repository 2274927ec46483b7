"""The thin gRPC edge of the router: messages in, engine calls, messages out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from grpc import aio

from modm.params import FORMAT_TO_PROTO, read_params
from modm.services.router.engine import (
    QueuedEvent,
    RouterEngine,
    RouterEvent,
    RouterResult,
    StartedEvent,
    StepEvent,
    new_request_id,
)
from modm.services.router.policy import CachePolicy, Outcome, Pool
from modm.services.router.validation import RawGenerate
from modm.v1 import router_pb2, router_pb2_grpc

POLICY_FROM_PROTO = {
    router_pb2.CACHE_POLICY_UNSPECIFIED: CachePolicy.READ_WRITE,
    router_pb2.CACHE_POLICY_READ_WRITE: CachePolicy.READ_WRITE,
    router_pb2.CACHE_POLICY_BYPASS: CachePolicy.BYPASS,
    router_pb2.CACHE_POLICY_NO_STORE: CachePolicy.NO_STORE,
    router_pb2.CACHE_POLICY_OFF: CachePolicy.OFF,
}
OUTCOME_TO_PROTO = {
    Outcome.EXACT_REPEAT: router_pb2.CACHE_OUTCOME_EXACT_REPEAT,
    Outcome.HIT: router_pb2.CACHE_OUTCOME_HIT,
    Outcome.MISS: router_pb2.CACHE_OUTCOME_MISS,
    Outcome.BYPASSED: router_pb2.CACHE_OUTCOME_BYPASSED,
}


def raw_request(request: router_pb2.GenerateRequest) -> RawGenerate:
    return RawGenerate(read_params(request.params), request.tenant, POLICY_FROM_PROTO.get(request.cache_policy))


def response_message(result: RouterResult, cache_available: bool) -> router_pb2.GenerateResponse:
    plan, t = result.plan, result.timings
    return router_pb2.GenerateResponse(
        request_id=result.request_id,
        tenant=result.tenant,
        image=result.image,
        format=FORMAT_TO_PROTO[result.output_format],
        width=result.width,
        height=result.height,
        seed=result.seed,
        steps_run=result.steps_run,
        served_by=router_pb2.ServedBy(
            pool=result.pool,
            model_id=result.model_id,
            worker=result.worker,
            degraded=result.degraded,
            large_took_hit=result.large_took_hit,
            attempts=result.attempts,
        ),
        cache=router_pb2.CacheReport(
            outcome=OUTCOME_TO_PROTO[plan.outcome],
            similarity=plan.similarity,
            skipped_steps=plan.skipped_steps,
            total_steps=plan.total_steps,
            strength=plan.strength,
            source_entry_id=plan.entry_id,
            cache_available=plan.cache_available and cache_available,
            cache_note=plan.note,
            insert_scheduled=result.insert_scheduled,
            embedder=result.embedder,
        ),
        timings=router_pb2.RouterTimings(
            lookup_seconds=t.lookup,
            embed_seconds=t.embed,
            search_seconds=t.search,
            fetch_seconds=t.fetch,
            queue_seconds=t.queue,
            generate_seconds=t.generate,
            total_seconds=t.total,
        ),
    )


def event_message(event: RouterEvent, request_id: str) -> router_pb2.GenerateEvent:
    match event:
        case QueuedEvent(pool=pool, outcome=outcome, position=position, attempt=attempt):
            return router_pb2.GenerateEvent(
                queued=router_pb2.RequestQueued(
                    request_id=request_id,
                    pool=pool,
                    outcome=OUTCOME_TO_PROTO[outcome],
                    position=position,
                    attempt=attempt,
                )
            )
        case StartedEvent(worker=worker, total_steps=total, batch_size=size, attempt=attempt):
            return router_pb2.GenerateEvent(
                started=router_pb2.RequestStarted(worker=worker, total_steps=total, batch_size=size, attempt=attempt)
            )
        case StepEvent(step=step, total_steps=total):
            return router_pb2.GenerateEvent(step=router_pb2.RequestStep(step=step, total_steps=total))
    raise TypeError(f"unknown event {event!r}")


def degrade_message(engine: RouterEngine) -> router_pb2.DegradeState:
    state, now = engine.degrade_state()
    return router_pb2.DegradeState(
        degrade_misses=state.active(now),
        reason=state.reason,
        source=state.source,
        expires_in_seconds=state.expires_in(now),
        allowed=engine.settings.degrade_misses,
    )


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(self, engine: RouterEngine) -> None:
        self.engine = engine

    async def Generate(
        self, request: router_pb2.GenerateRequest, context: aio.ServicerContext
    ) -> router_pb2.GenerateResponse:
        result = await self.engine.generate(raw_request(request), context.time_remaining())
        return response_message(result, self.engine.cache_available)

    async def GenerateStream(
        self, request: router_pb2.GenerateRequest, context: aio.ServicerContext
    ) -> AsyncIterator[router_pb2.GenerateEvent]:
        raw = raw_request(request)
        events: asyncio.Queue[RouterEvent | None] = asyncio.Queue()
        request_id = new_request_id()
        task = asyncio.create_task(self.engine.generate(raw, context.time_remaining(), events.put_nowait, request_id))
        task.add_done_callback(lambda _: events.put_nowait(None))
        try:
            while (event := await events.get()) is not None:
                yield event_message(event, request_id)
            result = task.result()
            yield router_pb2.GenerateEvent(result=response_message(result, self.engine.cache_available))
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def Stats(
        self, request: router_pb2.RouterStatsRequest, context: aio.ServicerContext
    ) -> router_pb2.RouterStats:
        snap = self.engine.snapshot()
        dispatcher = self.engine.dispatcher
        reply = router_pb2.RouterStats(
            window_seconds=snap.window_seconds,
            requests=snap.requests,
            request_rate_per_min=snap.request_rate_per_min,
            hit_rate=snap.hit_rate,
            exact_repeat_rate=snap.exact_repeat_rate,
            k_distribution=snap.k_distribution,
            kappa=snap.kappa,
            outcomes=snap.outcomes,
            degraded=snap.degraded,
            retries=snap.retries,
            cache_available=self.engine.cache_available,
            degrade_override=degrade_message(self.engine),
            inserts_pending=self.engine.inserts_pending,
        )
        for pool in Pool:
            load = dispatcher.pool_load(pool)
            reply.pools.append(
                router_pb2.PoolStats(
                    pool=str(pool),
                    workers=load.workers,
                    queue_depth=load.queued,
                    in_flight=load.in_flight,
                    capacity=load.capacity,
                    outstanding_seconds=load.outstanding_seconds,
                )
            )
        ejected = set(dispatcher.ejected())
        for address, worker in sorted(dispatcher.workers.items()):
            measured = snap.workers.get(address)
            reply.workers.append(
                router_pb2.WorkerStats(
                    address=address,
                    pool=str(worker.pool),
                    model_id=worker.model_id,
                    family=worker.family,
                    healthy=worker.healthy,
                    ejected=address in ejected,
                    in_flight=worker.in_flight,
                    capacity=worker.capacity,
                    profiled_seconds_per_step=worker.seconds_per_step,
                    profiled_overhead_seconds=worker.overhead_seconds,
                    default_steps=worker.default_steps,
                    load_seconds=worker.load_seconds,
                    completed=measured.completed if measured else 0,
                    mean_service_seconds=measured.mean_service_seconds if measured else 0.0,
                    mean_seconds_per_step=measured.mean_seconds_per_step if measured else 0.0,
                    failures=measured.failures if measured else 0,
                )
            )
        return reply

    async def SetDegrade(
        self, request: router_pb2.SetDegradeRequest, context: aio.ServicerContext
    ) -> router_pb2.DegradeState:
        self.engine.set_degrade(request.degrade_misses, request.reason, request.source, request.ttl_seconds)
        return degrade_message(self.engine)
