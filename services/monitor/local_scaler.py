"""The local scaler: `modm up`'s worker slots, one worker process each, large or small.

A slot is one GPU (or, with tiny models, one CPU process) on a fixed port. Moving a GPU between
the pools drains the slot's worker (SIGTERM: NOT_SERVING, in-flight requests finish) and starts
the other model on the same port; the router reads every slot's role from the worker's own
Info (`MODM_ROUTER_WORKERS`), so the slot changes pools without the router restarting.

The decision logic is `plan_switch` (pure): one slot at a time, and only once every slot is
serving (a slot still loading is a switch in progress); a pool only gives up a slot while it
has more than its target, so a pool the target wants non-empty is never left empty. Process
management sits behind `Launcher`/`RunningWorker` so the scaler is unit-testable with fakes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from grpc_health.v1.health_pb2 import HealthCheckResponse

from modm.launch import ServiceProcess, health_status
from modm.services.monitor.loop import MonitorLoop
from modm.services.monitor.observations import Allocation, Decision
from modm.services.monitor.policy import Policy, policy_named
from modm.services.monitor.settings import MonitorSettings
from modm.services.monitor.stats_client import StatsClient

log = logging.getLogger(__name__)

SERVING = HealthCheckResponse.SERVING

Role = Literal["large", "small"]
ROLES: tuple[Role, Role] = ("large", "small")
OTHER: dict[Role, Role] = {"large": "small", "small": "large"}


@dataclass(frozen=True)
class WorkerSlot:
    """A slot: its name (in logs), its port, and its worker's environment for each role."""

    name: str
    port: int
    envs: Mapping[Role, Mapping[str, str]]
    role: Role  # what it starts as

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class SlotView:
    index: int
    role: Role
    ready: bool


@dataclass(frozen=True)
class Switch:
    slot: int
    to: Role


def plan_switch(slots: Sequence[SlotView], target: Allocation) -> Switch | str:
    """The one slot to switch next towards `target`, or why none is switched now."""
    loading = [s for s in slots if not s.ready]
    if loading:
        return f"waiting for slot {loading[0].index} ({loading[0].role}) to be serving before switching another"
    count: dict[Role, int] = {"large": sum(s.role == "large" for s in slots), "small": 0}
    count["small"] = len(slots) - count["large"]
    wanted: dict[Role, int] = {"large": target.large, "small": target.small}
    for gain in ROLES:
        lose = OTHER[gain]
        if count[gain] < wanted[gain] and count[lose] > wanted[lose]:
            donor = max(s.index for s in slots if s.role == lose)  # the last slot: slot 0 stays put
            return Switch(donor, gain)
    return f"at target: {count['large']} large + {count['small']} small"


class RunningWorker(Protocol):
    def ready(self) -> bool: ...

    def exit_code(self) -> int | None: ...

    def drain(self) -> int: ...


Launcher = Callable[[WorkerSlot, Role], RunningWorker]


@dataclass(frozen=True)
class LocalOutcome:
    """What `apply` did: the slot switched (None: none), and why or why not."""

    switched: Switch | None
    note: str


