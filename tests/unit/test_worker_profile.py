"""The warm-up profile's fit of overhead + steps x seconds_per_step, on a clock the test drives."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from modm.services.worker import runner as runner_module
from modm.services.worker.families import family_for
from modm.services.worker.runner import Profile, measure_profile


def fitted(durations: dict[int, list[float]], monkeypatch: pytest.MonkeyPatch) -> Profile:
    """Profile a runner whose runs of n steps take the next of `durations[n]` seconds."""
    clock = [0.0]
    monkeypatch.setattr(runner_module.time, "perf_counter", lambda: clock[0])

    def generate(jobs: list[object], on_step: object, should_stop: object) -> None:
        clock[0] += durations[jobs[0].steps].pop(0)  # type: ignore[attr-defined]

    facts = SimpleNamespace(default_width=64, default_height=64, family=family_for("StableDiffusionXLPipeline"))
    runner = SimpleNamespace(facts=facts, generate=generate)
    return measure_profile(runner)  # type: ignore[arg-type]


def test_the_fastest_runs_give_overhead_and_slope(monkeypatch: pytest.MonkeyPatch) -> None:
    # warm-up (2 steps), then two runs of 2 and two of 6 steps; the slower of each pair is noise
    profile = fitted({2: [9.0, 1.5, 1.4], 6: [2.6, 3.0]}, monkeypatch)
    assert profile.seconds_per_step == pytest.approx(0.3)
    assert profile.overhead_seconds == pytest.approx(0.8)


def test_a_long_run_timed_faster_than_a_short_one_is_not_a_free_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # contention slowed the 2-step runs: the slope would be negative; the cost is then per step only
    profile = fitted({2: [9.0, 4.0, 4.2], 6: [3.0, 3.6]}, monkeypatch)
    assert profile.seconds_per_step == pytest.approx(0.5)
    assert profile.overhead_seconds == 0.0
