"""A failed pipeline call fails only its own requests; only a worker that fails a self-test stops serving.

The engine runs over a fake pipeline that fails on chosen prompts (and on batches, for memory).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from PIL import Image

from modm.errors import OutOfMemory, PipelineError, QueueFull, Unavailable
from modm.grpc_errors import FailureReason, reason_for
from modm.images import ImageFormat, encode_image
from modm.params import RawParams
from modm.services.worker.engine import WorkerEngine
from modm.services.worker.failures import is_out_of_memory
from modm.services.worker.families import family_for
from modm.services.worker.jobs import GenerationJob
from modm.services.worker.runner import PROBE_PROMPT, PipelineFacts
from modm.services.worker.settings import WorkerSettings
from modm.services.worker.validation import RawRequest

SIDE = 64


class FakeRunner:
    """Fails a call when `fails(jobs)` says so; records every request call's prompts and counts self-tests."""

    def __init__(self, fails: Callable[[Sequence[GenerationJob]], BaseException | None]) -> None:
        self.fails = fails
        self.calls: list[list[str]] = []
        self.self_tests = 0
        self.facts = PipelineFacts(
            model_id="fake",
            revision=None,
            variant=None,
            family=family_for("StableDiffusionPipeline"),
            device="cpu",
            hardware="cpu",
            dtype="fp32",
            default_width=SIDE,
            default_height=SIDE,
            default_steps=2,
            size_multiple=8,
            load_seconds=0.0,
        )

    def generate(
        self, jobs: Sequence[GenerationJob], on_step: Callable[[int, int], None], should_stop: Callable[[], bool]
    ) -> tuple[list, int]:
        if jobs[0].prompt == PROBE_PROMPT:
            self.self_tests += 1
        else:
            self.calls.append([job.prompt for job in jobs])
        error = self.fails(jobs)
        if error is not None:
            raise error
        return [Image.new("RGB", (job.width, job.height)) for job in jobs], jobs[0].steps

    def encode(self, image: Image.Image, output_format: ImageFormat) -> bytes:
        return encode_image(image, output_format)


def poisoned(marker: str = "POISON") -> Callable[[Sequence[GenerationJob]], BaseException | None]:
    def fails(jobs: Sequence[GenerationJob]) -> BaseException | None:
        return ValueError("the text encoder choked") if any(marker in job.prompt for job in jobs) else None

    return fails


def request(prompt: str, seed: int = 1) -> RawRequest:
    return RawRequest(RawParams(prompt, "", 0, 0, 2, None, seed, ImageFormat.PNG))


class Worker:
    def __init__(self, engine: WorkerEngine) -> None:
        self.engine = engine
        self.broken_reports = 0

    async def generate(self, prompt: str) -> object:
        try:
            return await self.engine.generate(request(prompt))
        except Exception as error:
            return error


@pytest.fixture
async def make_worker() -> AsyncIterator[Callable[..., Worker]]:
    engines: list[WorkerEngine] = []

    def make(runner: FakeRunner, **settings: object) -> Worker:
        options: dict[str, object] = dict(
            model="fake", max_batch_size=4, batch_window_ms=50, unhealthy_after_failures=3
        )
        options.update(settings)
        worker: Worker

        async def on_broken() -> None:
            worker.broken_reports += 1

        engine = WorkerEngine(runner, WorkerSettings(**options), ThreadPoolExecutor(1), on_broken)  # type: ignore[arg-type]
        engines.append(engine)
        worker = Worker(engine)
        engine.start()
        return worker

    yield make
    for engine in engines:
        await engine.close()


async def test_a_poisoned_prompt_fails_alone_and_its_batch_mates_succeed(make_worker: Callable[..., Worker]) -> None:
    runner = FakeRunner(poisoned())
    worker = make_worker(runner)
    outcomes = await asyncio.gather(*(worker.generate(p) for p in ("a cat", "a POISON dog", "a fox")))
    assert isinstance(outcomes[1], PipelineError)
    assert str(outcomes[1]) == (
        f"the pipeline failed generating {SIDE}x{SIDE} at batch 1 on cpu: ValueError: the text encoder choked"
    )
    assert reason_for(outcomes[1]) is FailureReason.PIPELINE_ERROR
    assert [o.batch_size for o in (outcomes[0], outcomes[2])] == [1, 1]  # type: ignore[attr-defined]
    assert runner.calls == [["a cat", "a POISON dog", "a fox"], ["a cat"], ["a POISON dog"], ["a fox"]]
    assert worker.engine.broken is None


