"""What every allocation policy reads and returns: a window of the router's Stats, the fleet's
limits, the current split and a decision that says why.

The window mirrors `modm.v1.RouterStats` (folded over every router by `stats_client.aggregate`):
`hit_rate` counts hits and exact repeats like the router does, `k_distribution` covers hits
only, and each pool's `PoolProfile` is the one definition of how long a job takes there, which
the policies, the queueing model and the simulator all use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from modm import reuse

TOTAL_STEPS = 50  # a hit's k (steps skipped) is counted out of the cache's 50, whatever the model runs
MODM_STEPS = 50  # MoDM's measured runs: the steps of a profile no worker reported (the settings' fallback)


@dataclass(frozen=True)
class PoolProfile:
    """How long a job takes on one GPU of a pool.

    A job runs `step_share` of the model's own default `steps` (a miss all of them, a hit kappa)
    plus a fixed overhead (text encoding, VAE decode): a miss costs `overhead + steps x
    seconds_per_step` and a hit `overhead + kappa x steps x seconds_per_step`, so neither the
    step count nor the overhead may be folded into a per-step price. A worker takes up to
    `capacity` jobs at once and runs them as one batch: a GPU is `capacity` servers, each job
    holding one for its job seconds (measured at the batches the load formed, so a GPU serves
    `capacity / job_seconds` jobs a second). `load_seconds` is the model's load time, what a GPU
    moving into the pool serves nothing for (None: no worker reported it).
    """

    seconds_per_step: float
    overhead_seconds: float = 0.0
    steps: int = MODM_STEPS
    capacity: int = 1
    load_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.seconds_per_step <= 0 or self.overhead_seconds < 0 or self.steps <= 0 or self.capacity < 1:
            raise ValueError(
                "a pool profile needs positive seconds per step, steps and capacity, non-negative overhead"
            )
        if self.load_seconds is not None and self.load_seconds < 0:
            raise ValueError("a model load cannot take negative seconds")

    @classmethod
    def from_full_run(cls, seconds: float, steps: int = MODM_STEPS) -> PoolProfile:
        """A profile from a full run's seconds alone (no overhead known, batch 1)."""
        return cls(seconds / steps, 0.0, steps)

    def job_seconds(self, step_share: float = 1.0) -> float:
        """One job running `step_share` of the steps (1.0: from noise; kappa: a mean hit)."""
        return self.overhead_seconds + self.steps * step_share * self.seconds_per_step

    def gpu_seconds(self, step_share: float = 1.0) -> float:
        """GPU time one job costs when the GPU's batches are full: what sizes throughput."""
        return self.job_seconds(step_share) / self.capacity

    @property
    def full_run_seconds(self) -> float:
        return self.job_seconds(1.0)


@dataclass(frozen=True)
class PoolState:
    """One pool as the router sees it at the end of the window."""

    ready: int  # workers serving now (not loading a model)
    profile: PoolProfile
    queue_depth: int = 0  # waiting in the router for this pool
    in_flight: int = 0


@dataclass(frozen=True)
class Window:
    """One window of observations (MoDM: 180 s)."""

    seconds: float
    request_rate_per_min: float
    hit_rate: float  # hits and exact repeats, of served requests
    k_distribution: Mapping[int, float]  # share of hits by skipped steps k (exact repeats excluded)
    large: PoolState
    small: PoolState
    exact_repeat_rate: float = 0.0  # served from the cache with no GPU at all
    total_steps: int = TOTAL_STEPS  # what k is counted out of (not a model's steps: see PoolProfile)

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.request_rate_per_min < 0:
            raise ValueError("a window needs a positive length and a non-negative request rate")
        if not 0.0 <= self.exact_repeat_rate <= self.hit_rate <= 1.0:
            raise ValueError("rates must satisfy 0 <= exact_repeat_rate <= hit_rate <= 1")

    @property
    def kappa(self) -> float:
        """Share of the steps a hit still runs (`modm.reuse.kappa`); 1.0 with no hit seen."""
        seen = reuse.kappa({(k, self.total_steps): p for k, p in self.k_distribution.items()})
        return 1.0 if seen is None else seen

    @property
    def kappa_second_moment(self) -> float:
        """E[(1 - k/total)^2] over hits, for the variability of hit service times."""
        total = sum(self.k_distribution.values())
        if total <= 0:
            return 1.0
        return sum(p * reuse.remaining_share(k, self.total_steps) ** 2 for k, p in self.k_distribution.items()) / total

    @property
    def misses_per_s(self) -> float:
        return (1.0 - self.hit_rate) * self.request_rate_per_min / 60.0

    @property
    def worker_hits_per_s(self) -> float:
        """Hits that need a GPU (img2img); exact repeats are served from the cache."""
        return (self.hit_rate - self.exact_repeat_rate) * self.request_rate_per_min / 60.0

    @property
    def gpu_requests_per_min(self) -> float:
        """Requests that need a GPU: misses (bypassed included) and img2img hits. Exact repeats
        cost no GPU work, so they size neither pool."""
        return (self.misses_per_s + self.worker_hits_per_s) * 60.0

    @property
    def gpu_hit_rate(self) -> float:
        """Share of the requests that need a GPU that are img2img hits."""
        work = self.gpu_requests_per_min
        return self.worker_hits_per_s * 60.0 / work if work > 0 else 0.0


