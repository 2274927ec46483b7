"""The one interface between the worker engine and what generates its images.

A `Runner` is a diffusers pipeline on a device (pipeline.py) or an emulation of one
(emulation.py). This module imports neither torch nor diffusers, so an emulated worker never
loads them; what the engine does with any runner (profile it, test it) is written here once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from modm.images import ImageFormat
from modm.services.worker.families import FamilySpec
from modm.services.worker.jobs import GenerationJob, JobKind

StepCallback = Callable[[int, int], None]
"""Called after each denoising step with (1-based step, total steps), on the pipeline thread."""

StopCheck = Callable[[], bool]
"""Called after each step, on the pipeline thread: True stops the call (GenerationStopped)."""

PROBE_PROMPT = "a warm-up photograph"


class GenerationStopped(Exception):
    """A runner ended a call between two steps because its stop check said so."""


@dataclass(frozen=True)
class PipelineFacts:
    model_id: str
    revision: str | None
    variant: str | None
    family: FamilySpec
    device: str
    # What the device is: the GPU's or CPU's name, or the emulated profile's device.
    hardware: str
    dtype: str
    default_width: int
    default_height: int
    default_steps: int
    size_multiple: int
    # Seconds it took to load the weights before serving (an emulation's profile says).
    load_seconds: float


@dataclass(frozen=True)
class Profile:
    """Latency model of one image at the default size: overhead + steps x seconds_per_step."""

    seconds_per_step: float
    overhead_seconds: float


class Runner(Protocol):
    """Runs batches of same-key jobs; blocking, so the engine calls it on its pipeline thread."""

    facts: PipelineFacts

    def generate(
        self, jobs: Sequence[GenerationJob], on_step: StepCallback, should_stop: StopCheck
    ) -> tuple[list[Image.Image], int]:
        """One call for jobs sharing a batch key; returns the images and the steps run."""
        ...

    def encode(self, image: Image.Image, output_format: ImageFormat) -> bytes:
        """The bytes of one image that `generate` returned, in the requested format."""
        ...


def never_stop() -> bool:
    return False


def probe_job(facts: PipelineFacts, steps: int) -> GenerationJob:
    """A known-good text-to-image job at the default size, for profiling and self-tests."""
    return GenerationJob(
        JobKind.TEXT_TO_IMAGE,
        PROBE_PROMPT,
        None,
        facts.default_width,
        facts.default_height,
        steps,
        facts.family.default_guidance,
        0,
        ImageFormat.PNG,
        steps,
    )


def time_call(runner: Runner, batch: int, steps: int) -> float:
    """Seconds one call of `batch` probe jobs of `steps` steps takes."""
    jobs = [probe_job(runner.facts, steps)] * batch
    started = time.perf_counter()
    runner.generate(jobs, lambda step, total: None, never_stop)
    return time.perf_counter() - started


def measure_profile(runner: Runner, steps: tuple[int, int] = (2, 6), repeats: int = 2) -> Profile:
    """Fit overhead + per-step cost from timed runs at two step counts, after a warm-up run.

    Each point is the fastest of `repeats` runs: noise from neighbours only ever adds time.
    """
    time_call(runner, 1, steps[0])
    short, long = (min(time_call(runner, 1, n) for _ in range(repeats)) for n in steps)
    if long <= short:  # a neighbour slowed the short runs: no usable slope, so no fixed overhead either
        return Profile(seconds_per_step=long / steps[1], overhead_seconds=0.0)
    per_step = (long - short) / (steps[1] - steps[0])
    return Profile(seconds_per_step=per_step, overhead_seconds=max(short - steps[0] * per_step, 0.0))


def run_self_test(runner: Runner) -> None:
    """One known-good generation (two steps at the default size); raises if the runner is broken."""
    runner.generate([probe_job(runner.facts, 2)], lambda step, total: None, never_stop)
