"""The request path: validate, look up the cache once, plan, route, dispatch with retries, and
insert misses into the cache after the reply. Identical misses in the air at once share one
generation (`singleflight`). No gRPC server code here (the servicer is the edge); the cache and
the workers are reached through `backends` interfaces."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from modm.backoff import backoff_seconds
from modm.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ModmError,
    OutOfMemory,
    PipelineError,
    ResourceExhausted,
    Unavailable,
)
from modm.grpc_errors import FailureReason
from modm.images import ImageFormat, decode_image, encode_image
from modm.params import FORMAT_FROM_PROTO, FORMAT_TO_PROTO, fingerprint, read_params
from modm.services.router import metrics
from modm.services.router.backends import (
    CacheBackend,
    CachedImage,
    CacheError,
    WorkerEvent,
    WorkerFailure,
)
from modm.services.router.discovery import Discovery
from modm.services.router.dispatch import Dispatcher
from modm.services.router.policy import (
    UNEXPLAINED_CODES,
    CachePolicy,
    DegradeOverride,
    FailureKind,
    Outcome,
    Plan,
    Pool,
    Reject,
    Route,
    as_miss,
    as_shared,
    attempt_timeout,
    classify_failure,
    degrade_override,
    effective_deadline,
    hit_steps,
    may_retry,
    plan_request,
    route,
    should_insert,
    should_retry,
)
from modm.services.router.settings import RouterSettings
from modm.services.router.singleflight import SingleFlight
from modm.services.router.validation import GenerateJob, Limits, RawGenerate, validate
from modm.services.router.window import RequestRecord, ServiceRecord, SlidingWindow, WindowSnapshot
from modm.v1 import common_pb2

log = logging.getLogger(__name__)

_PIL_FORMAT = {"PNG": ImageFormat.PNG, "WEBP": ImageFormat.WEBP, "JPEG": ImageFormat.JPEG}


# --- progress events ---------------------------------------------------------------------


@dataclass(frozen=True)
class QueuedEvent:
    pool: str
    outcome: Outcome
    position: int
    attempt: int


@dataclass(frozen=True)
class StartedEvent:
    worker: str
    total_steps: int
    batch_size: int
    attempt: int


@dataclass(frozen=True)
class StepEvent:
    step: int
    total_steps: int


RouterEvent = QueuedEvent | StartedEvent | StepEvent
Listener = Callable[[RouterEvent], None]


@dataclass(frozen=True)
class InitImage:
    """The caller's own image to start from (edits), and how much of the schedule to run on it."""

    data: bytes
    strength: float


@dataclass
class Timings:
    lookup: float = 0.0
    embed: float = 0.0
    search: float = 0.0
    fetch: float = 0.0
    queue: float = 0.0
    generate: float = 0.0
    total: float = 0.0


@dataclass
class RouterResult:
    request_id: str
    tenant: str
    image: bytes
    output_format: ImageFormat
    width: int
    height: int
    seed: int
    steps_run: int
    plan: Plan
    pool: str
    model_id: str
    worker: str = ""
    degraded: bool = False
    large_took_hit: bool = False
    attempts: int = 0
    embedder: str = ""
    insert_scheduled: bool = False
    timings: Timings = field(default_factory=Timings)


def new_request_id() -> str:
    return uuid.uuid4().hex


# Requests that generate the same image: the tenant and the cache's exact-repeat fingerprint
# (parameters, and the seed when the request names one).
FlightKey = tuple[str, str, str]


def _worker_error(failure: WorkerFailure, workers: int) -> ModmError:
    """The router's own error for a worker failure that ends the request, after it met `workers`
    workers (fields keep their names; out of memory and pipeline errors keep their reason)."""
    on = f"(on {workers} worker{'s' if workers != 1 else ''})"
    if failure.reason is FailureReason.OUT_OF_MEMORY:
        return OutOfMemory(f"{failure.details} {on}")
    if failure.reason is FailureReason.PIPELINE_ERROR:
        return PipelineError(f"{failure.details} {on}")
    if failure.code in UNEXPLAINED_CODES:
        return ModmError(f"the request failed {on}: {failure.code}: {failure.details}")
    if failure.code == "INVALID_ARGUMENT":
        name, sep, problem = failure.details.partition(": ")
        return InvalidArgument(name, problem) if sep else InvalidArgument("params", failure.details)
    return FailedPrecondition(f"the worker refused the request: {failure.details}")