@dataclass(frozen=True)
class Allocation:
    large: int
    small: int

    def __str__(self) -> str:
        return f"{self.large} large + {self.small} small"


@dataclass(frozen=True)
class Fleet:
    """The GPU budget and what the operator set: bounds per pool, the SLO, the cost of a switch."""

    gpus: int
    slo_seconds: float = 300.0
    switch_seconds: float = 30.0  # a model load, for a pool whose workers report none (`load_seconds`)
    min_large: int = 1
    max_large: int | None = None
    min_small: int = 0
    max_small: int | None = None
    # The local scaler moves one GPU at a time, the next once the last serves again; Kubernetes
    # scales a Deployment's replicas at once.
    moves_one_at_a_time: bool = False

    def __post_init__(self) -> None:
        if self.gpus < 1:
            raise ValueError("the fleet needs at least one GPU")
        if self.min_large < 0 or self.min_small < 0 or self.min_large + self.min_small > self.gpus:
            raise ValueError(f"min_large + min_small must fit in {self.gpus} GPUs")
        if self.max_large is not None and self.max_large < self.min_large:
            raise ValueError("max_large is below min_large")
        if self.max_small is not None and self.max_small < self.min_small:
            raise ValueError("max_small is below min_small")
        if self.slo_seconds <= 0 or self.switch_seconds < 0:
            raise ValueError("the SLO must be positive and the switch cost non-negative")

    def load_seconds(self, joined: PoolProfile) -> float:
        """What a GPU moving into the pool of `joined` serves nothing for: its model's load time
        as the pool's workers report it, else `switch_seconds`."""
        return self.switch_seconds if joined.load_seconds is None else joined.load_seconds

    def large_bounds(self, misses_arrive: bool) -> tuple[int, int]:
        """Inclusive range of large GPUs: the bounds, room for min_small, and never zero large
        while misses arrive (a miss has nowhere else to go without degrading)."""
        low = max(self.min_large, 1 if misses_arrive else 0)
        high = self.gpus - self.min_small
        if self.max_large is not None:
            high = min(high, self.max_large)
        if self.max_small is not None:
            low = max(low, self.gpus - self.max_small)
        return min(low, high), high

    def split(self, large: int) -> Allocation:
        """Every GPU not large is small, up to max_small (GPUs above both maxima stay unused)."""
        small = self.gpus - large
        if self.max_small is not None:
            small = min(small, self.max_small)
        return Allocation(large, small)


@dataclass(frozen=True)
class Prediction:
    """What the default policy expects of an allocation over its horizon."""

    large_utilisation: float
    small_utilisation: float
    mean_latency_s: float
    over_slo_share: float
    degraded_share: float = 0.0


@dataclass(frozen=True)
class Decision:
    """A target split, why, and whether the router should serve misses on the small pool."""

    target: Allocation
    reason: str
    degrade_misses: bool = False
    degrade_reason: str = ""
    prediction: Prediction | None = None
    state: object = field(default=None, compare=False)  # the policy's memory, passed back next window


def replicas_not_ready(window: Window, current: Allocation) -> str | None:
    """Why the pools are not yet what the scaler last set (workers still loading or pending), or
    None: until they are, a controller that integrates its error would wind up."""
    behind = [
        f"{pool.ready} of {want} {name} ready"
        for name, pool, want in (("large", window.large, current.large), ("small", window.small, current.small))
        if pool.ready < want
    ]
    return ", ".join(behind) or None


def model_loads(current: Allocation, target: Allocation) -> int:
    """GPUs that must load a model to reach `target` (each serves nothing for a switch)."""
    return max(0, target.large - current.large) + max(0, target.small - current.small)
