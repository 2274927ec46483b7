"""The emulated device: a runner that spends a GPU's time without a GPU.

It sleeps through each call as its `DeviceProfile` says (half the overhead before the first step,
for the text encoders, the other half after the last, for the VAE), step by step, so streaming,
stop checks, deadlines and batching behave as on the device. Its images are flat colours, one
per (size, colour), encoded once per format: an emulated fleet spends no CPU on pixels.
Text-to-image answers slate grey; img2img answers the init image's mean colour tinted halfway to
teal, which is derived from the init image (a refinement of another image differs) at the cost of
one box-filter pass over pixels the request already decoded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import cast

from PIL import Image

from modm.images import ImageFormat, encode_image
from modm.services.worker.device_profile import DeviceProfile
from modm.services.worker.jobs import GenerationJob
from modm.services.worker.runner import GenerationStopped, PipelineFacts, StepCallback, StopCheck

DEVICE = "emulated"
TEXT_TO_IMAGE_COLOUR = (112, 128, 144)
IMG2IMG_TINT = (0, 128, 128)

Colour = tuple[int, ...]


def emulated_model_id(profile: DeviceProfile) -> str:
    return f"{DEVICE}:{profile.name}"


@lru_cache(maxsize=64)
def _flat(width: int, height: int, colour: Colour) -> Image.Image:
    return Image.new("RGB", (width, height), colour)


@lru_cache(maxsize=256)
def _encoded(width: int, height: int, colour: Colour, output_format: ImageFormat) -> bytes:
    return encode_image(_flat(width, height, colour), output_format)


def _refined_colour(init_image: Image.Image) -> Colour:
    mean = cast(Colour, init_image.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0)))  # RGB: decode_image
    return tuple((channel + tint) // 2 for channel, tint in zip(mean, IMG2IMG_TINT, strict=True))


class EmulatedRunner:
    """Implements `Runner` by sleeping; `clock` and `sleep` are seams for tests on a virtual clock."""

    def __init__(
        self,
        profile: DeviceProfile,
        facts: PipelineFacts,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.profile = profile
        self.facts = facts
        self._clock = clock
        self._sleep = sleep

    @classmethod
    def load(
        cls,
        profile: DeviceProfile,
        *,
        time_scale: float = 1.0,
        default_steps: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> EmulatedRunner:
        """Pay the profile's load time (times `time_scale`, like every emulated duration)."""
        scaled = profile.scaled(time_scale)
        sleep(scaled.load_seconds)
        facts = PipelineFacts(
            model_id=emulated_model_id(profile),
            revision=None,
            variant=None,
            family=profile.spec,
            device=DEVICE,
            hardware=profile.device,
            dtype=profile.dtype,
            default_width=profile.width,
            default_height=profile.height,
            default_steps=default_steps or profile.default_steps,
            size_multiple=profile.size_multiple,
            load_seconds=scaled.load_seconds,
        )
        return cls(scaled, facts, clock, sleep)

    def generate(
        self, jobs: Sequence[GenerationJob], on_step: StepCallback, should_stop: StopCheck
    ) -> tuple[list[Image.Image], int]:
        first = jobs[0]
        steps = first.planned_steps
        overhead, per_step = self.profile.call_seconds(len(jobs), first.width, first.height)
        first_step_at = self._clock() + overhead / 2
        for step in range(1, steps + 1):
            self._sleep_until(first_step_at + step * per_step)
            on_step(step, steps)
            if should_stop():
                raise GenerationStopped(f"stopped after step {step} of {steps}")
        self._sleep_until(first_step_at + steps * per_step + overhead / 2)
        return [self._image(job) for job in jobs], steps

    def encode(self, image: Image.Image, output_format: ImageFormat) -> bytes:
        """Every image this runner makes is one flat colour: its first pixel names its bytes."""
        colour = cast(Colour, image.getpixel((0, 0)))
        return _encoded(image.width, image.height, colour, output_format)

    def _image(self, job: GenerationJob) -> Image.Image:
        colour = TEXT_TO_IMAGE_COLOUR if job.init_image is None else _refined_colour(job.init_image)
        return _flat(job.width, job.height, colour)

    def _sleep_until(self, deadline: float) -> None:
        """Sleeping to deadlines from the call's start keeps oversleeps from adding up over steps."""
        left = deadline - self._clock()
        if left > 0:
            self._sleep(left)
