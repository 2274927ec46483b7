"""Request traces for the simulator: non-homogeneous Poisson arrivals whose rate and hit rate
follow piecewise-linear profiles, each hit drawing its k from a distribution; plus the standard
shapes the benchmark compares policies on (steady, ramp up, burst, ramp down)."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass

from modm import reuse
from modm.services.monitor.observations import TOTAL_STEPS, PoolProfile

# Share of hits by k skipped of 50: MoDM's five rungs, weighted towards the mild ones.
DEFAULT_K_DISTRIBUTION: Mapping[int, float] = {5: 0.15, 10: 0.25, 15: 0.25, 25: 0.2, 30: 0.15}


@dataclass(frozen=True)
class Arrival:
    at: float
    hit: bool
    skipped_steps: int = 0  # k, for a hit


@dataclass(frozen=True)
class Profile:
    """A piecewise-linear function of time from (t, value) points, flat beyond its ends."""

    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.points or any(b[0] < a[0] for a, b in itertools.pairwise(self.points)):
            raise ValueError("a profile needs points sorted by time")

    @classmethod
    def constant(cls, value: float) -> Profile:
        return cls(((0.0, value),))

    def __call__(self, t: float) -> float:
        times = [p[0] for p in self.points]
        i = bisect.bisect_right(times, t)
        if i == 0:
            return self.points[0][1]
        if i == len(self.points):
            return self.points[-1][1]
        (t0, v0), (t1, v1) = self.points[i - 1], self.points[i]
        return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    @property
    def peak(self) -> float:
        return max(v for _, v in self.points)

    def scaled(self, factor: float) -> Profile:
        return Profile(tuple((t, v * factor) for t, v in self.points))


def poisson_arrivals(
    rate_per_min: Profile,
    hit_rate: Profile,
    duration_s: float,
    *,
    k_distribution: Mapping[int, float] = DEFAULT_K_DISTRIBUTION,
    seed: int = 0,
) -> list[Arrival]:
    """Arrivals over [0, duration_s) by thinning a Poisson process at the peak rate."""
    rng = random.Random(seed)
    peak = rate_per_min.peak / 60.0
    ks, weights = list(k_distribution), list(k_distribution.values())
    arrivals: list[Arrival] = []
    t = 0.0
    while peak > 0:
        t += rng.expovariate(peak)
        if t >= duration_s:
            break
        if rng.random() * peak > rate_per_min(t) / 60.0:
            continue
        if rng.random() < hit_rate(t):
            arrivals.append(Arrival(t, True, rng.choices(ks, weights)[0]))
        else:
            arrivals.append(Arrival(t, False))
    return arrivals


@dataclass(frozen=True)
class Scenario:
    """A named load shape, its rate given as a share of a fleet's capacity."""

    name: str
    load: Profile  # share of capacity over time
    hit_rate: Profile
    duration_s: float

    def arrivals(self, capacity_per_min: float, seed: int) -> list[Arrival]:
        return poisson_arrivals(self.load.scaled(capacity_per_min), self.hit_rate, self.duration_s, seed=seed)


def standard_scenarios(duration_s: float = 7200.0, hit_rate: float = 0.7) -> tuple[Scenario, ...]:
    """Steady at 70% of capacity; ramps between 20% and 100%; a 15-minute burst at 130% on 40%."""
    h, d = Profile.constant(hit_rate), duration_s
    third = d / 3
    return (
        Scenario("steady", Profile.constant(0.7), h, d),
        Scenario("ramp-up", Profile(((0.0, 0.2), (d * 0.8, 1.0))), h, d),
        Scenario(
            "burst", Profile(((0.0, 0.4), (third, 0.4), (third, 1.3), (third + 900, 1.3), (third + 900, 0.4))), h, d
        ),
        Scenario("ramp-down", Profile(((0.0, 1.0), (d * 0.8, 0.2))), h, d),
    )


def mixture_capacity_per_min(
    gpus: int,
    large: PoolProfile,
    small: PoolProfile,
    hit_rate: float,
    k_distribution: Mapping[int, float],
) -> float:
    """Requests per minute `gpus` GPUs can serve with the mixture, at best (every GPU busy with
    full batches, misses on the large model, hits on the small one): the capacity the scenarios
    scale to."""
    hit_kappa = reuse.kappa({(k, TOTAL_STEPS): p for k, p in k_distribution.items()})
    if hit_kappa is None:
        raise ValueError("the k distribution is empty")
    gpu_seconds_per_request = (1 - hit_rate) * large.gpu_seconds() + hit_rate * small.gpu_seconds(hit_kappa)
    return gpus * 60.0 / gpu_seconds_per_request
