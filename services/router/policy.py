"""The router's decisions as pure functions: no gRPC, no clock, no I/O.

- `plan_request`: exact repeat / hit / miss / bypassed, from the cache's decision and the
  client's cache policy (and whether the cache answered at all).
- `should_insert`: whether an output goes into the cache.
- `route`: which pool serves a planned request, with MoDM's rule that idle large workers take
  hits, degradation of misses to the small pool under overload (the router's own judgement
  against the deadline, or the monitor's override), and admission control against the
  client's deadline.
- `DegradeOverride`: the monitor's overload override, validated and lapsing after its TTL.
- `choose_worker`: least outstanding work, never above a worker's advertised capacity.
- `classify_failure`: whose fault a failed attempt was (the worker's, the request's, a full
  queue's), which decides retries and ejection; retry and deadline arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from modm.errors import InvalidArgument
from modm.grpc_errors import FailureReason


class CachePolicy(StrEnum):
    READ_WRITE = "read_write"
    BYPASS = "bypass"  # no reuse; output still inserted
    NO_STORE = "no_store"  # reuse; output not inserted
    OFF = "off"  # neither

    @property
    def reads(self) -> bool:
        return self in (CachePolicy.READ_WRITE, CachePolicy.NO_STORE)

    @property
    def writes(self) -> bool:
        return self in (CachePolicy.READ_WRITE, CachePolicy.BYPASS)


class Outcome(StrEnum):
    EXACT_REPEAT = "exact_repeat"
    HIT = "hit"
    MISS = "miss"
    BYPASSED = "bypassed"


class Pool(StrEnum):
    LARGE = "large"
    SMALL = "small"


@dataclass(frozen=True)
class CacheDecision:
    """The cache's answer to one lookup (modm.v1.Decision plus what the router needs)."""

    hit: bool
    exact_repeat: bool
    skipped_steps: int
    total_steps: int
    strength: float
    similarity: float
    entry_id: str
    embedder: str = ""


@dataclass(frozen=True)
class Plan:
    """How a request will be served, before a pool is chosen."""

    outcome: Outcome
    similarity: float = -1.0
    skipped_steps: int = 0
    total_steps: int = 0
    strength: float = 1.0
    entry_id: str = ""
    cache_available: bool = True
    note: str = ""

    @property
    def needs_worker(self) -> bool:
        return self.outcome is not Outcome.EXACT_REPEAT

    @property
    def needs_image(self) -> bool:
        """A cached image must be fetched (repeat: returned as is; hit: the img2img init)."""
        return self.outcome in (Outcome.EXACT_REPEAT, Outcome.HIT)


def plan_request(policy: CachePolicy, decision: CacheDecision | None, *, cache_note: str | None = None) -> Plan:
    """Decide the outcome. `decision` is None when the cache was not asked or did not answer;
    `cache_note` says why it did not answer (None: it was not asked)."""
    if not policy.reads:
        return Plan(Outcome.BYPASSED, note="cache policy skips reuse")
    if decision is None:
        return Plan(Outcome.MISS, cache_available=False, note=cache_note or "cache not consulted")
    common = {"similarity": decision.similarity, "total_steps": decision.total_steps}
    if decision.exact_repeat and decision.entry_id:
        return Plan(
            Outcome.EXACT_REPEAT,
            skipped_steps=decision.total_steps,
            strength=0.0,
            entry_id=decision.entry_id,
            **common,
        )
    if decision.hit and decision.entry_id and 0.0 < decision.strength < 1.0 and decision.skipped_steps > 0:
        return Plan(
            Outcome.HIT,
            skipped_steps=decision.skipped_steps,
            strength=decision.strength,
            entry_id=decision.entry_id,
            **common,
        )
    return Plan(Outcome.MISS, **common)


def as_miss(plan: Plan, note: str) -> Plan:
    """A hit or repeat whose cached image could not be fetched is served as a miss."""
    return Plan(Outcome.MISS, similarity=plan.similarity, cache_available=plan.cache_available, note=note)


