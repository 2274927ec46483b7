"""The worker's data plane: validation, batching, the pipeline call and encoding.

It knows nothing of gRPC: the servicer hands it plain `RawRequest`s and gets domain results
and events back, so everything here is testable without a server.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image

from modm.batching import BatchStats, DynamicBatcher
from modm.errors import ModmError, OutOfMemory, Unavailable
from modm.services.worker import metrics
from modm.services.worker.failures import free_memory, pipeline_failure
from modm.services.worker.jobs import GeneratedImage, GenerationJob, Timings
from modm.services.worker.runner import GenerationStopped, Profile, Runner, measure_profile, run_self_test
from modm.services.worker.settings import WorkerSettings
from modm.services.worker.validation import RawRequest, RequestLimits, validate


@dataclass(frozen=True)
class Queued:
    position: int


@dataclass(frozen=True)
class Started:
    batch_size: int
    total_steps: int


@dataclass(frozen=True)
class StepDone:
    step: int
    total_steps: int


WorkerEvent = Queued | Started | StepDone
Listener = Callable[[WorkerEvent], None]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Submission:
    job: GenerationJob
    listener: Listener | None
    arrived: float
    # Set once the request has its answer or its caller gave up (cancelled, deadline passed);
    # read on the pipeline thread, where a call whose every request is done stops at its next step.
    done: threading.Event = field(default_factory=threading.Event)


def limits_for(settings: WorkerSettings, runner: Runner) -> RequestLimits:
    facts = runner.facts
    return RequestLimits(
        max_prompt_chars=settings.max_prompt_chars,
        min_side=max(settings.min_side, facts.size_multiple),
        max_side=settings.max_side,
        size_multiple=facts.size_multiple,
        default_width=facts.default_width,
        default_height=facts.default_height,
        default_steps=facts.default_steps,
        max_steps=settings.max_steps,
        default_guidance=facts.family.default_guidance,
        supports_negative_prompt=facts.family.supports_negative_prompt,
        max_init_image_bytes=int(settings.max_init_image_mb * 1024 * 1024),
        max_init_image_pixels=settings.max_init_image_pixels,
        img2img_steps=facts.family.img2img_steps,
    )


class WorkerEngine:
    """Validates, batches and runs requests; tells a request's failure from the worker's own.

    A call that runs out of memory or fails on its input fails only its requests (the batcher
    retries a failed batch one job at a time). When `unhealthy_after_failures` calls in a row
    fail (out of memory aside), a known-good self-test decides: if it passes, the inputs were at
    fault; if it fails, the worker is broken, `on_broken` turns its health NOT_SERVING, and every
    request gets UNAVAILABLE until it is restarted. A call stops at its next step once every
    request in it is done, so callers that gave up free the device.
    """

    def __init__(
        self,
        runner: Runner,
        settings: WorkerSettings,
        executor: ThreadPoolExecutor,
        on_broken: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.runner = runner
        self.settings = settings
        self.limits = limits_for(settings, runner)
        self.profile: Profile | None = None
        self.broken: str | None = None  # why the worker stopped serving, once it has
        self._executor = executor
        self._on_broken = on_broken
        self._failures_in_a_row = 0
        self._batcher: DynamicBatcher[_Submission, GeneratedImage] = DynamicBatcher(
            self._run_batch,
            key=lambda sub: sub.job.batch_key(),
            max_batch=settings.max_batch_size,
            window_s=settings.batch_window_ms / 1000,
            max_queue=settings.max_queue,
            retry_after_s=self._estimated_drain_seconds,
            on_batch=self._record_batch,
        )

    @property
    def in_flight(self) -> int:
        return self._batcher.in_flight

    async def warm_up(self) -> Profile:
        """Run the first generations (compiling kernels, allocating memory) and profile speed."""
        loop = asyncio.get_running_loop()
        self.profile = await loop.run_in_executor(self._executor, measure_profile, self.runner)
        metrics.PROFILED_STEP_SECONDS.set(self.profile.seconds_per_step)
        return self.profile

    def start(self) -> None:
        self._batcher.start()

    async def close(self) -> None:
        await self._batcher.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def generate(self, raw: RawRequest, listener: Listener | None = None) -> GeneratedImage:
        kind = "image_to_image" if raw.init_image is not None else "text_to_image"
        try:
            self._refuse_if_broken()
            # Decoding an init image is real work: keep it off the event loop.
            job = await asyncio.to_thread(validate, raw, self.limits) if raw.init_image else validate(raw, self.limits)
            submission = _Submission(job, listener, time.monotonic())
            try:
                future, ahead = self._batcher.admit(submission)
                metrics.QUEUE_DEPTH.set(self._batcher.in_flight)
                if listener is not None:
                    listener(Queued(ahead))
                result = await future
            finally:
                submission.done.set()
        except ModmError as error:
            metrics.REQUESTS.labels(kind, type(error).__name__).inc()
            raise
        except asyncio.CancelledError:
            metrics.REQUESTS.labels(kind, "Cancelled").inc()
            raise
        finally:
            metrics.QUEUE_DEPTH.set(self._batcher.in_flight)
        metrics.REQUESTS.labels(kind, "OK").inc()
        metrics.REQUEST_SECONDS.labels(kind).observe(result.timings.total_seconds)
        return result

    def _estimated_drain_seconds(self) -> float:
        """Retry hint for a full queue: the time to work through it at the profiled speed."""
        if self.profile is None:
            return 1.0
        per_image = self.profile.overhead_seconds + self.profile.seconds_per_step * self.limits.default_steps
        batches = self._batcher.in_flight / self.settings.max_batch_size
        return max(1.0, per_image * batches)

    @staticmethod
    def _record_batch(stats: BatchStats) -> None:
        metrics.BATCH_SIZE.observe(stats.size)

    def _refuse_if_broken(self) -> None:
        if self.broken is not None:
            raise Unavailable(f"worker is broken: {self.broken}")

    async def _call_pipeline(
        self, jobs: Sequence[GenerationJob], on_step: Callable[[int, int], None], should_stop: Callable[[], bool]
    ) -> tuple[list[Image.Image], int]:
        """One pipeline call on the pipeline thread; a failure becomes the request's domain error."""
        self._refuse_if_broken()
        loop = asyncio.get_running_loop()
        device = self.runner.facts.device
        try:
            outcome = await loop.run_in_executor(self._executor, self.runner.generate, jobs, on_step, should_stop)
        except GenerationStopped as stopped:  # nobody waits for it: neither the requests' nor the worker's failure
            metrics.STOPPED_CALLS.inc()
            log.info("pipeline call stopped: every request in it is done", extra={"detail": str(stopped)})
            raise
        except Exception as error:
            failure = pipeline_failure(error, jobs, device)
        else:
            self._failures_in_a_row = 0
            return outcome
        # Out of the except block, the failed call's traceback and the tensors its frames hold are gone.
        log.warning("pipeline call failed", extra={"error": str(failure), "error_type": type(failure).__name__})
        if isinstance(failure, OutOfMemory):
            await loop.run_in_executor(self._executor, free_memory, device)
        else:
            self._failures_in_a_row += 1
            if self._failures_in_a_row >= self.settings.unhealthy_after_failures:
                await self._test_self()
        raise failure

    async def _test_self(self) -> None:
        """Calls failing in a row: a known-good generation tells a broken worker from bad inputs."""
        failures, self._failures_in_a_row = self._failures_in_a_row, 0
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, run_self_test, self.runner)
        except Exception as error:
            self.broken = f"{failures} pipeline calls in a row failed, then the self-test: {error}"
            log.error("worker is broken", extra={"reason": self.broken})
            if self._on_broken is not None:
                await self._on_broken()
        else:
            log.warning("pipeline calls failed in a row, but the self-test passed", extra={"failures": failures})

    async def _run_batch(self, submissions: Sequence[_Submission]) -> list[GeneratedImage]:
        loop = asyncio.get_running_loop()
        jobs = [sub.job for sub in submissions]
        listeners = [sub.listener for sub in submissions if sub.listener is not None]
        started_event = Started(len(jobs), jobs[0].planned_steps)
        for listener in listeners:
            listener(started_event)

        def on_step(step: int, total: int) -> None:  # called on the pipeline thread
            event = StepDone(step, total)
            for listener in listeners:
                loop.call_soon_threadsafe(listener, event)

        def should_stop() -> bool:  # called on the pipeline thread
            return all(sub.done.is_set() for sub in submissions)

        started = time.monotonic()
        images, steps_run = await self._call_pipeline(jobs, on_step, should_stop)
        generate_s = time.monotonic() - started
        metrics.STEP_SECONDS.observe(generate_s / max(steps_run, 1))
        results = []
        for sub, image in zip(submissions, images, strict=True):
            encode_started = time.monotonic()
            data = await asyncio.to_thread(self.runner.encode, image, sub.job.output_format)
            done = time.monotonic()
            timings = Timings(
                queue_seconds=started - sub.arrived,
                generate_seconds=generate_s,
                encode_seconds=done - encode_started,
                total_seconds=done - sub.arrived,
            )
            results.append(
                GeneratedImage(
                    data,
                    sub.job.output_format,
                    image.width,
                    image.height,
                    sub.job.seed,
                    steps_run,
                    len(jobs),
                    self.runner.facts.model_id,
                    timings,
                )
            )
        return results
