"""The emulated device: it spends a profile's time step by step (on a virtual clock here, so the
numbers are exact), stops where the stop check says, batches through the real engine, answers
cached flat images, and never imports torch or diffusers."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from modm.images import ImageFormat, encode_image
from modm.params import RawParams
from modm.services.worker import metrics
from modm.services.worker import runner as runner_module
from modm.services.worker.device_profile import DeviceProfile
from modm.services.worker.emulation import EmulatedRunner
from modm.services.worker.engine import StepDone, WorkerEngine, WorkerEvent, limits_for
from modm.services.worker.jobs import GenerationJob
from modm.services.worker.runner import GenerationStopped, measure_profile, never_stop
from modm.services.worker.settings import WorkerSettings
from modm.services.worker.validation import RawRequest, validate

PROFILE = DeviceProfile(
    name="test-gpu",
    family="sd",
    role="small",
    model="m",
    device="Test GPU",
    dtype="fp16",
    width=64,
    height=64,
    size_multiple=8,
    default_steps=10,
    seconds_per_step=0.25,
    overhead_seconds=1.0,
    load_seconds=7.0,
    batch={2: 1.5, 4: 2.5},
)


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def virtual_runner(clock: VirtualClock) -> EmulatedRunner:
    """A loaded runner on `clock`, turned back to 0 after the load."""
    runner = EmulatedRunner.load(PROFILE, clock=clock, sleep=clock.sleep)
    clock.now = 0.0
    return runner


def job(
    runner: EmulatedRunner, steps: int = 10, init: Image.Image | None = None, seed: int = 1, width: int = 0
) -> GenerationJob:
    """A validated job as the engine would run it (img2img at strength 0.5 when `init` is given)."""
    params = RawParams("a cat", "", width, 0, steps, None, seed, ImageFormat.PNG)
    raw = RawRequest(params) if init is None else RawRequest(params, encode_image(init), 0.5)
    return validate(raw, limits_for(WorkerSettings(model="m"), runner))


def test_loading_pays_the_scaled_load_time_and_states_the_facts() -> None:
    clock = VirtualClock()
    runner = EmulatedRunner.load(PROFILE, time_scale=0.5, default_steps=12, clock=clock, sleep=clock.sleep)
    assert clock.now == pytest.approx(3.5) == runner.facts.load_seconds
    facts = runner.facts
    assert (facts.model_id, facts.device, facts.hardware, facts.dtype) == (
        "emulated:test-gpu",
        "emulated",
        "Test GPU",
        "fp16",
    )
    assert (facts.family.name, facts.default_width, facts.default_steps, facts.size_multiple) == ("sd", 64, 12, 8)
    assert runner.profile.seconds_per_step == pytest.approx(0.125)


def test_a_call_sleeps_half_the_overhead_each_side_of_its_steps() -> None:
    clock = VirtualClock()
    runner = virtual_runner(clock)
    stepped_at: list[tuple[int, int, float]] = []
    images, steps_run = runner.generate([job(runner, 4)], lambda s, t: stepped_at.append((s, t, clock.now)), never_stop)
    assert steps_run == 4 and len(images) == 1
    assert stepped_at == [(s, 4, pytest.approx(0.5 + 0.25 * s)) for s in (1, 2, 3, 4)]
    assert clock.now == pytest.approx(1.0 + 4 * 0.25)


def test_a_batch_takes_the_batch_curve_and_a_bigger_image_its_pixels() -> None:
    clock = VirtualClock()
    runner = virtual_runner(clock)
    runner.generate([job(runner, 4)] * 3, lambda s, t: None, never_stop)  # between the points 2 and 4
    assert clock.now == pytest.approx(2.0 * (1.0 + 4 * 0.25))
    clock.now = 0.0
    runner.generate([job(runner, 4, width=128)], lambda s, t: None, never_stop)
    assert clock.now == pytest.approx(2 * (1.0 + 4 * 0.25))


def test_img2img_runs_its_strengths_share_of_the_steps() -> None:
    clock = VirtualClock()
    runner = virtual_runner(clock)
    refine = job(runner, 10, init=Image.new("RGB", (64, 64), (200, 0, 0)))
    assert refine.planned_steps == 5  # strength 0.5 of 10 steps
    steps: list[int] = []
    assert runner.generate([refine], lambda s, t: steps.append(s), never_stop)[1] == 5
    assert steps == [1, 2, 3, 4, 5]
    assert clock.now == pytest.approx(1.0 + 5 * 0.25)


def test_the_warm_up_profile_agrees_with_the_device_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = VirtualClock()
    monkeypatch.setattr(runner_module.time, "perf_counter", clock)
    measured = measure_profile(virtual_runner(clock))
    assert (measured.seconds_per_step, measured.overhead_seconds) == pytest.approx((0.25, 1.0))


def test_the_stop_check_ends_the_call_after_the_step_it_says() -> None:
    clock = VirtualClock()
    runner = virtual_runner(clock)
    steps: list[int] = []
    with pytest.raises(GenerationStopped, match="after step 3 of 10"):
        runner.generate([job(runner)], lambda s, t: steps.append(s), lambda: len(steps) >= 3)
    assert steps == [1, 2, 3]
    assert clock.now == pytest.approx(0.5 + 3 * 0.25)


def test_images_are_flat_cached_and_encoded_once_per_format() -> None:
    runner = virtual_runner(VirtualClock())
    (first, second), _ = runner.generate([job(runner), job(runner, seed=2)], lambda s, t: None, never_stop)
    assert first is second and first.size == (64, 64)
    png = runner.encode(first, ImageFormat.PNG)
    assert runner.encode(second, ImageFormat.PNG) is png
    assert Image.open(io.BytesIO(runner.encode(first, ImageFormat.WEBP))).format == "WEBP"


def test_img2img_answers_a_colour_derived_from_its_init_image() -> None:
    runner = virtual_runner(VirtualClock())

    def refined(colour: tuple[int, int, int]) -> object:
        init = Image.new("RGB", (96, 96), colour)
        (image,), _ = runner.generate([job(runner, init=init)], lambda s, t: None, never_stop)
        assert image.size == (64, 64)  # the requested size, not the init image's
        return image.getpixel((0, 0))

    assert refined((200, 0, 0)) != refined((0, 0, 200))
    assert refined((200, 0, 0)) == refined((200, 0, 0))


@pytest.fixture
async def emulated_engine() -> AsyncIterator[Callable[..., WorkerEngine]]:
    """An engine over an emulated runner that really sleeps (short steps)."""
    engines: list[WorkerEngine] = []

    def make(seconds_per_step: float, **settings: object) -> WorkerEngine:
        fast = PROFILE.model_copy(
            update={"seconds_per_step": seconds_per_step, "overhead_seconds": 0.0, "load_seconds": 0.0}
        )
        runner = EmulatedRunner.load(fast)
        options: dict[str, object] = dict(model="m", max_batch_size=4, batch_window_ms=50)
        options.update(settings)
        engine = WorkerEngine(runner, WorkerSettings(**options), ThreadPoolExecutor(1))  # type: ignore[arg-type]
        engines.append(engine)
        engine.start()
        return engine

    yield make
    for engine in engines:
        await engine.close()


def request(seed: int, steps: int = 2, width: int = 0) -> RawRequest:
    return RawRequest(RawParams(f"a cat {seed}", "", width, 0, steps, None, seed, ImageFormat.PNG))


async def test_concurrent_requests_form_batches_by_key(emulated_engine: Callable[..., WorkerEngine]) -> None:
    engine = emulated_engine(0.001)
    results = await asyncio.gather(*(engine.generate(request(i, width=64 if i < 3 else 128)) for i in range(5)))
    assert [r.batch_size for r in results] == [3, 3, 3, 2, 2]
    assert [(r.width, r.steps_run) for r in results] == [(64, 2)] * 3 + [(128, 2)] * 2


async def test_a_cancelled_request_stops_its_sleeping_call(emulated_engine: Callable[..., WorkerEngine]) -> None:
    engine = emulated_engine(0.05, max_batch_size=1)
    events: list[WorkerEvent] = []
    first_step = asyncio.Event()

    def listen(event: WorkerEvent) -> None:
        events.append(event)
        if isinstance(event, StepDone):
            first_step.set()

    stopped_before = metrics.STOPPED_CALLS._value.get()
    slow = asyncio.create_task(engine.generate(request(1, steps=150), listen))
    await first_step.wait()
    slow.cancel()
    # One pipeline thread: once the next request is answered, the cancelled call has ended.
    assert (await engine.generate(request(2, steps=1))).steps_run == 1
    assert sum(isinstance(event, StepDone) for event in events) < 150
    assert metrics.STOPPED_CALLS._value.get() == stopped_before + 1


async def test_a_call_goes_on_while_one_of_its_requests_waits(emulated_engine: Callable[..., WorkerEngine]) -> None:
    engine = emulated_engine(0.01)
    first_step = asyncio.Event()
    leaving = asyncio.create_task(
        engine.generate(request(1, steps=20), lambda e: first_step.set() if isinstance(e, StepDone) else None)
    )
    staying = asyncio.create_task(engine.generate(request(2, steps=20)))
    await first_step.wait()
    leaving.cancel()
    result = await staying
    assert (result.batch_size, result.steps_run) == (2, 20)


def test_an_emulated_worker_imports_neither_torch_nor_diffusers() -> None:
    code = """
import asyncio, sys
from concurrent.futures import ThreadPoolExecutor
from modm.images import ImageFormat
from modm.params import RawParams
from modm.services.worker.engine import WorkerEngine
from modm.services.worker.server import load_runner
from modm.services.worker.settings import WorkerSettings
from modm.services.worker.validation import RawRequest

async def main():
    settings = WorkerSettings(device="emulated", profile="sd1.5-a100", time_scale=0.001)
    engine = WorkerEngine(load_runner(settings), settings, ThreadPoolExecutor(1))
    await engine.warm_up()
    engine.start()
    await engine.generate(RawRequest(RawParams("a cat", "", 0, 0, 2, None, 1, ImageFormat.PNG)))
    await engine.close()

asyncio.run(main())
loaded = sorted({"torch", "diffusers"} & set(sys.modules))
assert not loaded, f"an emulated worker imported {loaded}"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
