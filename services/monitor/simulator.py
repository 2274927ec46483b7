"""A discrete-event simulator of the router, its two worker pools and the monitor, driven by the
monitor's own policy code, for cluster-scale comparisons on a machine without GPUs.

The router is modelled as it routes (services/router/policy.py):

- a miss goes to the large pool; when the monitor has asked for degradation and the large pool
  would miss the SLO, it goes to the small pool (text-to-image, flagged degraded), and idle
  small workers take misses still queued for the large pool;
- a hit goes to a small worker with a free slot, else to an idle large worker when no miss
  waits (MoDM's rule), else waits for the small pool; a large worker with no miss waiting takes
  queued hits;
- a job takes what the monitor prices it at (`PoolProfile.job_seconds`: overhead + the share of
  the model's own steps it runs, a hit `1 - k/50` of them), deterministically, and a worker
  holds up to its profile's `capacity` jobs at once, each taking that long.

Every `window_s` the monitor builds a `Window` from what the router would report over that
window (the pools' profiles as the workers report them) and applies the policy's decision. A
GPU that changes pool finishes the jobs it has, then serves nothing while it loads the other
model (`fleet.load_seconds`). The run ends when every request is served (nothing is dropped).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import IntEnum

from modm.services.monitor.observations import (
    MODM_STEPS,
    TOTAL_STEPS,
    Allocation,
    Fleet,
    PoolProfile,
    PoolState,
    Window,
    replicas_not_ready,
)
from modm.services.monitor.policy import Policy
from modm.services.monitor.traces import Arrival

LARGE, SMALL = "large", "small"


@dataclass(frozen=True)
class Models:
    """The two pools' models, each as its workers would report it to the monitor."""

    large: PoolProfile
    small: PoolProfile

    def of(self, pool: str) -> PoolProfile:
        return self.large if pool == LARGE else self.small


# MoDM's MI210: SD3.5-Large 91.5 s and SDXL 16.5 s per 50-step image (MoDM ran 50 steps and
# measured no overhead apart), one image per batch, load time not reported.
MI210 = Models(PoolProfile.from_full_run(91.5, MODM_STEPS), PoolProfile.from_full_run(16.5, MODM_STEPS))


class _Event(IntEnum):  # ties at the same instant: finish work before admitting more
    DONE = 0
    LOADED = 1
    ARRIVAL = 2
    TICK = 3


@dataclass(eq=False)
class _Job:
    arrival: Arrival
    degraded: bool = False
    started: float = 0.0
    model: str = ""

    @property
    def step_share(self) -> float:
        return 1.0 - self.arrival.skipped_steps / TOTAL_STEPS if self.arrival.hit else 1.0


@dataclass(eq=False)
class _Gpu:
    pool: str  # the pool it is assigned to
    model: str  # the model it holds (or is loading)
    slots: int  # jobs it takes at once (its pool's capacity)
    jobs: list[_Job] = field(default_factory=list)
    loading_until: float | None = None
    generation: int = 0  # invalidates a LOADED event when a load is abandoned

    @property
    def ready(self) -> bool:
        return self.model == self.pool and self.loading_until is None

    @property
    def free(self) -> bool:
        return self.ready and len(self.jobs) < self.slots


@dataclass(frozen=True)
class Tick:
    """One monitor window, for plots."""

    at: float
    large: int
    small: int
    ready_large: int
    ready_small: int
    queued_large: int
    queued_small: int
    rate_per_min: float
    completed: int
    mean_latency_s: float
    p99_latency_s: float
    degrade_misses: bool
    reason: str


