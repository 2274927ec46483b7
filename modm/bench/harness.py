"""Is the machine, not the system, the bottleneck? Saturation throughput and the harness check.

An emulated fleet (`modm up --emulate N`) sleeps where GPUs would compute, so the system it
measures is the router, the cache, the monitor and the workers' services. Everything else runs on
the machine's few cores, and a run is only a result if the machine kept up:

- the large-only run reaches at least `MIN_CAPACITY_RATIO` of what its GPUs can serve: N images
  per image time (its profile's, time-scaled), since a closed loop keeps every GPU busy;
- the router and the cache each used at most `MAX_CPU_SHARE` of one core over the run (both are
  mostly one Python thread: near a full core, they would be what caps the fleet);
- the machine's 1-minute load average stayed at most `MAX_LOAD_PER_CORE` per core during the
  measured phase (3 on a 2-core machine): beyond it, processes waited for a core, whatever their
  own share was.

A run that fails is capped by the machine: its numbers are kept, flagged, and not reported as
results.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modm.bench.records import RequestRecord
from modm.bench.traces import TraceRequest

if TYPE_CHECKING:
    from modm.services.worker.device_profile import DeviceProfile

MIN_CAPACITY_RATIO = 0.95
# Answers of one pipeline call reach the client within milliseconds; a worker's next call takes
# at least one call's time (at the time scales the fleet runs at, tenths of a second).
SAME_CALL_S = 0.05
MAX_CPU_SHARE = 0.5  # of one core, each of the router and the cache
MAX_LOAD_PER_CORE = 1.5
CHECKED_CPU = ("router", "cache")
# What each process of a stack is, by the module it runs (`python -m ...`); anything a cache
# starts (its embedded S3 and Milvus servers) counts as the cache.
KINDS = {"modm.services.router": "router", "modm.services.cache": "cache", "modm.services.worker": "workers"}


def saturation_rps(records: Sequence[RequestRecord], start: float = 0.0) -> float | None:
    """Requests served per second while a closed loop kept the stack saturated, from `start` (its
    measured phase; the warm-up's records are still needed for the calls running then).

    The loop is saturated until its last request is sent (then fewer clients remain than it had).
    Counting the requests answered in that span would miss the work in progress at its ends, up
    to a batch per GPU, so each call counts by the share of it done within the span. A worker's
    calls are its answers that arrived together (within `SAME_CALL_S`); a call began when the
    worker had finished its previous one and held every request of it (the router's worker call,
    `generate_seconds`, includes waiting in the worker's queue). Exact repeats, which no worker
    runs, count when answered. None without an answer or a span.
    """
    ok = [r for r in records if r.ok]
    end = max((r.sent_s for r in records), default=0.0)
    if not ok or end <= start:
        return None
    answers: dict[str, list[RequestRecord]] = {}
    for r in ok:
        answers.setdefault(r.worker, []).append(r)
    served = float(sum(start < r.done_s <= end for r in answers.pop("", [])))
    for mine in answers.values():
        mine.sort(key=lambda r: r.done_s)
        calls: list[list[RequestRecord]] = []
        for r in mine:
            if calls and r.done_s - calls[-1][0].done_s <= SAME_CALL_S:
                calls[-1].append(r)
            else:
                calls.append([r])
        previous = 0.0
        for call in calls:
            finished = call[0].done_s
            began = max(previous, *(r.done_s - r.timings.get("generate_seconds", 0.0) for r in call))
            previous = finished
            if finished <= began:
                share = 1.0 if start < finished <= end else 0.0
            else:
                share = max(0.0, min(finished, end) - max(began, start)) / (finished - began)
            served += len(call) * share
    return served / (end - start)


def load_average(path: Path = Path("/proc/loadavg")) -> float | None:
    """The machine's 1-minute load average (None where the system does not publish it)."""
    try:
        return float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Check:
    """The harness check of one run: what was measured and what failed (empty: a result)."""

    cpu_share: dict[str, float] = field(default_factory=dict)
    capacity_ratio: float | None = None
    failures: tuple[str, ...] = ()
    max_load: float | None = None  # the 1-minute load average's peak over the measured phase
    load_limit: float | None = None

    @property
    def capped_by_machine(self) -> bool:
        return bool(self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu_share_of_one_core": self.cpu_share,
            "max_cpu_share": MAX_CPU_SHARE,
            "capacity_ratio": self.capacity_ratio,
            "min_capacity_ratio": MIN_CAPACITY_RATIO,
            "max_load_average": self.max_load,
            "load_average_limit": self.load_limit,
            "failures": list(self.failures),
        }


def check(
    mode: str,
    *,
    duration_s: float,
    cpu_seconds: dict[str, float],
    saturation_wall_rps: float | None,
    capacity_rps: float | None,
    loads: Sequence[float] = (),
    cores: int = 0,
) -> Check:
    """The check of a run (`capacity_rps`: what the large model alone can serve, wall clock;
    `loads`: the 1-minute load averages read during its measured phase, on `cores` cores)."""
    shares = {kind: round(seconds / duration_s, 4) for kind, seconds in cpu_seconds.items()} if duration_s > 0 else {}
    failures = [
        f"the {kind} used {shares[kind]:.0%} of a core (limit {MAX_CPU_SHARE:.0%})"
        for kind in CHECKED_CPU
        if shares.get(kind, 0.0) > MAX_CPU_SHARE
    ]
    ratio = None
    if mode == "large-only" and capacity_rps:
        ratio = round((saturation_wall_rps or 0.0) / capacity_rps, 4)
        if ratio < MIN_CAPACITY_RATIO:
            failures.append(
                f"large-only served {ratio:.0%} of its GPUs' capacity ({capacity_rps:.2f} req/s; "
                f"needs {MIN_CAPACITY_RATIO:.0%})"
            )
    peak = max(loads, default=None)
    limit = MAX_LOAD_PER_CORE * cores if cores else None
    if peak is not None and limit is not None and peak > limit:
        failures.append(f"the machine's 1-minute load average reached {peak:.2f} (limit {limit:g} on {cores} cores)")
    return Check(shares, ratio, tuple(failures), peak, limit)


def large_capacity_rps(profile: DeviceProfile, gpus: int, requests: Sequence[TraceRequest]) -> float:
    """Requests/s `gpus` GPUs serve on this (time-scaled) profile alone, one image at a time,
    at the requests' own sizes and steps (the profile's defaults where they name none)."""
    seconds = []
    for request in requests:
        params = request.params
        width, height = params.get("width") or profile.width, params.get("height") or profile.height
        overhead, per_step = profile.call_seconds(1, width, height)
        seconds.append(overhead + (params.get("steps") or profile.default_steps) * per_step)
    return gpus / (sum(seconds) / len(seconds))


class StackMeter:
    """CPU time and memory of a stack's processes, by kind (up, router, cache, workers), read from
    the process trees under `roots` (`modm up` and any router the bench started itself)."""

    def __init__(self, roots: Iterable[int]) -> None:
        self.roots = list(roots)
        self._started: dict[str, float] = {}
        self._bench_started = 0.0

    def _processes(self) -> dict[str, list[Any]]:
        import psutil

        found: dict[str, list[Any]] = {}

        def visit(process: Any, kind: str | None) -> None:
            try:
                command = process.cmdline()
                children = process.children()
            except psutil.Error:  # gone meanwhile (a slot being switched)
                return
            own = next((k for module, k in KINDS.items() if module in command), None)
            kind = own or kind
            if kind is not None:
                found.setdefault(kind, []).append(process)
            for child in children:
                visit(child, kind)

        for pid in self.roots:
            try:
                visit(psutil.Process(pid), "up")  # `modm up` itself: its monitor and local scaler
            except psutil.Error:
                continue
        return found

    def cpu_seconds(self) -> dict[str, float]:
        import psutil

        out: dict[str, float] = {}
        for kind, processes in self._processes().items():
            for process in processes:
                try:
                    times = process.cpu_times()
                except psutil.Error:
                    continue
                out[kind] = out.get(kind, 0.0) + times.user + times.system
        return out

    def start(self) -> None:
        self._started = self.cpu_seconds()
        self._bench_started = time.process_time()

    def used(self) -> dict[str, float]:
        """CPU seconds each kind used since `start` (a worker replaced meanwhile loses its own),
        and the bench's own process."""
        now = self.cpu_seconds()
        used = {kind: round(now[kind] - self._started.get(kind, 0.0), 3) for kind in now}
        return used | {"bench": round(time.process_time() - self._bench_started, 3)}

    def rss_mib(self) -> dict[str, float]:
        """Resident memory by kind, summed over processes, and the total."""
        import psutil

        out: dict[str, float] = {}
        for kind, processes in self._processes().items():
            for process in processes:
                try:
                    out[kind] = out.get(kind, 0.0) + process.memory_info().rss / 2**20
                except psutil.Error:
                    continue
        rounded = {kind: round(mib, 1) for kind, mib in out.items()}
        return rounded | {"total": round(sum(out.values()), 1)}
