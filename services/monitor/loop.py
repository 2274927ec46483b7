"""The monitor's control loop: every `interval_s`, read every router's Stats, build the Window,
read the live allocation, ask the policy, and apply the decision only while holding the Lease:
every router is told the decision's degrade override (set or cleared, lapsing after
`degrade_ttl_s` unless the next round renews it), then the scaler moves GPUs between the pools
(which may wait for the shrunk pool's pods to stop).

One round never raises: a failed stage is logged, counted (`modm_monitor_errors_total{stage}`)
and reported in the round's `Iteration`; the next round starts fresh. The policy's memory
(hysteresis, a PID's integral) is carried from round to round, and the policy is told whether
the scaler can follow its decisions now (`why_scaler_cannot_follow`), so it learns nothing from
rounds whose decisions cannot take effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from modm.services.monitor import metrics
from modm.services.monitor.observations import Allocation, Decision, Fleet, PoolProfile, Window, replicas_not_ready
from modm.services.monitor.policy import Policy
from modm.services.monitor.settings import MonitorSettings
from modm.services.monitor.stats_client import StatsReading, aggregate

log = logging.getLogger(__name__)


class StatsReader(Protocol):
    async def read(self) -> StatsReading: ...


class Scaler(Protocol):
    moves_one_at_a_time: bool  # see Fleet

    def current(self) -> Allocation: ...

    def apply(self, decision: Decision) -> object: ...


@runtime_checkable
class HeldBack(Protocol):
    """A scaler's outcome that can say the scaler did not follow (Kubernetes: a pool paused, or
    held after a hand scale)."""

    @property
    def held_back(self) -> str | None: ...


class RouterControl(Protocol):
    async def set_degrade(self, degrade: bool, reason: str, ttl_s: float) -> dict[str, str]: ...


class Leader(Protocol):
    @property
    def is_leader(self) -> bool: ...


class AlwaysLeader:
    """For a single monitor with no Lease (tests, local use)."""

    is_leader = True


@dataclass(frozen=True)
class Iteration:
    """What one round saw and did."""

    unreachable: dict[str, str] = field(default_factory=dict)
    window: Window | None = None
    current: Allocation | None = None
    decision: Decision | None = None
    applied: bool = False
    outcome: object = None
    errors: dict[str, str] = field(default_factory=dict)  # stage -> error
    degrade_unreachable: dict[str, str] = field(default_factory=dict)  # routers that missed the override


def fleet_from(settings: MonitorSettings, gpus: int, *, moves_one_at_a_time: bool = False) -> Fleet:
    return Fleet(
        gpus=gpus,
        moves_one_at_a_time=moves_one_at_a_time,
        slo_seconds=settings.slo_seconds,
        switch_seconds=settings.switch_seconds,
        min_large=settings.min_large,
        max_large=settings.max_large,
        min_small=settings.min_small,
        max_small=settings.max_small,
    )


def why_scaler_cannot_follow(window: Window, current: Allocation, *, leader: bool, held_back: str | None) -> str | None:
    """Why decisions made now cannot take effect, or None when the scaler can follow them."""
    if not leader:
        return "not the leader"
    return held_back or replicas_not_ready(window, current)


def idle(window: Window) -> bool:
    """Nothing arrived, waits or runs: no policy learns anything from it (MoDM's rules would
    read it as all misses and move every GPU to the large pool)."""
    pools = (window.large, window.small)
    return window.request_rate_per_min == 0 and not any(p.queue_depth or p.in_flight for p in pools)


class MonitorLoop:
    def __init__(
        self,
        settings: MonitorSettings,
        reader: StatsReader,
        scaler: Scaler,
        policy: Policy,
        leader: Leader | None = None,
        *,
        control: RouterControl | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.scaler = scaler
        self.policy = policy
        self.leader = leader or AlwaysLeader()
        self.control = control
        self._clock = clock
        self._state = policy.initial_state()
        self._held_back: str | None = None  # what the last applied outcome said
        self._gpus = settings.total_gpus
        self.rounds = 0
        self.last: Iteration | None = None
        self._large = PoolProfile(settings.large_seconds_per_step)
        self._small = PoolProfile(settings.small_seconds_per_step)

    async def iterate(self) -> Iteration:
        """One round; never raises (errors are in the result, the log and the metrics)."""
        errors: dict[str, str] = {}
        reading = StatsReading()
        try:
            reading = await self.reader.read()
        except Exception as error:  # a round must not kill the loop
            errors["stats"] = repr(error)
        metrics.UNREACHABLE.set(len(reading.unreachable))
        window = None
        if reading.stats:
            window = aggregate(list(reading.stats.values()), self._large, self._small)
        elif "stats" not in errors:
            errors["stats"] = "no router answered"
        current = None
        try:
            current = await asyncio.to_thread(self.scaler.current)
            metrics.ALLOCATION.labels("large").set(current.large)
            metrics.ALLOCATION.labels("small").set(current.small)
        except Exception as error:
            errors["scaler"] = repr(error)
        decision, applied, outcome = None, False, None
        told: dict[str, str] = {}
        leader = self.leader.is_leader
        metrics.LEADER.set(1 if leader else 0)
        cannot_follow = None
        if window is not None and current is not None:
            if self._gpus is None:  # the budget is what the Deployments had when the monitor started
                self._gpus = max(1, current.large + current.small)
            try:
                if idle(window):
                    decision = Decision(current, f"keep {current}: no request in the window, nothing to go on")
                else:
                    cannot_follow = why_scaler_cannot_follow(window, current, leader=leader, held_back=self._held_back)
                    fleet = fleet_from(self.settings, self._gpus, moves_one_at_a_time=self.scaler.moves_one_at_a_time)
                    decision = self.policy.decide(
                        window, current, fleet, self._state, scaler_follows=cannot_follow is None
                    )
                    self._state = decision.state
            except Exception as error:
                errors["policy"] = repr(error)
        if decision is not None and current is not None:
            action = "keep" if decision.target == current else "move"
            if leader:
                if self.control is not None:  # first: a move may wait for the shrunk pool's pods to stop
                    told = await self._tell_routers(decision, errors)
                try:
                    outcome = await asyncio.to_thread(self.scaler.apply, decision)
                    applied = True
                    self._held_back = outcome.held_back if isinstance(outcome, HeldBack) else None
                except Exception as error:
                    errors["apply"] = repr(error)
            metrics.DECISIONS.labels(action, "true" if applied else "false").inc()
            metrics.TARGET.labels("large").set(decision.target.large)
            metrics.TARGET.labels("small").set(decision.target.small)
            metrics.DEGRADE.set(1 if decision.degrade_misses else 0)
            log.info(
                "decision",
                extra={
                    "action": action,
                    "policy": self.policy.name,
                    "current": str(current),
                    "target": str(decision.target),
                    "reason": decision.reason,
                    "degrade_misses": decision.degrade_misses,
                    "degrade_reason": decision.degrade_reason,
                    "leader": leader,
                    "scaler_cannot_follow": cannot_follow,
                    "applied": applied,
                    "routers": sorted(reading.stats),
                    "unreachable_routers": reading.unreachable,
                    "degrade_not_taken_by": told,
                },
            )
        for stage, why in errors.items():
            metrics.ERRORS.labels(stage).inc()
            log.warning(
                "monitor round failed",
                extra={"stage": stage, "error": why, "unreachable_routers": reading.unreachable},
            )
        self.rounds += 1
        metrics.LAST_ITERATION.set(self._clock())
        self.last = Iteration(reading.unreachable, window, current, decision, applied, outcome, errors, told)
        return self.last

    async def _tell_routers(self, decision: Decision, errors: dict[str, str]) -> dict[str, str]:
        """Every router gets the override each round; the TTL outlives a few missed rounds only."""
        assert self.control is not None
        ttl = self.settings.degrade_ttl_s or 3 * self.settings.interval_s
        try:
            told = await self.control.set_degrade(decision.degrade_misses, decision.degrade_reason, ttl)
        except Exception as error:
            errors["degrade"] = repr(error)
            return {}
        metrics.DEGRADE_UNREACHABLE.set(len(told))
        if told:
            errors["degrade"] = f"{len(told)} router(s) did not take the override: {sorted(told)}"
        return told

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds every `interval_s` (measured start to start) until `stop` is set."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            await self.iterate()
            wait = max(0.0, self.settings.interval_s - (loop.time() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