class RouterEngine:
    def __init__(
        self,
        settings: RouterSettings,
        dispatcher: Dispatcher,
        discovery: Discovery,
        cache: CacheBackend | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.discovery = discovery
        self.cache = cache
        self._clock = clock
        self.window = SlidingWindow(settings.window_s, clock())
        self.limits = Limits(settings.max_prompt_chars, settings.min_side, settings.max_side, settings.max_steps)
        self.cache_available = cache is not None
        self._background: set[asyncio.Task[None]] = set()
        self.degrade = DegradeOverride()  # the monitor's override (SetDegrade)
        self.flights: SingleFlight[FlightKey, RouterResult] = SingleFlight(settings.singleflight_max_waiters)

    # --- the request path ---------------------------------------------------------------

    async def generate(
        self,
        raw: RawGenerate,
        client_timeout_s: float | None,
        listener: Listener | None = None,
        request_id: str | None = None,
        init: InitImage | None = None,
    ) -> RouterResult:
        """Serve one request; with `init`, an img2img of the caller's own image (`_serve_edit`)."""
        started = self._clock()
        deadline = effective_deadline(
            started,
            client_timeout_s,
            default_s=self.settings.default_deadline_s,
            max_s=self.settings.max_deadline_s,
        )
        try:
            job = validate(raw, self.limits, self.settings.default_tenant)
        except InvalidArgument:
            metrics.REQUESTS.labels("none", "none", "InvalidArgument").inc()
            raise
        request_id = request_id or new_request_id()
        try:
            if init is None:
                result = await self._serve(job, request_id, deadline, listener)
            else:
                result = await self._serve_edit(job, init, request_id, deadline, listener)
        except ModmError as error:
            metrics.REQUESTS.labels("none", "none", type(error).__name__).inc()
            self.window.record_request(RequestRecord(self._clock(), "failed"))
            raise
        result.timings.total = self._clock() - started
        self._record(result)
        return result

    async def _serve(
        self, job: GenerateJob, request_id: str, deadline: float, listener: Listener | None
    ) -> RouterResult:
        timings = Timings()
        params = _worker_params(job, *self._resolved_defaults(job))

        plan, embedder = await self._plan(job, params, deadline, timings)
        cached = None
        if plan.needs_image:
            cached, plan = await self._fetch(job, plan, deadline, timings)
        if plan.outcome is Outcome.EXACT_REPEAT and cached is not None:
            return await self._repeat(job, request_id, plan, cached, embedder, timings)
        key = None
        if plan.outcome is Outcome.MISS and job.cache_policy is CachePolicy.READ_WRITE:
            key = _flight_key(job, params)
            shared = await self._wait_for_flight(key, deadline)
            if shared is not None:
                image = CachedImage(shared.image, shared.width, shared.height, shared.seed, shared.model_id)
                note = "shared the generation of an identical request made at the same time"
                return await self._repeat(job, request_id, as_shared(plan, note), image, embedder, timings)
        init_image = cached.data if (plan.outcome is Outcome.HIT and cached is not None) else None
        chosen = self._admit(plan, deadline, job.steps or None)
        work = self._generate(job, params, plan, chosen, init_image, request_id, deadline, timings, listener, key)
        if key is None:
            result = await work
        else:
            result = await self.flights.lead(key, work, self._clock() + chosen.estimate_seconds)
        result.embedder = embedder
        return result

    async def _repeat(
        self, job: GenerateJob, request_id: str, plan: Plan, image: CachedImage, embedder: str, timings: Timings
    ) -> RouterResult:
        """An exact repeat: a made image in the wanted format (re-encoding off the event loop)."""
        data, fmt = await asyncio.to_thread(_reencode, image.data, job.output_format)
        return RouterResult(
            request_id=request_id,
            tenant=job.tenant,
            image=data,
            output_format=fmt,
            width=image.width,
            height=image.height,
            seed=image.seed or 0,
            steps_run=0,
            plan=plan,
            pool="cache",
            model_id=image.model_id,
            embedder=embedder,
            timings=timings,
        )

    async def _wait_for_flight(self, key: FlightKey, deadline: float) -> RouterResult | None:
        """The result of an identical request generating now, when this one may wait for it;
        None: generate on its own (no such flight, no time or room to wait, or the flight failed
        for reasons of its own)."""
        flight = self.flights.joinable(key, deadline)
        if flight is None:
            return None
        try:
            with metrics.SINGLEFLIGHT_WAITING.track_inprogress():
                shared = await asyncio.wait_for(self.flights.wait(key, flight), deadline - self._clock())
        except TimeoutError:
            raise DeadlineExceeded("the deadline passed waiting for an identical request's generation") from None
        except (InvalidArgument, FailedPrecondition):
            raise  # the same input fails the same way
        except ModmError:
            return None  # out of time or workers under the first request's deadline: try on its own
        metrics.SINGLEFLIGHT_SHARED.inc()
        return shared

    async def _generate(
        self,
        job: GenerateJob,
        params: common_pb2.GenerationParams,
        plan: Plan,
        chosen: Route,
        init_image: bytes | None,
        request_id: str,
        deadline: float,
        timings: Timings,
        listener: Listener | None,
        flight_key: FlightKey | None = None,
    ) -> RouterResult:
        """Dispatch, then schedule the output's insert into the cache (the flight of `flight_key`
        stays joinable until the insert lands)."""
        result = await self._dispatch(job, params, plan, chosen, init_image, request_id, deadline, timings, listener)
        insert = should_insert(
            plan.outcome,
            job.cache_policy,
            degraded=result.degraded,
            insert_hits=self.settings.insert_hits,
            insert_degraded=self.settings.insert_degraded,
        )
        if insert and self.cache is not None:
            insert_params = common_pb2.GenerationParams()
            insert_params.CopyFrom(params)
            insert_params.seed = result.seed
            insert_params.ClearField("output_format")
            insert_task = self._schedule_insert(job, result, insert_params)
            result.insert_scheduled = insert_task is not None
            if insert_task is not None and flight_key is not None:
                self.flights.linger(flight_key, insert_task)
        return result

    async def _serve_edit(
        self, job: GenerateJob, init: InitImage, request_id: str, deadline: float, listener: Listener | None
    ) -> RouterResult:
        """img2img of the caller's image (OpenAI's images/edits). It is routed and run the way a
        cache hit is (small pool first, the last `strength` of the schedule) through the same
        dispatch, but no cache entry is involved: never looked up nor inserted, recorded as bypassed."""
        if not 0.0 < init.strength <= 1.0:
            raise InvalidArgument("strength", f"{init.strength} is outside (0, 1]")
        await asyncio.to_thread(
            decode_image,
            init.data,
            field="image",
            max_bytes=int(self.settings.max_init_image_mb * 1024 * 1024),
            max_pixels=self.settings.max_init_image_pixels,
        )
        timings = Timings()
        params = _worker_params(job, job.width, job.height, job.guidance_scale)
        note = "the caller's image, not the cache's"
        as_hit = Plan(Outcome.HIT, strength=init.strength, note=note)
        chosen = self._admit(as_hit, deadline, job.steps or None)
        result = await self._dispatch(job, params, as_hit, chosen, init.data, request_id, deadline, timings, listener)
        result.plan = Plan(Outcome.BYPASSED, strength=init.strength, note=note)
        return result

    def _resolved_defaults(self, job: GenerateJob) -> tuple[int, int, float | None]:
        """Size and guidance left unset take the large model's defaults, resolved here so that
        lookups, inserts and exact repeats agree whether a client spelled a default out or not."""
        workers = self.dispatcher.in_pool(Pool.LARGE) or self.dispatcher.in_pool(Pool.SMALL)
        known = next((w for w in workers if w.default_width and w.default_height), None)
        if known is None:
            return job.width, job.height, job.guidance_scale
        guidance = job.guidance_scale if job.guidance_scale is not None else known.default_guidance_scale
        return job.width or known.default_width, job.height or known.default_height, guidance

    async def _plan(
        self, job: GenerateJob, params: common_pb2.GenerationParams, deadline: float, timings: Timings
    ) -> tuple[Plan, str]:
        if not job.cache_policy.reads:
            return plan_request(job.cache_policy, None), ""
        if self.cache is None:
            return plan_request(job.cache_policy, None, cache_note="no cache is configured"), ""
        t0 = self._clock()
        timeout = min(self.settings.cache_timeout_s, max(0.0, deadline - t0))
        try:
            lookup = await self.cache.lookup(job.tenant, job.prompt, params, timeout)
        except CacheError as error:
            timings.lookup = self._clock() - t0
            metrics.CACHE_ERRORS.labels("lookup").inc()
            self._cache_state(False)
            if error.code == "INVALID_ARGUMENT":
                log.warning("cache refused a lookup", extra={"error": str(error)})
            note = f"cache lookup failed ({error.code}); served as a miss"
            return plan_request(job.cache_policy, None, cache_note=note), ""
        timings.lookup = self._clock() - t0
        timings.embed, timings.search = lookup.embed_seconds, lookup.search_seconds
        metrics.STAGE_SECONDS.labels("lookup").observe(timings.lookup)
        self._cache_state(True)
        return plan_request(job.cache_policy, lookup.decision), lookup.decision.embedder

    async def _fetch(
        self, job: GenerateJob, plan: Plan, deadline: float, timings: Timings
    ) -> tuple[CachedImage | None, Plan]:
        assert self.cache is not None
        t0 = self._clock()
        timeout = min(self.settings.cache_timeout_s, max(0.0, deadline - t0))
        try:
            cached = await self.cache.fetch(job.tenant, plan.entry_id, timeout)
        except CacheError as error:
            metrics.CACHE_ERRORS.labels("fetch").inc()
            if error.code not in ("NOT_FOUND",):
                self._cache_state(False)
            timings.fetch = self._clock() - t0
            return None, as_miss(plan, f"cached entry could not be fetched ({error.code}); served as a miss")
        timings.fetch = self._clock() - t0
        metrics.STAGE_SECONDS.labels("fetch").observe(timings.fetch)
        return cached, plan

    async def _dispatch(
        self,
        job: GenerateJob,
        params: common_pb2.GenerationParams,
        plan: Plan,
        chosen: Route,
        init_image: bytes | None,
        request_id: str,
        deadline: float,
        timings: Timings,
        listener: Listener | None,
    ) -> RouterResult:
        """Run the request on a worker of `chosen`'s pool, retrying failures as
        `policy.classify_failure` judges them, until it succeeds or must give up."""
        steps = job.steps or None
        excluded: set[str] = set()
        attempt = 0
        request_faults = 0
        while True:
            attempt += 1
            degraded = chosen.degraded
            hit_job = plan.outcome is Outcome.HIT
            strength = plan.strength if hit_job else 1.0
            t_queue = self._clock()

            def queued(position: int, pool: Pool = chosen.pool, n: int = attempt) -> None:
                if listener is not None:
                    listener(QueuedEvent(str(pool), plan.outcome, position, n))

            worker = await self.dispatcher.acquire(
                chosen.pool,
                steps=steps,
                strength=strength,
                is_hit=hit_job,
                exclude=excluded,
                wait_s=deadline - t_queue,
                on_queued=queued,
            )
            cost = worker.job_seconds(steps, strength)
            timings.queue += self._clock() - t_queue
            t_gen = self._clock()

            def on_event(event: WorkerEvent, address: str = worker.address, n: int = attempt) -> None:
                if listener is None:
                    return
                if event.kind == "started":
                    listener(StartedEvent(address, event.total_steps, event.batch_size, n))
                elif event.kind == "step":
                    listener(StepEvent(event.step, event.total_steps))

            remaining = deadline - t_gen
            call_params = common_pb2.GenerationParams()
            call_params.CopyFrom(params)
            if job.guidance_scale is None:  # resolved for the cache's keys; each model keeps its own default
                call_params.ClearField("guidance_scale")
            if hit_job:
                call_params.steps = hit_steps(params.steps, worker.default_steps, strength)
            try:
                reply = await self.discovery.client(worker.address).generate(
                    call_params,
                    init_image=init_image if hit_job else None,
                    strength=strength,
                    timeout_s=attempt_timeout(
                        remaining,
                        cost,
                        factor=self.settings.attempt_timeout_factor,
                        floor_s=self.settings.attempt_timeout_floor_s,
                    ),
                    on_event=on_event,
                )
            except WorkerFailure as failure:
                self.window.record_service(
                    ServiceRecord(self._clock(), worker.address, self._clock() - t_gen, 0, failed=True)
                )
                last_error, kind = failure, classify_failure(failure.code, failure.reason)
                request_faults += kind is FailureKind.REQUEST
                excluded.add(worker.address)
                if kind.ejects:
                    self.dispatcher.mark_unhealthy(worker.address)
                log.warning(
                    "worker attempt failed",
                    extra={
                        "request_id": request_id,
                        "worker": worker.address,
                        "code": failure.code,
                        "reason": failure.reason,
                        "kind": str(kind),
                    },
                )
                if not should_retry(kind, request_faults):
                    raise _worker_error(failure, len(excluded)) from None
            else:
                self.dispatcher.mark_succeeded(worker.address)
                elapsed = self._clock() - t_gen
                timings.generate = elapsed
                metrics.STAGE_SECONDS.labels("generate").observe(elapsed)
                self.window.record_service(ServiceRecord(self._clock(), worker.address, elapsed, reply.steps_run))
                return RouterResult(
                    request_id=request_id,
                    tenant=job.tenant,
                    image=reply.image,
                    output_format=FORMAT_FROM_PROTO.get(reply.format, ImageFormat.PNG),
                    width=reply.width,
                    height=reply.height,
                    seed=reply.seed,
                    steps_run=reply.steps_run,
                    plan=plan,
                    pool=str(worker.pool),
                    model_id=reply.model_id,
                    worker=worker.address,
                    degraded=degraded and worker.pool is Pool.SMALL,
                    large_took_hit=hit_job and worker.pool is Pool.LARGE,
                    attempts=attempt,
                    timings=timings,
                )
            finally:
                self.dispatcher.release(worker, cost)

            pause = backoff_seconds(attempt, base=self.settings.retry_backoff_s, cap=self.settings.retry_backoff_cap_s)
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise DeadlineExceeded(f"deadline passed after {attempt} attempt(s): {last_error}")
            if not may_retry(attempt, max_attempts=self.settings.max_attempts, remaining_s=remaining, backoff_s=pause):
                if attempt < self.settings.max_attempts:
                    raise DeadlineExceeded(f"no time left to retry after {attempt} attempt(s): {last_error}")
                if kind is FailureKind.REQUEST:
                    raise _worker_error(last_error, len(excluded))
                raise Unavailable(f"all {attempt} worker attempts failed; last: {last_error}")
            metrics.RETRIES.labels(last_error.code).inc()
            await asyncio.sleep(pause)
            rerouted = self._route(plan, deadline, steps)
            if isinstance(rerouted, Route):
                chosen = rerouted  # may now degrade to the small pool
            # else: keep the pool and wait in its queue; a worker may come back before the deadline
            if kind is FailureKind.REQUEST and not self._another_worker(chosen.pool, excluded):
                raise _worker_error(last_error, len(excluded))  # its one retry must go elsewhere

    def _admit(self, plan: Plan, deadline: float, steps: int | None) -> Route:
        """The pool to serve `plan`, or the refusal: RESOURCE_EXHAUSTED with a retry hint when
        nothing can serve it in time, UNAVAILABLE when no worker exists."""
        chosen = self._route(plan, deadline, steps)
        if isinstance(chosen, Reject):
            if chosen.retry_after_s is None:
                raise Unavailable(chosen.reason)
            raise ResourceExhausted(chosen.reason, chosen.retry_after_s)
        return chosen

    def _another_worker(self, pool: Pool, excluded: set[str]) -> bool:
        return any(w.address not in excluded for w in self.dispatcher.usable(pool))

    def _route(self, plan: Plan, deadline: float, steps: int | None) -> Route | Reject:
        return route(
            plan,
            self.dispatcher.pool_load(Pool.LARGE),
            self.dispatcher.pool_load(Pool.SMALL),
            remaining_s=deadline - self._clock(),
            steps=steps,
            rules=self.dispatcher.rules,
            monitor_degrade=self.degrade.active(self._clock()),
        )

    def set_degrade(self, degrade: bool, reason: str, source: str, ttl_s: float) -> DegradeOverride:
        """The monitor's overload override (validated; lapses after `ttl_s`); logged when it changes."""
        fresh = degrade_override(degrade, reason, source, ttl_s, now=self._clock())
        if fresh.degrade != self.degrade.active(self._clock()) or fresh.reason != self.degrade.reason:
            log.info("degrade override", extra={"degrade_misses": degrade, "reason": reason, "source": source})
        self.degrade = fresh
        return fresh

    def degrade_state(self) -> tuple[DegradeOverride, float]:
        """The override and the router clock's now, to tell whether it is in force and for how long."""
        return self.degrade, self._clock()

    # --- after the reply ----------------------------------------------------------------

    def _schedule_insert(
        self, job: GenerateJob, result: RouterResult, params: common_pb2.GenerationParams
    ) -> asyncio.Task[None] | None:
        """Insert after the reply, unless `max_pending_inserts` are pending already (a cache too
        slow to keep up must not pile up images in memory): then the output is not cached (None)."""
        if len(self._background) >= self.settings.max_pending_inserts:
            metrics.INSERTS.labels("dropped").inc()
            log.warning("insert dropped: too many pending", extra={"request_id": result.request_id})
            return None
        task = asyncio.create_task(self._insert(job, result, params))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _insert(self, job: GenerateJob, result: RouterResult, params: common_pb2.GenerationParams) -> None:
        assert self.cache is not None
        metadata = {"request_id": result.request_id, "outcome": str(result.plan.outcome), "pool": result.pool}
        try:
            entry_id = await self.cache.insert(
                job.tenant,
                job.prompt,
                result.image,
                result.model_id,
                params,
                metadata,
                self.settings.insert_timeout_s,
            )
        except CacheError as error:
            metrics.INSERTS.labels("error").inc()
            log.warning("cache insert failed", extra={"request_id": result.request_id, "error": str(error)})
            return
        metrics.INSERTS.labels("ok").inc()
        log.info("inserted", extra={"request_id": result.request_id, "entry_id": entry_id})

    @property
    def inserts_pending(self) -> int:
        return len(self._background)  # every background task is an insert

    async def drain_inserts(self, within_s: float) -> None:
        if self._background:
            await asyncio.wait(set(self._background), timeout=within_s)

    async def close(self) -> None:
        await self.drain_inserts(5.0)
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- statistics ---------------------------------------------------------------------

    def _cache_state(self, up: bool) -> None:
        self.cache_available = up
        metrics.CACHE_UP.set(1 if up else 0)

    def _record(self, result: RouterResult) -> None:
        plan = result.plan
        self.window.record_request(
            RequestRecord(
                self._clock(),
                str(plan.outcome),
                plan.skipped_steps if plan.outcome is Outcome.HIT else 0,
                plan.total_steps,
                result.degraded,
                max(0, result.attempts - 1),
            )
        )
        metrics.REQUESTS.labels(str(plan.outcome), result.pool, "ok").inc()
        metrics.LATENCY.labels(str(plan.outcome)).observe(result.timings.total)
        metrics.STAGE_SECONDS.labels("queue").observe(result.timings.queue)
        if plan.outcome is Outcome.HIT:
            metrics.SKIPPED_STEPS.observe(plan.skipped_steps)
        if result.degraded:
            metrics.DEGRADED.inc()
        log.info(
            "served",
            extra={
                "request_id": result.request_id,
                "outcome": str(plan.outcome),
                "pool": result.pool,
                "worker": result.worker,
                "total_s": round(result.timings.total, 4),
            },
        )

    def snapshot(self) -> WindowSnapshot:
        snap = self.window.snapshot(self._clock())
        metrics.HIT_RATE.set(snap.hit_rate)
        for pool in Pool:
            load = self.dispatcher.pool_load(pool)
            metrics.QUEUE_DEPTH.labels(str(pool)).set(load.queued)
            metrics.IN_FLIGHT.labels(str(pool)).set(load.in_flight)
            metrics.WORKERS.labels(str(pool)).set(load.workers)
        return snap


def _worker_params(job: GenerateJob, width: int, height: int, guidance: float | None) -> common_pb2.GenerationParams:
    params = common_pb2.GenerationParams(
        prompt=job.prompt,
        negative_prompt=job.negative_prompt,
        width=width,
        height=height,
        steps=job.steps,
        output_format=FORMAT_TO_PROTO[job.output_format],
    )
    if guidance is not None:
        params.guidance_scale = guidance
    if job.seed is not None:
        params.seed = job.seed
    return params


def _flight_key(job: GenerateJob, params: common_pb2.GenerationParams) -> FlightKey:
    raw = read_params(params)
    fp = fingerprint(job.prompt, raw.negative_prompt, raw.width, raw.height, raw.steps, raw.guidance_scale, raw.seed)
    return job.tenant, fp.key, fp.seed


def _reencode(data: bytes, wanted: ImageFormat) -> tuple[bytes, ImageFormat]:
    """The cached bytes as they are when already in the wanted format, else re-encoded."""
    with Image.open(io.BytesIO(data)) as image:
        current = _PIL_FORMAT.get(image.format or "")
        if current is wanted:
            return data, wanted
        image.load()
        return encode_image(image.convert("RGB"), wanted), wanted
