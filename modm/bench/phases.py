"""A closed loop's two phases: a warm-up, then the measured phase.

A capacity number is only modm's if it is measured in modm's steady state: the cache holds the
trace's past, and the monitor has stopped moving GPUs. Both take time that depends on the fleet
(a monitor moves one slot per round, and a slot serves nothing while it drains and loads), so the
warm-up is not a fixed count: it lasts at least `warmup` requests and until the fleet's split has
held for `settle_s` (every worker healthy, each in the same pool, in every Stats sample over that
span), at most `settle_timeout_s`; the measured phase then sends `measure` requests. Everything
here reads the router's Stats samples and is pure, so the gate is tested without a fleet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from modm.bench.records import StatsSample

Split = tuple[tuple[str, str], ...]  # (address, pool) of every healthy worker, sorted


@dataclass(frozen=True)
class Phases:
    """How a closed loop warms up and how much it measures (times in wall seconds)."""

    warmup: int = 0  # requests sent before measuring, at least
    settle_s: float = 0.0  # the split must have held this long before measuring
    settle_timeout_s: float = math.inf  # measure anyway once the warm-up has lasted this long
    measure: int | None = None  # requests sent while measuring; None: the rest of the trace
    workers: int = 0  # settled only with this many healthy workers (0: whatever the router sees)


def split_of(sample: StatsSample) -> Split:
    return tuple(sorted((str(w.get("address")), str(w.get("pool"))) for w in sample.workers if w.get("healthy")))


def stable_since(samples: Sequence[StatsSample]) -> float | None:
    """When the split of the last sample was first seen without a change since (None: no sample)."""
    if not samples:
        return None
    last = split_of(samples[-1])
    since = samples[-1].at
    for sample in reversed(samples):
        if split_of(sample) != last:
            break
        since = sample.at
    return since


def settled(samples: Sequence[StatsSample], now: float, settle_s: float, workers: int = 0) -> bool:
    """Whether the split has held for `settle_s` up to `now` with `workers` healthy workers."""
    if settle_s <= 0:
        return True
    since = stable_since(samples)
    if since is None or (workers and len(split_of(samples[-1])) != workers):
        return False
    return now - since >= settle_s


def switches(samples: Sequence[StatsSample]) -> list[float]:
    """When a worker was first seen healthy in a pool other than the one it last served: the
    slots the monitor moved (a slot drains and restarts on its port as the other model)."""
    pool_of: dict[str, str] = {}
    moved = []
    for sample in samples:
        for address, pool in split_of(sample):
            if pool_of.get(address, pool) != pool:
                moved.append(sample.at)
            pool_of[address] = pool
    return moved


class Gate:
    """Decides, request by request, whether a closed loop's next request is warm-up, measured, or
    not sent at all (the measured phase is over)."""

    def __init__(self, phases: Phases) -> None:
        self.phases = phases
        self.sent = 0
        self.measured = 0
        self.measure_start: float | None = None
        self.settled: bool | None = None  # whether the split had settled when measuring began

    def next(self, now: float, samples: Sequence[StatsSample]) -> bool | None:
        """True: the next request is measured; False: warm-up; None: stop sending."""
        p = self.phases
        if self.measure_start is None and self.sent >= p.warmup:
            calm = settled(samples, now, p.settle_s, p.workers)
            if calm or now >= p.settle_timeout_s:
                self.measure_start, self.settled = now, calm
        self.sent += 1
        if self.measure_start is None:
            return False
        if p.measure is not None and self.measured >= p.measure:
            self.sent -= 1
            return None
        self.measured += 1
        return True
