"""The thin gRPC edge of the worker: messages in, domain calls, messages out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from grpc import aio

from modm.errors import Unavailable
from modm.params import FORMAT_TO_PROTO, read_params
from modm.services.worker.engine import Queued, Started, StepDone, WorkerEngine, WorkerEvent
from modm.services.worker.jobs import GeneratedImage
from modm.services.worker.validation import RawRequest
from modm.v1 import common_pb2, worker_pb2, worker_pb2_grpc

ROLE_TO_PROTO = {"large": worker_pb2.WORKER_ROLE_LARGE, "small": worker_pb2.WORKER_ROLE_SMALL}


def _raw(
    params: common_pb2.GenerationParams, init_image: bytes | None = None, strength: float | None = None
) -> RawRequest:
    return RawRequest(read_params(params), init_image, strength)


def _image_message(result: GeneratedImage) -> worker_pb2.GeneratedImage:
    t = result.timings
    return worker_pb2.GeneratedImage(
        image=result.data,
        format=FORMAT_TO_PROTO[result.output_format],
        width=result.width,
        height=result.height,
        seed=result.seed,
        steps_run=result.steps_run,
        batch_size=result.batch_size,
        model_id=result.model_id,
        timings=common_pb2.Timings(
            queue_seconds=t.queue_seconds,
            generate_seconds=t.generate_seconds,
            encode_seconds=t.encode_seconds,
            total_seconds=t.total_seconds,
        ),
    )


def _event_message(event: WorkerEvent) -> worker_pb2.GenerationEvent:
    match event:
        case Queued(position=position):
            return worker_pb2.GenerationEvent(queued=worker_pb2.Queued(position=position))
        case Started(batch_size=size, total_steps=total):
            return worker_pb2.GenerationEvent(started=worker_pb2.Started(batch_size=size, total_steps=total))
        case StepDone(step=step, total_steps=total):
            return worker_pb2.GenerationEvent(step=worker_pb2.StepProgress(step=step, total_steps=total))
    raise TypeError(f"unknown event {event!r}")


class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    """Registered before the weights load, so early callers get UNAVAILABLE, not UNIMPLEMENTED."""

    def __init__(self) -> None:
        self._ready: WorkerEngine | None = None

    def attach(self, engine: WorkerEngine) -> None:
        self._ready = engine

    @property
    def _engine(self) -> WorkerEngine:
        if self._ready is None:
            raise Unavailable("worker is loading its pipeline")
        return self._ready

    async def TextToImage(
        self, request: worker_pb2.TextToImageRequest, context: aio.ServicerContext
    ) -> worker_pb2.GeneratedImage:
        return _image_message(await self._engine.generate(_raw(request.params)))

    async def ImageToImage(
        self, request: worker_pb2.ImageToImageRequest, context: aio.ServicerContext
    ) -> worker_pb2.GeneratedImage:
        raw = _raw(request.params, request.init_image, request.strength)
        return _image_message(await self._engine.generate(raw))

    async def TextToImageStream(
        self, request: worker_pb2.TextToImageRequest, context: aio.ServicerContext
    ) -> AsyncIterator[worker_pb2.GenerationEvent]:
        async for event in self._stream(_raw(request.params)):
            yield event

    async def ImageToImageStream(
        self, request: worker_pb2.ImageToImageRequest, context: aio.ServicerContext
    ) -> AsyncIterator[worker_pb2.GenerationEvent]:
        async for event in self._stream(_raw(request.params, request.init_image, request.strength)):
            yield event

    async def _stream(self, raw: RawRequest) -> AsyncIterator[worker_pb2.GenerationEvent]:
        events: asyncio.Queue[WorkerEvent | None] = asyncio.Queue()
        task = asyncio.create_task(self._engine.generate(raw, events.put_nowait))
        task.add_done_callback(lambda _: events.put_nowait(None))  # after every step event
        try:
            while (event := await events.get()) is not None:
                yield _event_message(event)
            yield worker_pb2.GenerationEvent(result=_image_message(task.result()))
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def Info(self, request: worker_pb2.InfoRequest, context: aio.ServicerContext) -> worker_pb2.WorkerInfo:
        facts = self._engine.runner.facts
        settings = self._engine.settings
        profile = self._engine.profile
        return worker_pb2.WorkerInfo(
            model_id=facts.model_id,
            family=facts.family.name,
            role=ROLE_TO_PROTO[settings.role],
            device=facts.device,
            dtype=facts.dtype,
            max_batch_size=settings.max_batch_size,
            default_width=facts.default_width,
            default_height=facts.default_height,
            default_steps=facts.default_steps,
            size_multiple=facts.size_multiple,
            seconds_per_step=profile.seconds_per_step if profile else 0.0,
            overhead_seconds=profile.overhead_seconds if profile else 0.0,
            queue_depth=self._engine.in_flight,
            max_queue=settings.max_queue,
            supports_negative_prompt=facts.family.supports_negative_prompt,
            default_guidance_scale=facts.family.default_guidance,
            revision=facts.revision or "",
            variant=facts.variant or "",
            load_seconds=facts.load_seconds,
        )