def as_shared(plan: Plan, note: str) -> Plan:
    """A miss answered with the image an identical request generated at the same time: an exact
    repeat, though the cache could not have known it yet."""
    return Plan(
        Outcome.EXACT_REPEAT,
        similarity=1.0,
        skipped_steps=plan.total_steps,
        total_steps=plan.total_steps,
        strength=0.0,
        cache_available=plan.cache_available,
        note=note,
    )


def should_insert(
    outcome: Outcome,
    policy: CachePolicy,
    *,
    degraded: bool,
    insert_hits: bool,
    insert_degraded: bool,
) -> bool:
    """MoDM inserts large-model outputs; hits (small-model refinements) only when configured."""
    if not policy.writes:
        return False
    if outcome in (Outcome.MISS, Outcome.BYPASSED):
        return insert_degraded if degraded else True
    if outcome is Outcome.HIT:
        return insert_hits
    return False


def hit_steps(requested: int, default_steps: int, strength: float) -> int:
    """Steps to ask of an img2img run so that it runs at least one step.

    The worker runs about `steps x strength` steps and refuses a call that would run none; a
    client asking for few steps (or a model with few default steps) and a high k would hit that.
    Returns `requested` unchanged (0 = the model's default) unless that would run no step.
    """
    effective = requested or default_steps
    if effective <= 0 or strength <= 0 or effective * strength >= 1.0:
        return requested
    needed = math.ceil(1.0 / strength)
    return needed if needed * strength >= 1.0 else needed + 1


# --- dispatch ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerLoad:
    """One worker as the dispatcher sees it."""

    key: str
    in_flight: int
    capacity: int
    outstanding_seconds: float
    healthy: bool = True

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.in_flight) if self.healthy else 0


def choose_worker(workers: Iterable[WorkerLoad], exclude: Iterable[str] = ()) -> str | None:
    """Least outstanding work among healthy workers with a free slot; None if all are full.

    Workers in `exclude` (those that already failed this request) are used only when no other
    healthy worker exists at all, busy or not: waiting for a healthy peer beats retrying the
    worker that just failed, but a lone worker that came back is better than nothing.
    """
    excluded = set(exclude)
    healthy = [w for w in workers if w.healthy and w.capacity > 0]
    preferred = [w for w in healthy if w.key not in excluded] or healthy
    free = [w for w in preferred if w.free > 0]
    if not free:
        return None
    return min(free, key=lambda w: (w.outstanding_seconds, w.in_flight, w.key)).key


@dataclass(frozen=True)
class PoolLoad:
    """One pool as admission control sees it."""

    workers: int  # healthy workers
    capacity: int  # sum of their slots
    in_flight: int
    queued: int  # waiting in the router for this pool
    outstanding_seconds: float  # estimated work in flight and queued
    idle_workers: int  # healthy workers with nothing in flight
    seconds_per_step: float
    overhead_seconds: float
    default_steps: int

    @property
    def free_slots(self) -> int:
        return max(0, self.capacity - self.in_flight)

    def job_seconds(self, steps: int | None = None, strength: float = 1.0) -> float:
        run = (steps or self.default_steps) * strength
        return self.overhead_seconds + max(1.0, run) * self.seconds_per_step

    def wait_seconds(self) -> float:
        """Expected wait before a new job starts: none while slots are free, else the backlog
        spread over the pool's workers."""
        if self.workers == 0:
            return math.inf
        if self.queued < self.free_slots:
            return 0.0
        return self.outstanding_seconds / self.workers


@dataclass(frozen=True)
class RoutingRules:
    large_takes_hits: bool = True
    degrade_misses: bool = True
    max_queue: int = 256  # per pool
    # Admit only when the estimate times this factor fits the remaining deadline.
    admission_safety: float = 1.0
    min_retry_after_s: float = 1.0


@dataclass(frozen=True)
class Route:
    pool: Pool
    degraded: bool = False
    large_took_hit: bool = False
    estimate_seconds: float = 0.0


