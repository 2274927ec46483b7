"""When each request of a trace is sent: at its recorded time (scaled), or re-timed.

Re-timings draw exponential gaps from a seeded RNG, so a schedule is a pure function of the
trace length, the shape and the seed (tests check the arithmetic, not a clock):

- `poisson`: a constant rate;
- `ramp`: the rate goes linearly from `rate` to `end_rate` over the requests;
- `burst`: the middle third of the requests arrives at `burst_factor` times the rate.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from modm.bench.traces import TraceRequest

Shape = Literal["recorded", "poisson", "ramp", "burst"]
SHAPES: tuple[Shape, ...] = ("recorded", "poisson", "ramp", "burst")


@dataclass(frozen=True)
class Timing:
    """How to time a replay. `time_scale` applies to recorded times (0.5 = twice as fast)."""

    shape: Shape = "recorded"
    rate: float = 1.0  # requests per second (poisson, ramp start, burst base)
    end_rate: float | None = None  # ramp end; default 4 x rate
    burst_factor: float = 4.0
    time_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {', '.join(SHAPES)}")
        if self.rate <= 0 or self.time_scale <= 0 or self.burst_factor <= 0:
            raise ValueError("rate, time_scale and burst_factor must be positive")
        if self.end_rate is not None and self.end_rate <= 0:
            raise ValueError("end_rate must be positive")


def offsets(requests: Sequence[TraceRequest], timing: Timing) -> list[float]:
    """Send time of each request, in seconds after the replay starts (the first at 0)."""
    if not requests:
        return []
    if timing.shape == "recorded":
        start = requests[0].t
        return [(r.t - start) * timing.time_scale for r in requests]
    return arrival_times(len(requests), rate_of(timing, len(requests)), seed=timing.seed)


def rate_of(timing: Timing, n: int) -> Callable[[int], float]:
    """The arrival rate (per second) in force for request `i` of `n`."""
    if timing.shape == "ramp":
        end = timing.end_rate if timing.end_rate is not None else 4.0 * timing.rate
        return lambda i: timing.rate + (end - timing.rate) * (i / max(1, n - 1))
    if timing.shape == "burst":
        low, high = n // 3, 2 * n // 3
        return lambda i: timing.rate * (timing.burst_factor if low <= i < high else 1.0)
    return lambda i: timing.rate


def arrival_times(n: int, rate: Callable[[int], float], *, seed: int) -> list[float]:
    """`n` arrivals; the gap before request i is exponential with mean 1 / rate(i)."""
    rng = random.Random(seed)
    times, t = [], 0.0
    for i in range(n):
        if i:
            t += rng.expovariate(rate(i))
        times.append(t)
    return times
