"""The zero-time emulated device (time scale 0) that benchmarks/overhead.py measures the serving
system on: it loads and answers without sleeping (a virtual clock shows no time passing), still
runs an img2img's share of the steps, and returns its image at the requested size."""

from __future__ import annotations

import pytest
from PIL import Image
from pydantic import ValidationError

from modm.images import ImageFormat, encode_image
from modm.params import RawParams
from modm.services.worker.device_profile import load_profile
from modm.services.worker.emulation import EmulatedRunner
from modm.services.worker.engine import limits_for
from modm.services.worker.runner import never_stop
from modm.services.worker.settings import WorkerSettings
from modm.services.worker.validation import RawRequest, validate


class Clock:
    """A virtual clock that records every sleep asked of it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_time_scale_zero_is_a_setting_and_negative_is_not() -> None:
    settings = WorkerSettings(device="emulated", profile="sdxl-a100", time_scale=0)
    assert settings.time_scale == 0 and settings.role == "small"
    with pytest.raises(ValidationError):
        WorkerSettings(device="emulated", profile="sdxl-a100", time_scale=-1)


def test_a_zero_time_device_loads_and_refines_without_spending_time() -> None:
    clock = Clock()
    runner = EmulatedRunner.load(load_profile("sdxl-a100"), time_scale=0, clock=clock, sleep=clock.sleep)
    assert runner.facts.load_seconds == 0
    params = RawParams("a cat", "", 1024, 1024, 0, None, 1, ImageFormat.PNG)
    init = encode_image(Image.new("RGB", (1024, 1024), (200, 0, 0)))
    job = validate(RawRequest(params, init, 0.5), limits_for(WorkerSettings(model="m"), runner))
    steps: list[int] = []
    images, steps_run = runner.generate([job], lambda step, total: steps.append(step), never_stop)
    assert steps_run == 15 and steps == list(range(1, 16))  # SDXL's 30 steps at strength 0.5
    assert images[0].size == (1024, 1024)
    assert clock.now == 0 and all(seconds == 0 for seconds in clock.sleeps)