@dataclass(frozen=True)
class Reject:
    """Nothing can serve in time (`retry_after_s` set) or no worker exists at all (None)."""

    reason: str
    retry_after_s: float | None


def _fits(pool: PoolLoad, job: float, remaining: float, rules: RoutingRules) -> tuple[bool, float]:
    estimate = pool.wait_seconds() + job
    ok = pool.workers > 0 and pool.queued < rules.max_queue and estimate * rules.admission_safety <= remaining
    return ok, estimate


def route(
    plan: Plan,
    large: PoolLoad,
    small: PoolLoad,
    *,
    remaining_s: float,
    steps: int | None,
    rules: RoutingRules,
    monitor_degrade: bool = False,
) -> Route | Reject:
    """Choose the pool for a hit or a miss, or refuse it.

    `monitor_degrade` (the monitor's override, see `DegradeOverride`): a miss the large pool
    cannot start at once goes to the small pool when that can start it at once, instead of
    waiting in the large queue. Never when the operator turned `degrade_misses` off.
    """
    if large.workers == 0 and small.workers == 0:
        return Reject("no worker is reachable", None)
    if plan.outcome is Outcome.HIT:
        small_ok, small_est = _fits(small, small.job_seconds(steps, plan.strength), remaining_s, rules)
        large_ok, large_est = _fits(large, large.job_seconds(steps, plan.strength), remaining_s, rules)
        large_idle = rules.large_takes_hits and large.queued == 0 and large.idle_workers > 0
        if large_idle and large_ok and (small.workers == 0 or small.free_slots <= small.queued):
            return Route(Pool.LARGE, large_took_hit=True, estimate_seconds=large_est)
        if small_ok:
            return Route(Pool.SMALL, estimate_seconds=small_est)
        if small.workers == 0 and large_ok:  # no small pool at all: the large one refines
            return Route(Pool.LARGE, large_took_hit=True, estimate_seconds=large_est)
        return _reject("hit", small if small.workers else large, small_est, remaining_s, rules)
    large_ok, large_est = _fits(large, large.job_seconds(steps), remaining_s, rules)
    if monitor_degrade and rules.degrade_misses and large.free_slots <= large.queued:
        small_ok, small_est = _fits(small, small.job_seconds(steps), remaining_s, rules)
        if small_ok and small.free_slots > small.queued:
            return Route(Pool.SMALL, degraded=True, estimate_seconds=small_est)
    if large_ok:
        return Route(Pool.LARGE, estimate_seconds=large_est)
    if rules.degrade_misses:
        small_ok, small_est = _fits(small, small.job_seconds(steps), remaining_s, rules)
        if small_ok:
            return Route(Pool.SMALL, degraded=True, estimate_seconds=small_est)
    if large.workers == 0 and not rules.degrade_misses:
        return Reject("no large worker is reachable and degradation is off", None)
    return _reject("miss", large if large.workers else small, large_est, remaining_s, rules)


def _reject(kind: str, pool: PoolLoad, estimate: float, remaining: float, rules: RoutingRules) -> Reject:
    if pool.queued >= rules.max_queue:
        reason = f"the {kind} queue is full ({pool.queued} waiting)"
    else:
        reason = f"a {kind} would take about {estimate:.1f}s, more than the {remaining:.1f}s left"
    wait = pool.wait_seconds()
    retry = max(rules.min_retry_after_s, wait if math.isfinite(wait) else rules.min_retry_after_s)
    return Reject(reason, round(retry, 3))


# --- the monitor's override ----------------------------------------------------------------

MAX_DEGRADE_TTL_S = 86400.0
MAX_DEGRADE_TEXT = 4000


@dataclass(frozen=True)
class DegradeOverride:
    """What the monitor last said about overload; in force only until `expires_at` (router
    clock), so a monitor that stops renewing it never leaves the router degraded."""

    degrade: bool = False
    reason: str = ""
    source: str = ""
    expires_at: float = 0.0

    def active(self, now: float) -> bool:
        return self.degrade and now < self.expires_at

    def expires_in(self, now: float) -> float:
        return max(0.0, self.expires_at - now) if self.active(now) else 0.0