class LocalScaler:
    """The loop's Scaler over worker slots; thread-safe (the monitor thread applies, `modm up`'s
    main thread watches and stops)."""

    moves_one_at_a_time = True  # `plan_switch`

    def __init__(self, slots: Sequence[WorkerSlot], launcher: Launcher) -> None:
        if not slots:
            raise ValueError("the local scaler needs at least one worker slot")
        self.slots = list(slots)
        self.roles: list[Role] = [slot.role for slot in slots]
        self._launch = launcher
        self._running: list[RunningWorker | None] = [None] * len(slots)
        self._lock = threading.Lock()
        self._stopped = False
        self.switches = 0

    def start_all(self) -> list[RunningWorker]:
        with self._lock:
            for index, slot in enumerate(self.slots):
                self._running[index] = self._launch(slot, self.roles[index])
            return [w for w in self._running if w is not None]

    def current(self) -> Allocation:
        with self._lock:
            return Allocation(self.roles.count("large"), self.roles.count("small"))

    def views(self) -> list[SlotView]:
        """Each slot's role and whether its worker is serving (a slot being switched is not)."""
        with self._lock:
            snapshot = list(zip(self.roles, self._running, strict=True))
        return [SlotView(i, role, worker is not None and worker.ready()) for i, (role, worker) in enumerate(snapshot)]

    def apply(self, decision: Decision) -> LocalOutcome:
        plan = plan_switch(self.views(), decision.target)
        if isinstance(plan, str):
            return LocalOutcome(None, plan)
        with self._lock:
            if self._stopped:
                return LocalOutcome(None, "stopping")
            slot, old = self.slots[plan.slot], self._running[plan.slot]
            previous, self.roles[plan.slot] = self.roles[plan.slot], plan.to
            self._running[plan.slot] = None  # switching: its exit is no crash
        what = {"slot": slot.name, "from": previous, "to": plan.to, "reason": decision.reason}
        log.info("switching slot", extra=what)
        code = old.drain() if old is not None else None
        fresh = self._launch(slot, plan.to)
        with self._lock:
            if self._stopped:  # stopped while switching: no worker outlives the stack
                fresh.drain()
            else:
                self._running[plan.slot] = fresh
                self.switches += 1
        return LocalOutcome(plan, f"{slot.name} drained (exit {code}) and restarted as {plan.to}")

    def problem(self) -> str | None:
        """Why a slot's worker is no longer running when nobody stopped it, else None."""
        with self._lock:
            for slot, role, worker in zip(self.slots, self.roles, self._running, strict=True):
                code = worker.exit_code() if worker is not None else None
                if code is not None:
                    return f"{slot.name} ({role}) exited with {code}"
        return None

    def stop(self) -> str:
        """Drains every slot; the exit codes, in slot order."""
        with self._lock:
            self._stopped = True
            running, self._running = self._running, [None] * len(self.slots)
        return ", ".join(str(worker.drain()) for worker in running if worker is not None)


@dataclass
class ProcessWorker:
    """A slot's worker as a real process (`modm.launch.start_module`)."""

    process: ServiceProcess
    drain_timeout_s: float = 60.0

    def ready(self) -> bool:
        return self.process.proc.poll() is None and health_status(self.process.address) == SERVING

    def exit_code(self) -> int | None:
        return self.process.proc.poll()

    def drain(self) -> int:
        return self.process.stop(signal.SIGTERM, timeout=self.drain_timeout_s)


class LocalMonitor:
    """The control loop on its own thread and event loop inside `modm up`: Stats from the local
    router, decisions applied to the slots, the degrade override sent to the router."""

    def __init__(self, settings: MonitorSettings, scaler: LocalScaler, policy: Policy | None = None) -> None:
        """`policy` replaces the one `settings` names (`modm up --time-scale` scales its horizon)."""
        s = self.settings = settings
        self.scaler = scaler
        self.reader = StatsClient(
            s.routers,
            timeout_s=s.stats_timeout_s,
            token_file=s.router_token_file,
            tls=s.router_tls(),
            source=s.identity,
        )
        self.loop = MonitorLoop(s, self.reader, scaler, policy or policy_named(s.policy), control=self.reader)
        self._stop: asyncio.Event | None = None
        self._events: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="modm-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    async def _main(self) -> None:
        s = self.settings
        self._stop, self._events = asyncio.Event(), asyncio.get_running_loop()
        self._started.set()
        log.info("monitoring", extra={"routers": s.routers, "interval_s": s.interval_s, "policy": s.policy})
        try:
            await self.loop.run(self._stop)
        finally:
            await self.reader.close()

    def stop(self, timeout_s: float = 150.0) -> None:
        if self._events is not None and self._stop is not None:
            self._events.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
