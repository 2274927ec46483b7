"""Sliding-window statistics for the monitor: request rate, hit rate, the k distribution and
per-worker measured service time. Pure: the caller passes the clock."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from modm import reuse


@dataclass(frozen=True)
class RequestRecord:
    at: float
    outcome: str  # exact_repeat, hit, miss, bypassed, failed
    skipped_steps: int = 0
    total_steps: int = 0
    degraded: bool = False
    retries: int = 0


@dataclass(frozen=True)
class ServiceRecord:
    at: float
    worker: str
    seconds: float
    steps_run: int
    failed: bool = False


@dataclass(frozen=True)
class WorkerWindow:
    completed: int
    failures: int
    mean_service_seconds: float
    mean_seconds_per_step: float


@dataclass(frozen=True)
class WindowSnapshot:
    window_seconds: float
    requests: int
    request_rate_per_min: float
    hit_rate: float
    exact_repeat_rate: float
    k_distribution: dict[int, float]
    kappa: float
    outcomes: dict[str, int]
    degraded: int
    retries: int
    workers: dict[str, WorkerWindow] = field(default_factory=dict)


class SlidingWindow:
    """Keeps the last `window_seconds` of records; `snapshot(now)` summarises them.

    The request rate is over the whole window once the window has been observed for that long,
    and over the observed span before that, so a fresh router does not under-report.
    """

    def __init__(self, window_seconds: float, started_at: float) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.window_seconds = window_seconds
        self._started_at = started_at
        self._requests: deque[RequestRecord] = deque()
        self._services: deque[ServiceRecord] = deque()

    def record_request(self, record: RequestRecord) -> None:
        self._requests.append(record)

    def record_service(self, record: ServiceRecord) -> None:
        self._services.append(record)

    def _prune(self, now: float) -> None:
        horizon = now - self.window_seconds
        while self._requests and self._requests[0].at < horizon:
            self._requests.popleft()
        while self._services and self._services[0].at < horizon:
            self._services.popleft()

    def snapshot(self, now: float) -> WindowSnapshot:
        self._prune(now)
        records = list(self._requests)
        outcomes = Counter(r.outcome for r in records)
        served = [r for r in records if r.outcome != "failed"]
        hits = [r for r in served if r.outcome == "hit"]
        repeats = outcomes.get("exact_repeat", 0)
        span = min(self.window_seconds, max(now - self._started_at, 1e-9))
        k_counts = Counter(r.skipped_steps for r in hits)
        k_distribution = {k: n / len(hits) for k, n in sorted(k_counts.items())} if hits else {}
        hit_kappa = reuse.kappa(Counter((r.skipped_steps, r.total_steps) for r in hits if r.total_steps))
        return WindowSnapshot(
            window_seconds=self.window_seconds,
            requests=len(records),
            request_rate_per_min=len(records) * 60.0 / span,
            hit_rate=(len(hits) + repeats) / len(served) if served else 0.0,
            exact_repeat_rate=repeats / len(served) if served else 0.0,
            k_distribution=k_distribution,
            kappa=0.0 if hit_kappa is None else hit_kappa,
            outcomes=dict(outcomes),
            degraded=sum(1 for r in records if r.degraded),
            retries=sum(r.retries for r in records),
            workers=self._workers(),
        )

    def _workers(self) -> dict[str, WorkerWindow]:
        by_worker: dict[str, list[ServiceRecord]] = {}
        for record in self._services:
            by_worker.setdefault(record.worker, []).append(record)
        summary = {}
        for worker, records in by_worker.items():
            ok = [r for r in records if not r.failed]
            steps = sum(r.steps_run for r in ok)
            summary[worker] = WorkerWindow(
                completed=len(ok),
                failures=len(records) - len(ok),
                mean_service_seconds=sum(r.seconds for r in ok) / len(ok) if ok else 0.0,
                mean_seconds_per_step=sum(r.seconds for r in ok) / steps if steps else 0.0,
            )
        return summary