def degrade_override(degrade: bool, reason: str, source: str, ttl_s: float, *, now: float) -> DegradeOverride:
    """A validated override (INVALID_ARGUMENT naming the field otherwise); clearing needs no TTL."""
    if len(reason) > MAX_DEGRADE_TEXT:
        raise InvalidArgument("reason", f"longer than {MAX_DEGRADE_TEXT} characters")
    if len(source) > 256:
        raise InvalidArgument("source", "longer than 256 characters")
    if not degrade:
        return DegradeOverride(False, reason, source, now)
    if not (math.isfinite(ttl_s) and 0.0 < ttl_s <= MAX_DEGRADE_TTL_S):
        raise InvalidArgument("ttl_seconds", f"{ttl_s} is not in (0, {MAX_DEGRADE_TTL_S:.0f}]")
    return DegradeOverride(True, reason, source, now + ttl_s)


# --- retries and deadlines -----------------------------------------------------------------


class FailureKind(StrEnum):
    """Whose fault a failed worker attempt was, which decides what the router does next."""

    WORKER = "worker"  # the worker is broken (crashed, hung, gone): retry elsewhere; counts toward ejection
    REQUEST = "request"  # this request broke the attempt (out of memory, pipeline error): one retry elsewhere
    BUSY = "busy"  # the worker's queue is full: retry until the deadline
    FINAL = "final"  # the request is refused as it is (bad input): no retry

    @property
    def ejects(self) -> bool:
        """Whether it counts toward taking the worker out of rotation: a request that fails
        every worker it meets must not empty the pool."""
        return self is FailureKind.WORKER


WORKER_FAULT_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "ABORTED"})
REQUEST_FAULT_REASONS = frozenset({FailureReason.OUT_OF_MEMORY, FailureReason.PIPELINE_ERROR})
# Without a reason these say nothing of the worker's health: an error this request triggered.
UNEXPLAINED_CODES = frozenset({"INTERNAL", "UNKNOWN"})
# A per-request failure is tried on one other worker, never more.
MAX_REQUEST_FAULT_RETRIES = 1


def classify_failure(code: str, reason: FailureReason | None) -> FailureKind:
    """Judge a worker attempt's status name and `modm-reason` trailer."""
    if reason in REQUEST_FAULT_REASONS:
        return FailureKind.REQUEST
    if code == "RESOURCE_EXHAUSTED":
        return FailureKind.BUSY
    if code in WORKER_FAULT_CODES:
        return FailureKind.WORKER
    if code in UNEXPLAINED_CODES:
        return FailureKind.REQUEST
    return FailureKind.FINAL


def should_retry(kind: FailureKind, request_faults: int) -> bool:
    """Whether to try again after a failure of `kind`, `request_faults` being the per-request
    failures so far, this one included (attempts and time permitting: `may_retry`)."""
    if kind is FailureKind.FINAL:
        return False
    return kind is not FailureKind.REQUEST or request_faults <= MAX_REQUEST_FAULT_RETRIES


def may_retry(attempt: int, *, max_attempts: int, remaining_s: float, backoff_s: float) -> bool:
    """Another attempt is worth it if attempts are left and time remains after the backoff."""
    return attempt < max_attempts and remaining_s > backoff_s


def attempt_timeout(remaining_s: float, estimate_s: float, *, factor: float, floor_s: float) -> float:
    """How long one worker attempt may take: generous against the estimate (a hung worker
    must not eat the whole deadline), never beyond the deadline."""
    return max(0.0, min(remaining_s, max(floor_s, estimate_s * factor)))


def effective_deadline(now: float, client_timeout_s: float | None, *, default_s: float, max_s: float) -> float:
    """Absolute deadline: the client's (from gRPC), else the default, capped by the maximum."""
    budget = default_s if client_timeout_s is None else client_timeout_s
    return now + max(0.0, min(budget, max_s))
