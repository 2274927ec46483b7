"""The router's request path over fake workers and a fake cache: how worker failures are retried
and whether they eject, single-flight of identical misses, off-loop re-encoding, bounded inserts."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image
from prometheus_client import REGISTRY

from modm.errors import FailedPrecondition, ModmError, OutOfMemory, ResourceExhausted
from modm.grpc_errors import FailureReason
from modm.images import ImageFormat
from modm.params import RawParams
from modm.services.router import engine as engine_module
from modm.services.router.backends import CachedImage, Lookup, WorkerFailure
from modm.services.router.discovery import Discovery
from modm.services.router.dispatch import Dispatcher
from modm.services.router.engine import RouterEngine, RouterResult
from modm.services.router.policy import CacheDecision, CachePolicy, Outcome, Pool
from modm.services.router.settings import RouterSettings
from modm.services.router.validation import RawGenerate
from modm.v1 import common_pb2, worker_pb2


def png(color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(out, format="PNG")
    return out.getvalue()


OOM_MESSAGE = "out of memory generating 1024x1024 at batch 1 on cuda:0: CUDA out of memory"
OOM = WorkerFailure("?", "FAILED_PRECONDITION", OOM_MESSAGE, FailureReason.OUT_OF_MEMORY)


class FakeWorker:
    """A large worker whose generate answers from `script` (a failure to raise, else an image),
    optionally after `gate` opens; records every call."""

    def __init__(self, address: str, script: list[Exception | None] | None = None) -> None:
        self.address = address
        self.script = list(script or [])
        self.gate: asyncio.Event | None = None
        self.calls = 0
        self.cancelled = False

    async def serving(self, timeout_s: float) -> bool:
        return True

    async def info(self, timeout_s: float) -> worker_pb2.WorkerInfo:
        return worker_pb2.WorkerInfo(model_id="large", max_batch_size=4, default_width=16, default_height=16,
                                     default_steps=10, seconds_per_step=0.1, size_multiple=8,
                                     role=worker_pb2.WORKER_ROLE_LARGE)  # fmt: skip

    async def generate(self, params: common_pb2.GenerationParams, **kwargs: Any) -> worker_pb2.GeneratedImage:
        self.calls += 1
        if self.gate is not None:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        return worker_pb2.GeneratedImage(image=png(), format=common_pb2.IMAGE_FORMAT_PNG, width=16, height=16,
                                         seed=params.seed if params.HasField("seed") else 7, steps_run=10,
                                         model_id="large")  # fmt: skip

    async def close(self) -> None:
        pass


class FakeCache:
    """Misses everything unless `repeat` is set; inserts wait for `insert_gate` when it is set."""

    def __init__(self) -> None:
        self.repeat: CachedImage | None = None
        self.insert_gate: asyncio.Event | None = None
        self.inserted: list[str] = []

    async def lookup(self, tenant: str, prompt: str, params: common_pb2.GenerationParams, timeout_s: float) -> Lookup:
        exact = self.repeat is not None
        entry = "e" * 32 if exact else ""
        return Lookup(CacheDecision(exact, exact, 50 if exact else 0, 50, 0.0 if exact else 1.0, 0.2, entry), 0, 0)

    async def fetch(self, tenant: str, entry_id: str, timeout_s: float) -> CachedImage:
        assert self.repeat is not None
        return self.repeat

    async def insert(self, tenant: str, prompt: str, image: bytes, *args: object, **kwargs: object) -> str:
        if self.insert_gate is not None:
            await self.insert_gate.wait()
        self.inserted.append(prompt)
        return "f" * 32

    async def close(self) -> None:
        pass


async def make_engine(workers: list[FakeWorker], cache: FakeCache | None = None, **settings: Any) -> RouterEngine:
    by_address = {w.address: w for w in workers}
    config = RouterSettings(large_workers=list(by_address), retry_backoff_s=0.0, **settings)
    dispatcher = Dispatcher(config.rules(), eject_after=config.eject_after_failures)
    make_client: Callable[[str], FakeWorker] = by_address.__getitem__
    discovery = Discovery({Pool.LARGE: list(by_address)}, dispatcher, interval_s=1, capacity_cap=None,
                          make_client=make_client)  # type: ignore[arg-type]  # fmt: skip
    await discovery.refresh_once()
    return RouterEngine(config, dispatcher, discovery, cache)


def request(prompt: str = "a lighthouse", policy: CachePolicy = CachePolicy.READ_WRITE, **kw: Any) -> RawGenerate:
    fields: dict[str, Any] = {"negative_prompt": "", "width": 0, "height": 0, "steps": 0, "guidance_scale": None,
                              "seed": 3, "output_format": ImageFormat.PNG} | kw  # fmt: skip
    return RawGenerate(RawParams(prompt=prompt, **fields), "", policy)


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def untouched(engine: RouterEngine) -> bool:
    """No worker was marked unhealthy, counted toward ejection or ejected."""
    workers = engine.dispatcher.workers.values()
    return all(w.healthy and w.consecutive_failures == 0 for w in workers) and not engine.dispatcher.ejected()


# --- worker failures -------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["INTERNAL", "UNKNOWN"])
async def test_an_unexplained_error_is_retried_once_elsewhere_and_ejects_nobody(code: str) -> None:
    workers = [FakeWorker(f"127.0.0.1:700{i}", [WorkerFailure("?", code, "boom")]) for i in range(3)]
    engine = await make_engine(workers, eject_after_failures=1)
    with pytest.raises(ModmError, match="boom") as raised:
        await engine.generate(request(), 30)
    assert type(raised.value) is ModmError  # INTERNAL to the client, never a retry hint
    assert sorted(w.calls for w in workers) == [0, 1, 1]  # once, then once on another worker
    assert untouched(engine)


async def test_out_of_memory_is_retried_once_on_another_worker_then_answered_as_out_of_memory() -> None:
    workers = [FakeWorker(f"127.0.0.1:700{i}", [OOM]) for i in range(3)]
    engine = await make_engine(workers, eject_after_failures=1)
    with pytest.raises(OutOfMemory, match="1024x1024 at batch 1") as raised:
        await engine.generate(request(), 30)
    assert not isinstance(raised.value, ResourceExhausted)
    assert sorted(w.calls for w in workers) == [0, 1, 1]
    assert untouched(engine)


async def test_out_of_memory_then_success_on_another_worker() -> None:
    first, second = FakeWorker("127.0.0.1:7001", [OOM]), FakeWorker("127.0.0.1:7002")
    engine = await make_engine([first, second])
    result = await engine.generate(request(), 30)
    assert result.attempts == 2 and {first.calls, second.calls} == {1}
    assert untouched(engine)


async def test_a_lone_worker_is_not_asked_again_after_running_out_of_memory() -> None:
    lone = FakeWorker("127.0.0.1:7001", [OOM, OOM])
    engine = await make_engine([lone])
    with pytest.raises(OutOfMemory):
        await engine.generate(request(), 30)
    assert lone.calls == 1 and untouched(engine)


async def test_a_pipeline_error_is_retried_once_and_keeps_its_reason() -> None:
    failure = WorkerFailure("?", "FAILED_PRECONDITION", "the VAE failed", FailureReason.PIPELINE_ERROR)
    workers = [FakeWorker(f"127.0.0.1:700{i}", [failure]) for i in range(3)]
    engine = await make_engine(workers)
    with pytest.raises(FailedPrecondition, match="the VAE failed") as raised:
        await engine.generate(request(), 30)
    assert type(raised.value).__name__ == "PipelineError"
    assert sorted(w.calls for w in workers) == [0, 1, 1] and untouched(engine)


async def test_a_broken_worker_still_counts_toward_ejection() -> None:
    broken = FakeWorker("127.0.0.1:7001", [WorkerFailure("?", "UNAVAILABLE", "crashed")])
    healthy = FakeWorker("127.0.0.1:7002")
    engine = await make_engine([broken, healthy], eject_after_failures=1)
    result = await engine.generate(request(), 30)
    assert result.worker == "127.0.0.1:7002" and engine.dispatcher.ejected() == ["127.0.0.1:7001"]


async def test_a_key_error_in_the_request_path_is_a_bug_not_a_removed_worker() -> None:
    buggy, other = FakeWorker("127.0.0.1:7001", [KeyError("params")]), FakeWorker("127.0.0.1:7002")
    engine = await make_engine([buggy, other])
    with pytest.raises(KeyError):
        await engine.generate(request(), 30)
    assert (buggy.calls, other.calls) == (1, 0) and untouched(engine)


async def test_a_worker_removed_after_it_was_chosen_is_retried_elsewhere() -> None:
    gone, other = FakeWorker("127.0.0.1:7001"), FakeWorker("127.0.0.1:7002")
    engine = await make_engine([gone, other])
    del engine.discovery.clients["127.0.0.1:7001"]  # discovery dropped it; the dispatcher still hands it out
    result = await engine.generate(request(), 30)
    assert result.worker == "127.0.0.1:7002" and result.attempts == 2 and gone.calls == 0


# --- single-flight -----------------------------------------------------------------------------


async def wait_for_waiters(n: float) -> None:
    for _ in range(1000):
        if counter("modm_router_singleflight_waiting") == n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never {n} waiters")


async def identical_burst(
    engine: RouterEngine, worker: FakeWorker, n: int, cancel_first: bool = False, **kw: Any
) -> list[RouterResult | BaseException]:
    worker.gate = asyncio.Event()
    tasks = [asyncio.create_task(engine.generate(request(**kw), 30)) for _ in range(n)]
    await wait_for_waiters(n - 1 if kw.get("policy", CachePolicy.READ_WRITE) is CachePolicy.READ_WRITE else 0)
    if cancel_first:
        tasks[0].cancel()
        await asyncio.sleep(0)
    worker.gate.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_identical_concurrent_misses_share_one_generation_and_one_insert() -> None:
    worker, cache = FakeWorker("127.0.0.1:7001"), FakeCache()
    engine = await make_engine([worker], cache)
    shared_before = counter("modm_router_singleflight_shared_total")
    results = await identical_burst(engine, worker, 10, output_format=ImageFormat.PNG)
    assert worker.calls == 1
    assert all(isinstance(r, RouterResult) for r in results)
    first, *rest = [r for r in results if isinstance(r, RouterResult)]
    assert first.plan.outcome is Outcome.MISS and first.insert_scheduled
    assert {r.plan.outcome for r in rest} == {Outcome.EXACT_REPEAT}
    assert {r.image for r in rest} == {first.image} and {r.seed for r in rest} == {3}
    assert all(r.pool == "cache" and not r.insert_scheduled for r in rest)
    assert counter("modm_router_singleflight_shared_total") - shared_before == 9
    assert engine.snapshot().outcomes["exact_repeat"] == 9
    await engine.drain_inserts(5)
    assert cache.inserted == ["a lighthouse"]


async def test_the_generation_goes_on_for_the_waiters_when_the_first_caller_leaves() -> None:
    worker = FakeWorker("127.0.0.1:7001")
    engine = await make_engine([worker], FakeCache())
    results = await identical_burst(engine, worker, 10, cancel_first=True)
    assert isinstance(results[0], asyncio.CancelledError) and not worker.cancelled
    assert all(isinstance(r, RouterResult) and r.plan.outcome is Outcome.EXACT_REPEAT for r in results[1:])
    assert worker.calls == 1


async def test_a_request_after_the_generation_but_before_its_insert_lands_shares_it() -> None:
    worker, cache = FakeWorker("127.0.0.1:7001"), FakeCache()
    cache.insert_gate = asyncio.Event()
    engine = await make_engine([worker], cache)
    first = await engine.generate(request(), 30)
    assert first.plan.outcome is Outcome.MISS and engine.inserts_pending == 1
    second = await engine.generate(request(), 30)
    assert second.plan.outcome is Outcome.EXACT_REPEAT and second.image == first.image
    assert worker.calls == 1
    cache.insert_gate.set()
    await engine.drain_inserts(5)
    third = await engine.generate(request(), 30)  # the cache (a miss here) answers from now on
    assert third.plan.outcome is Outcome.MISS and worker.calls == 2


@pytest.mark.parametrize("policy", [CachePolicy.BYPASS, CachePolicy.NO_STORE, CachePolicy.OFF])
async def test_requests_that_do_not_read_and_write_the_cache_run_on_their_own(policy: CachePolicy) -> None:
    worker = FakeWorker("127.0.0.1:7001")
    engine = await make_engine([worker], FakeCache())
    results = await identical_burst(engine, worker, 3, policy=policy)
    assert worker.calls == 3 and all(isinstance(r, RouterResult) for r in results)


async def test_different_tenants_never_share() -> None:
    worker = FakeWorker("127.0.0.1:7001")
    engine = await make_engine([worker], FakeCache())
    worker.gate = asyncio.Event()
    raws = [RawGenerate(request().params, tenant, CachePolicy.READ_WRITE) for tenant in ("acme", "globex")]
    tasks = [asyncio.create_task(engine.generate(raw, 30)) for raw in raws]
    await asyncio.sleep(0)
    worker.gate.set()
    results = await asyncio.gather(*tasks)
    assert worker.calls == 2 and {r.plan.outcome for r in results} == {Outcome.MISS}


# --- after the reply -----------------------------------------------------------------------------


async def test_exact_repeats_are_reencoded_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    reencode = engine_module._reencode

    def recording(data: bytes, wanted: ImageFormat) -> tuple[bytes, ImageFormat]:
        threads.append(threading.get_ident())
        return reencode(data, wanted)

    monkeypatch.setattr(engine_module, "_reencode", recording)
    cache = FakeCache()
    cache.repeat = CachedImage(png(), 16, 16, 3, "large")
    engine = await make_engine([FakeWorker("127.0.0.1:7001")], cache)
    result = await engine.generate(request(output_format=ImageFormat.JPEG), 30)
    assert result.plan.outcome is Outcome.EXACT_REPEAT and result.image[:2] == b"\xff\xd8"
    assert threads and threading.get_ident() not in threads


async def test_inserts_beyond_the_cap_are_dropped_and_counted() -> None:
    cache = FakeCache()
    cache.insert_gate = asyncio.Event()
    engine = await make_engine([FakeWorker("127.0.0.1:7001")], cache, max_pending_inserts=2)
    dropped_before = counter("modm_router_inserts_total", result="dropped")
    results = [await engine.generate(request(f"prompt {i}"), 30) for i in range(3)]
    assert [r.insert_scheduled for r in results] == [True, True, False]
    assert engine.inserts_pending == 2
    assert counter("modm_router_inserts_total", result="dropped") - dropped_before == 1
    cache.insert_gate.set()
    await engine.drain_inserts(5)
    assert cache.inserted == ["prompt 0", "prompt 1"] and engine.inserts_pending == 0
