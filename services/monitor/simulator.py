"""A discrete-event simulator of the router, its two worker pools and the monitor, driven by the
monitor's own policy code, for cluster-scale comparisons on a machine without GPUs.

The router is modelled as it routes (services/router/policy.py):

- a miss goes to the large pool; when the monitor has asked for degradation and the large pool
  would miss the SLO, it goes to the small pool (text-to-image, flagged degraded), and idle
  small workers take misses still queued for the large pool;
- a hit goes to an idle small worker, else to an idle large worker when no miss waits (MoDM's
  rule), else waits for the small pool; a large worker with no miss waiting takes queued hits;
- a hit runs `1 - k/50` of the steps; service times are deterministic per model.

Every `window_s` the monitor builds a `Window` from what the router would report over that
window and applies the policy's decision. A GPU that changes pool finishes the job it has, then
serves nothing for `fleet.switch_seconds` while it loads the other model. The run ends when
every request is served (nothing is dropped).
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
class ServiceTimes:
    """Seconds per 50-step image on one GPU (defaults: MoDM's MI210, SD3.5-Large and SDXL)."""

    large_s: float = 91.5
    small_s: float = 16.5

    def seconds(self, model: str, step_share: float) -> float:
        return (self.large_s if model == LARGE else self.small_s) * step_share


MI210_TIMES = ServiceTimes()


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
    job: _Job | None = None
    loading_until: float | None = None
    generation: int = 0  # invalidates a LOADED event when a load is abandoned

    @property
    def ready(self) -> bool:
        return self.model == self.pool and self.loading_until is None


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
        times: ServiceTimes = MI210_TIMES,
        window_s: float = 180.0,
    ) -> None:
        if initial.large + initial.small > fleet.gpus:
            raise ValueError(f"{initial} exceeds the fleet's {fleet.gpus} GPUs")
        self.arrivals = sorted(arrivals, key=lambda a: a.at)
        self.policy, self.fleet, self.times, self.window_s = policy, fleet, times, window_s
        self.gpus = [_Gpu(LARGE, LARGE) for _ in range(initial.large)] + [
            _Gpu(SMALL, SMALL) for _ in range(initial.small)
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
                assert isinstance(payload, _Gpu)
                outstanding -= 1
                self._finish(payload)
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
                elif gpu.job is not None:
                    activity = f"busy_{gpu.job.model}"
                else:
                    activity = f"idle_{gpu.pool}"
                self.gpu_seconds[activity] += dt
        self.now = at

    # --- routing -------------------------------------------------------------------------

    def _idle(self, pool: str) -> _Gpu | None:
        return next((g for g in self.gpus if g.pool == pool and g.ready and g.job is None), None)

    def _ready(self, pool: str) -> int:
        return sum(1 for g in self.gpus if g.pool == pool and g.ready)

    def _wait_estimate(self, pool: str, share: float) -> float:
        """The router's estimate: the queue's work spread over the pool's ready workers."""
        ready = self._ready(pool)
        if ready == 0:
            return math.inf
        if self._idle(pool) is not None and not self.queues[pool]:
            return 0.0
        return (len(self.queues[pool]) + 1) * self.times.seconds(pool, share) / ready

    def _admit(self, job: _Job) -> None:
        if job.arrival.hit:
            target = self._idle(SMALL) or (self._idle(LARGE) if not self.queues[LARGE] else None)
            if target is not None:
                self._start(target, job)
            else:
                self.queues[SMALL].append(job)
            return
        large_late = self._wait_estimate(LARGE, 1.0) + self.times.large_s > self.fleet.slo_seconds
        if self.degrade and large_late and self._ready(SMALL):
            job.degraded = True
            idle = self._idle(SMALL)
            if idle is not None:
                self._start(idle, job)
            else:
                self.queues[SMALL].append(job)
            return
        idle = self._idle(LARGE)
        if idle is not None:
            self._start(idle, job)
        else:
            self.queues[LARGE].append(job)

    def _feed(self, gpu: _Gpu) -> None:
        """Give a free, ready GPU its next job, if any."""
        if not gpu.ready or gpu.job is not None:
            return
        if gpu.pool == LARGE:
            queue = self.queues[LARGE] or self.queues[SMALL]
            if queue:
                job = queue.popleft()
                job.degraded = False  # a degraded miss that a large worker reaches is served properly
                self._start(gpu, job)
        elif self.queues[SMALL]:
            self._start(gpu, self.queues[SMALL].popleft())
        elif self.degrade and self.queues[LARGE]:
            job = self.queues[LARGE].popleft()
            job.degraded = True
            self._start(gpu, job)

    def _start(self, gpu: _Gpu, job: _Job) -> None:
        job.started, job.model = self.now, gpu.model
        gpu.job = job
        self._push(self.now + self.times.seconds(gpu.model, job.step_share), _Event.DONE, gpu)

    def _finish(self, gpu: _Gpu) -> None:
        job = gpu.job
        assert job is not None
        gpu.job = None
        latency = self.now - job.arrival.at
        self.latencies.append(latency)
        self._window_latencies.append(latency)
        self.degraded += job.degraded
        self.hits_on_large += job.arrival.hit and job.model == LARGE
        if gpu.model != gpu.pool:
            self._load(gpu)
        else:
            self._feed(gpu)

    # --- the monitor ---------------------------------------------------------------------

    def _load(self, gpu: _Gpu) -> None:
        gpu.model = gpu.pool
        gpu.generation += 1
        gpu.loading_until = self.now + self.fleet.switch_seconds
        self.switches += 1
        self._push(gpu.loading_until, _Event.LOADED, (gpu, gpu.generation))

    def _window(self, span: float) -> Window:
        arrivals = self._window_arrivals
        hits = [a for a in arrivals if a.hit]
        ks = Counter(a.skipped_steps for a in hits)

        def state(pool: str) -> PoolState:
            profile = PoolProfile.from_full_run(self.times.large_s if pool == LARGE else self.times.small_s)
            in_flight = sum(1 for g in self.gpus if g.job is not None and g.job.model == pool)
            return PoolState(self._ready(pool), profile, len(self.queues[pool]), in_flight)

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
            if gpu.job is None and gpu.loading_until is None:
                return 1
            return 2 if gpu.loading_until is not None else 3

        return sorted((g for g in self.gpus if g.pool == source), key=cost)

    def _move(self, gpu: _Gpu, dest: str) -> None:
        gpu.pool = dest
        if gpu.job is not None:
            return  # finishes its job first (`_finish` starts the load)
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
    times: ServiceTimes = MI210_TIMES,
    window_s: float = 180.0,
) -> Result:
    return Simulation(arrivals, policy, fleet, initial, times=times, window_s=window_s).run()