@dataclass(frozen=True)
class Result:
    policy: str
    requests: int
    completed: int
    makespan_s: float
    throughput_per_min: float
    mean_latency_s: float
    p50_latency_s: float
    p99_latency_s: float
    over_slo_share: float
    degraded_share: float
    hits_on_large: int
    switches: int  # model loads
    gpu_seconds: dict[str, float]
    ticks: tuple[Tick, ...] = field(repr=False)

    def summary(self) -> dict[str, object]:
        data = asdict(self)
        del data["ticks"]
        return data


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks of a sorted sequence (q in [0, 100])."""
    if not ordered:
        return 0.0
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class Simulation:
    def __init__(
        self,
        arrivals: Sequence[Arrival],
        policy: Policy,
        fleet: Fleet,
        initial: Allocation,
        *,
        models: Models = MI210,
        window_s: float = 180.0,
    ) -> None:
        if initial.large + initial.small > fleet.gpus:
            raise ValueError(f"{initial} exceeds the fleet's {fleet.gpus} GPUs")
        self.arrivals = sorted(arrivals, key=lambda a: a.at)
        self.policy, self.fleet, self.models, self.window_s = policy, fleet, models, window_s
        self.gpus = [_Gpu(LARGE, LARGE, models.large.capacity) for _ in range(initial.large)] + [
            _Gpu(SMALL, SMALL, models.small.capacity) for _ in range(initial.small)
        ]
        self.queues: dict[str, deque[_Job]] = {LARGE: deque(), SMALL: deque()}
        self.degrade = False
        self.now = 0.0
        self._events: list[tuple[float, int, int, object]] = []
        self._seq = itertools.count()
        self.latencies: list[float] = []
        self.degraded = self.hits_on_large = self.switches = 0
        self.gpu_seconds = Counter[str]()
        self.ticks: list[Tick] = []
        self._window_arrivals: list[Arrival] = []
        self._window_latencies: list[float] = []
        self._state = policy.initial_state()

    # --- event queue ---------------------------------------------------------------------

    def _push(self, at: float, kind: _Event, payload: object = None) -> None:
        heapq.heappush(self._events, (at, kind, next(self._seq), payload))

    def run(self) -> Result:
        for arrival in self.arrivals:
            self._push(arrival.at, _Event.ARRIVAL, arrival)
        self._push(self.window_s, _Event.TICK)
        last_tick = 0.0
        outstanding = len(self.arrivals)
        while self._events and outstanding:
            at, kind, _, payload = heapq.heappop(self._events)
            self._account(at)
            if kind is _Event.ARRIVAL:
                assert isinstance(payload, Arrival)
                self._window_arrivals.append(payload)
                self._admit(_Job(payload))
            elif kind is _Event.DONE:
                gpu, job = payload  # type: ignore[misc]
                outstanding -= 1
                self._finish(gpu, job)
            elif kind is _Event.LOADED:
                gpu, generation = payload  # type: ignore[misc]
                if gpu.generation == generation:
                    gpu.loading_until = None
                    self._feed(gpu)
            else:
                self._tick(at - last_tick)
                last_tick = at
                self._push(at + self.window_s, _Event.TICK)
        return self._result()

    def _account(self, at: float) -> None:
        """GPU-seconds since the last event, by what each GPU was doing."""
        dt = at - self.now
        if dt > 0:
            for gpu in self.gpus:
                if gpu.loading_until is not None:
                    activity = "loading"
                elif gpu.jobs:
                    activity = f"busy_{gpu.model}"
                else:
                    activity = f"idle_{gpu.pool}"
                self.gpu_seconds[activity] += dt
        self.now = at

    # --- routing -------------------------------------------------------------------------

    def _free(self, pool: str) -> _Gpu | None:
        return next((g for g in self.gpus if g.pool == pool and g.free), None)

    def _idle_large(self) -> _Gpu | None:
        """A large worker with nothing in flight (MoDM: only those take hits)."""
        return next((g for g in self.gpus if g.pool == LARGE and g.ready and not g.jobs), None)

    def _ready(self, pool: str) -> int:
        return sum(1 for g in self.gpus if g.pool == pool and g.ready)

    def _wait_estimate(self, pool: str) -> float:
        """The router's estimate: the queue's work spread over the pool's ready slots."""
        ready = self._ready(pool)
        if ready == 0:
            return math.inf
        if self._free(pool) is not None and not self.queues[pool]:
            return 0.0
        model = self.models.of(pool)
        return (len(self.queues[pool]) + 1) * model.full_run_seconds / (ready * model.capacity)

    def _admit(self, job: _Job) -> None:
        if job.arrival.hit:
            target = self._free(SMALL) or (self._idle_large() if not self.queues[LARGE] else None)
            if target is not None:
                self._start(target, job)
            else:
                self.queues[SMALL].append(job)
            return
        large_late = self._wait_estimate(LARGE) + self.models.large.full_run_seconds > self.fleet.slo_seconds
        if self.degrade and large_late and self._ready(SMALL):
            job.degraded = True
            free = self._free(SMALL)
            if free is not None:
                self._start(free, job)
            else:
                self.queues[SMALL].append(job)
            return
        free = self._free(LARGE)
        if free is not None:
            self._start(free, job)
        else:
            self.queues[LARGE].append(job)

    def _feed(self, gpu: _Gpu) -> None:
        """Fill a ready GPU's free slots from the queues, if any waits."""
        while gpu.free and (job := self._next_job(gpu)) is not None:
            self._start(gpu, job)

    def _next_job(self, gpu: _Gpu) -> _Job | None:
        if gpu.pool == LARGE:
            if self.queues[LARGE]:
                job = self.queues[LARGE].popleft()
                job.degraded = False  # a degraded miss that a large worker reaches is served properly
                return job
            return self.queues[SMALL].popleft() if self.queues[SMALL] and not gpu.jobs else None
        if self.queues[SMALL]:
            return self.queues[SMALL].popleft()
        if self.degrade and self.queues[LARGE]:
            job = self.queues[LARGE].popleft()
            job.degraded = True
            return job
        return None

    def _start(self, gpu: _Gpu, job: _Job) -> None:
        job.started, job.model = self.now, gpu.model
        gpu.jobs.append(job)
        self._push(self.now + self.models.of(gpu.model).job_seconds(job.step_share), _Event.DONE, (gpu, job))

    def _finish(self, gpu: _Gpu, job: _Job) -> None:
        gpu.jobs.remove(job)
        latency = self.now - job.arrival.at
        self.latencies.append(latency)
        self._window_latencies.append(latency)
        self.degraded += job.degraded
        self.hits_on_large += job.arrival.hit and job.model == LARGE
        if gpu.model == gpu.pool:
            self._feed(gpu)
        elif not gpu.jobs:
            self._load(gpu)

    # --- the monitor ---------------------------------------------------------------------

    def _load(self, gpu: _Gpu) -> None:
        gpu.model, gpu.slots = gpu.pool, self.models.of(gpu.pool).capacity
        gpu.generation += 1
        gpu.loading_until = self.now + self.fleet.load_seconds(self.models.of(gpu.pool))
        self.switches += 1
        self._push(gpu.loading_until, _Event.LOADED, (gpu, gpu.generation))

    def _window(self, span: float) -> Window:
        arrivals = self._window_arrivals
        hits = [a for a in arrivals if a.hit]
        ks = Counter(a.skipped_steps for a in hits)

        def state(pool: str) -> PoolState:
            in_flight = sum(len(g.jobs) for g in self.gpus if g.model == pool)
            return PoolState(self._ready(pool), self.models.of(pool), len(self.queues[pool]), in_flight)

        return Window(
            seconds=span,
            request_rate_per_min=len(arrivals) * 60.0 / span,
            hit_rate=len(hits) / len(arrivals) if arrivals else 0.0,
            k_distribution={k: n / len(hits) for k, n in ks.items()},
            large=state(LARGE),
            small=state(SMALL),
        )

    def allocation(self) -> Allocation:
        pools = Counter(g.pool for g in self.gpus)
        return Allocation(pools[LARGE], pools[SMALL])

    def _tick(self, span: float) -> None:
        window, current = self._window(span), self.allocation()
        follows = replicas_not_ready(window, current) is None  # as the monitor's loop tells it
        decision = self.policy.decide(window, current, self.fleet, self._state, scaler_follows=follows)
        self._state = decision.state
        self.degrade = decision.degrade_misses
        self._apply(decision.target)
        latencies = sorted(self._window_latencies)
        alloc = self.allocation()
        self.ticks.append(
            Tick(
                at=self.now,
                large=alloc.large,
                small=alloc.small,
                ready_large=window.large.ready,
                ready_small=window.small.ready,
                queued_large=window.large.queue_depth,
                queued_small=window.small.queue_depth,
                rate_per_min=window.request_rate_per_min,
                completed=len(latencies),
                mean_latency_s=sum(latencies) / len(latencies) if latencies else 0.0,
                p99_latency_s=percentile(latencies, 99),
                degrade_misses=decision.degrade_misses,
                reason=decision.reason + (f" [{decision.degrade_reason}]" if decision.degrade_reason else ""),
            )
        )
        self._window_arrivals, self._window_latencies = [], []

    def _apply(self, target: Allocation) -> None:
        current = self.allocation()
        for source, dest, count in (
            (LARGE, SMALL, current.large - target.large),
            (SMALL, LARGE, target.large - current.large),
        ):
            for gpu in self._movable(source, dest)[: max(0, count)]:
                self._move(gpu, dest)
        # GPUs outside both pools (a fleet whose maxima leave some unused) are not simulated.

    def _movable(self, source: str, dest: str) -> list[_Gpu]:
        """Cheapest first: already holding the destination's model, idle, loading, busy."""

        def cost(gpu: _Gpu) -> int:
            if gpu.model == dest and gpu.loading_until is None:
                return 0
            if not gpu.jobs and gpu.loading_until is None:
                return 1
            return 2 if gpu.loading_until is not None else 3

        return sorted((g for g in self.gpus if g.pool == source), key=cost)

    def _move(self, gpu: _Gpu, dest: str) -> None:
        gpu.pool = dest
        if gpu.jobs:
            return  # finishes its jobs first (`_finish` starts the load)
        if gpu.model == dest and gpu.loading_until is None:
            self._feed(gpu)
            return
        if gpu.loading_until is not None:  # abandon the load under way (its time is already counted)
            gpu.loading_until = None
        self._load(gpu)

    def _result(self) -> Result:
        latencies = sorted(self.latencies)
        n = len(latencies)
        makespan = self.now  # from the trace's start to the last reply
        return Result(
            policy=self.policy.name,
            requests=len(self.arrivals),
            completed=n,
            makespan_s=makespan,
            throughput_per_min=n * 60.0 / makespan if makespan > 0 else 0.0,
            mean_latency_s=sum(latencies) / n if n else 0.0,
            p50_latency_s=percentile(latencies, 50),
            p99_latency_s=percentile(latencies, 99),
            over_slo_share=sum(1 for x in latencies if x > self.fleet.slo_seconds) / n if n else 0.0,
            degraded_share=self.degraded / n if n else 0.0,
            hits_on_large=self.hits_on_large,
            switches=self.switches,
            gpu_seconds=dict(sorted(self.gpu_seconds.items())),
            ticks=tuple(self.ticks),
        )


def simulate(
    arrivals: Sequence[Arrival],
    policy: Policy,
    fleet: Fleet,
    initial: Allocation,
    *,
    models: Models = MI210,
    window_s: float = 180.0,
) -> Result:
    return Simulation(arrivals, policy, fleet, initial, models=models, window_s=window_s).run()
