"""`--profile-out`: a real worker writes its measured speed as a device profile, so anyone with a
GPU can replace the shipped estimates with their own numbers and emulate that device."""

from __future__ import annotations

import datetime
from pathlib import Path

from modm.services.worker.device_profile import DeviceProfile
from modm.services.worker.runner import Profile, Runner, time_call
from modm.services.worker.settings import WorkerSettings

BATCH_SIZES = (2, 4)
# As many steps as the warm-up's longer run, so step time and not overhead dominates each call.
BATCH_PROBE_STEPS = 6
REPEATS = 2


def batch_factors(runner: Runner, max_batch_size: int) -> dict[int, float]:
    """Seconds of a call of B probe images relative to one, for each B the worker may batch.

    Each time is the fastest of `REPEATS` calls: noise from neighbours only ever adds time.
    """

    def fastest(batch: int) -> float:
        return min(time_call(runner, batch, BATCH_PROBE_STEPS) for _ in range(REPEATS))

    single = fastest(1)
    return {batch: fastest(batch) / single for batch in BATCH_SIZES if batch <= max_batch_size}


def record_profile(runner: Runner, warm: Profile, settings: WorkerSettings, path: Path) -> DeviceProfile:
    """Measure the batch curve (on the pipeline thread), then write the profile to `path`."""
    facts = runner.facts
    recorded = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    profile = DeviceProfile(
        name=path.stem,
        family=facts.family.name,
        role=settings.role,
        model=facts.model_id,
        device=facts.hardware,
        dtype=facts.dtype,
        width=facts.default_width,
        height=facts.default_height,
        size_multiple=facts.size_multiple,
        default_steps=facts.default_steps,
        seconds_per_step=warm.seconds_per_step,
        overhead_seconds=warm.overhead_seconds,
        load_seconds=facts.load_seconds,
        batch=batch_factors(runner, settings.max_batch_size),
        recorded=recorded,
    )
    comment = (
        f"Recorded by `modm worker --profile-out` on {recorded}: {facts.model_id} on {facts.hardware}."
        f"\nSeconds per step and overhead: the warm-up's fit at the default size, batch 1; "
        f"batch: calls of {BATCH_PROBE_STEPS} steps\nrelative to one image; load_seconds: measured."
    )
    path.write_text(profile.to_toml(comment))
    return profile