async def test_out_of_memory_at_batch_size_is_retried_at_batch_1(make_worker: Callable[..., Worker]) -> None:
    runner = FakeRunner(lambda jobs: torch.OutOfMemoryError("CUDA out of memory.") if len(jobs) > 1 else None)
    worker = make_worker(runner)
    outcomes = await asyncio.gather(*(worker.generate(f"cat {i}") for i in range(3)))
    assert [o.batch_size for o in outcomes] == [1, 1, 1]  # type: ignore[attr-defined]
    assert [len(call) for call in runner.calls] == [3, 1, 1, 1]


async def test_out_of_memory_alone_names_size_batch_and_device_and_never_counts_as_broken(
    make_worker: Callable[..., Worker],
) -> None:
    runner = FakeRunner(
        lambda jobs: (
            torch.OutOfMemoryError("CUDA out of memory.\nTried to allocate") if "huge" in jobs[0].prompt else None
        )
    )
    worker = make_worker(runner, batch_window_ms=0)
    for _ in range(5):  # more than unhealthy_after_failures
        error = await worker.generate("a huge castle")
        assert isinstance(error, OutOfMemory)
        assert str(error) == f"out of memory generating {SIDE}x{SIDE} at batch 1 on cpu: CUDA out of memory."
        assert reason_for(error) is FailureReason.OUT_OF_MEMORY
    assert runner.self_tests == 0 and worker.broken_reports == 0
    assert (await worker.generate("a small castle")).batch_size == 1  # type: ignore[union-attr]


async def test_failures_in_a_row_whose_self_test_passes_were_the_inputs_fault(
    make_worker: Callable[..., Worker],
) -> None:
    runner = FakeRunner(poisoned())
    worker = make_worker(runner, batch_window_ms=0)
    for i in range(3):
        assert isinstance(await worker.generate(f"POISON {i}"), PipelineError)
    assert runner.self_tests == 1
    assert worker.engine.broken is None and worker.broken_reports == 0
    assert (await worker.generate("a cat")).batch_size == 1  # type: ignore[union-attr]


async def test_a_success_resets_the_count_of_failures_in_a_row(make_worker: Callable[..., Worker]) -> None:
    runner = FakeRunner(poisoned())
    worker = make_worker(runner, batch_window_ms=0)
    for prompt in ("POISON", "POISON", "a cat", "POISON", "POISON"):
        await worker.generate(prompt)
    assert runner.self_tests == 0


async def test_a_worker_that_fails_its_self_test_reports_broken_and_refuses_work(
    make_worker: Callable[..., Worker],
) -> None:
    runner = FakeRunner(lambda jobs: RuntimeError("CUDA error: an illegal memory access was encountered"))
    worker = make_worker(runner, batch_window_ms=0)
    for i in range(3):
        assert isinstance(await worker.generate(f"cat {i}"), PipelineError)
    assert runner.self_tests == 1 and worker.broken_reports == 1
    assert worker.engine.broken is not None and "self-test" in worker.engine.broken
    calls = len(runner.calls)
    refused = await worker.generate("a cat")
    assert isinstance(refused, Unavailable) and str(refused).startswith("worker is broken: 3 pipeline calls")
    assert len(runner.calls) == calls


def test_out_of_memory_is_recognised_from_every_allocator() -> None:
    with pytest.raises(RuntimeError) as cpu:
        torch.empty(2**50, dtype=torch.uint8)  # more than any machine has: the CPU allocator refuses
    assert is_out_of_memory(cpu.value)
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("HIP out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(RuntimeError("Expected all tensors to be on the same device"))
    assert not is_out_of_memory(ValueError("prompt says: out of memory"))


def test_a_full_queue_says_so_in_its_reason() -> None:
    assert reason_for(QueueFull("worker queue is full (4 waiting)")) is FailureReason.QUEUE_FULL
