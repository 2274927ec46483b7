"""The monitor's default allocation policy, and the registry of every policy by name.

MoDM's rules (`modm_reference`) size the pools from arrival rates alone. The default instead
scores every split the fleet's bounds allow by what it predicts for the next horizon
(`queueing.forecast`):

- the queues already waiting are work to clear, not just the arrival rates;
- a GPU that changes pool serves nothing while it loads the other model (the load time its
  workers report), so a switch is priced as lost capacity and never made for a gain smaller
  than `margin`;
- the score is the predicted share of requests over the SLO plus a little mean latency, so the
  split follows the SLO rather than a utilisation target;
- a move that is not urgent must be wanted two windows in a row (hysteresis: Poisson noise on
  a steady load does not make the pools flap);
- when even the best split leaves many requests over the SLO, it tells the router to serve the
  misses the large pool cannot keep up with on the small pool (degraded), and says so; it
  never stops serving.

Among splits that predict about the same, it keeps more large GPUs (MoDM's quality first:
idle large workers take hits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from modm.services.monitor.modm_reference import ModmPolicy, Variant
from modm.services.monitor.observations import (
    Allocation,
    Decision,
    Fleet,
    PoolState,
    Prediction,
    Window,
    model_loads,
)
from modm.services.monitor.queueing import PoolForecast, Stream, forecast


class Policy(Protocol):
    """Pure: the same window, allocation, fleet, state and `scaler_follows` always give the same
    decision. `scaler_follows` is false while the last decisions cannot take effect (not the
    leader, a pool paused or held, replicas not ready): a policy must not learn from them."""

    @property
    def name(self) -> str: ...

    def initial_state(self) -> object: ...

    def decide(
        self, window: Window, current: Allocation, fleet: Fleet, state: object, *, scaler_follows: bool = True
    ) -> Decision: ...


@dataclass(frozen=True)
class Hysteresis:
    pending_large: int | None = None  # the split last wanted but not yet made
    pending_windows: int = 0


@dataclass(frozen=True)
class Scored:
    large: int
    degrade: bool
    prediction: Prediction
    score: float


@dataclass(frozen=True)
class SloAwarePolicy:
    """The default: see the module docstring."""

    horizon_s: float = 600.0  # how far ahead a split is judged (and the queue must be cleared)
    target_utilisation: float = 0.9  # a pool is counted full beyond this when routing overflow
    latency_weight: float = 0.05  # score per SLO of mean latency (a tie-breaker among SLO-safe splits)
    latency_cap: float = 3.0  # SLOs of mean latency beyond which only the over-SLO share counts
    degraded_weight: float = 0.5  # score per degraded miss: half as bad as one over the SLO
    margin: float = 0.02  # minimum score gain for a switch
    tie: float = 0.005  # splits this close count as equal (then more large GPUs win)
    urgent_gain: float = 0.05  # over-SLO share the current split loses: act without confirming
    confirm_windows: int = 2
    degrade_above: float = 0.1  # over-SLO share of the best non-degrading split that means overload

    @property
    def name(self) -> str:
        return "slo-aware"

    def initial_state(self) -> Hysteresis:
        return Hysteresis()

    def decide(
        self, window: Window, current: Allocation, fleet: Fleet, state: object, *, scaler_follows: bool = True
    ) -> Decision:
        memory = state if isinstance(state, Hysteresis) else Hysteresis()
        misses_arrive = window.misses_per_s > 0 or window.large.queue_depth > 0
        low, high = fleet.large_bounds(misses_arrive)
        options = [self._score(window, current, fleet, n, degrade=False) for n in range(low, high + 1)]
        best = self._pick(options)
        if best.prediction.over_slo_share > self.degrade_above:
            degraded = self._pick([self._score(window, current, fleet, n, degrade=True) for n in range(low, high + 1)])
            if self._serves_better(degraded.prediction, best.prediction):
                best = degraded
        here = min(high, max(low, current.large))
        stay = self._score(window, current, fleet, here, degrade=best.degrade)
        out_of_bounds = here != current.large or fleet.split(here) != current
        gain = stay.score - best.score
        failing = stay.prediction.over_slo_share > self.degrade_above
        urgent = (
            out_of_bounds
            or (failing and gain > self.margin)
            or stay.prediction.over_slo_share - best.prediction.over_slo_share > self.urgent_gain
        )
        load = self._describe_load(window)
        if not out_of_bounds and (best.large == here or gain <= self.margin):
            kept = stay if best.large != here else best
            why = f"keep {fleet.split(here)}: {self._describe(kept)}"
            if best.large != here:
                why += f"; {fleet.split(best.large)} would gain only {gain:.3f} (margin {self.margin})"
            return self._decision(fleet.split(here), f"{why}; {load}", kept, Hysteresis())
        confirmed = memory.pending_large == best.large and memory.pending_windows + 1 >= self.confirm_windows
        target = fleet.split(best.large)
        if not (urgent or confirmed):
            pending = Hysteresis(best.large, memory.pending_windows + 1 if memory.pending_large == best.large else 1)
            why = (
                f"keep {current} for now: {target} looks better by {gain:.3f} "
                f"({self._describe(stay)} -> {self._describe(best)}), waiting for window "
                f"{pending.pending_windows + 1} of {self.confirm_windows} to confirm"
            )
            return self._decision(fleet.split(here), f"{why}; {load}", stay, pending)
        joined = window.large if target.large > current.large else window.small
        why = (
            f"move to {target} ({'urgent' if urgent else 'confirmed'}): {self._describe(stay)} -> "
            f"{self._describe(best)}, paying {model_loads(current, target)} model load(s) of "
            f"{fleet.load_seconds(joined.profile):.0f}s"
        )
        return self._decision(target, f"{why}; {load}", best, Hysteresis())

    def _decision(self, target: Allocation, reason: str, chosen: Scored, memory: Hysteresis) -> Decision:
        degrade = chosen.degrade and chosen.prediction.degraded_share > 0
        degrade_reason = ""
        if degrade:
            degrade_reason = (
                f"overload: the large pool cannot serve every miss within the SLO; about "
                f"{chosen.prediction.degraded_share:.0%} of requests go to the small pool as degraded misses"
            )
        return Decision(target, reason, degrade, degrade_reason, chosen.prediction, memory)

    @staticmethod
    def _serves_better(degraded: Prediction, plain: Prediction) -> bool:
        """Under overload quality yields to service: degrade when it puts fewer requests over
        the SLO, or as many (all of them, in a deep overload) but sooner."""
        if degraded.over_slo_share < plain.over_slo_share - 1e-6:
            return True
        return degraded.over_slo_share <= plain.over_slo_share + 1e-6 and degraded.mean_latency_s < plain.mean_latency_s

    def _pick(self, options: list[Scored]) -> Scored:
        lowest = min(o.score for o in options)
        return max((o for o in options if o.score <= lowest + self.tie), key=lambda o: o.large)

    def _score(self, window: Window, current: Allocation, fleet: Fleet, large: int, *, degrade: bool) -> Scored:
        target = fleet.split(large)
        large_p, small_p = window.large.profile, window.small.profile
        kappa = window.kappa
        miss_s, hit_small_s = large_p.full_run_seconds, small_p.job_seconds(kappa)
        hit_large_s, degraded_s = large_p.job_seconds(kappa), small_p.full_run_seconds
        hit_cs2 = max(0.0, window.kappa_second_moment / kappa**2 - 1.0) if kappa > 0 else 0.0
        misses, hits = window.misses_per_s, window.worker_hits_per_s
        room = self.target_utilisation
        # Servers: every GPU takes `capacity` jobs at once (PoolProfile).
        large_servers, small_servers = target.large * large_p.capacity, target.small * small_p.capacity

        # Misses the large pool cannot take go to the small pool, as far as it has room after
        # the hits (only when degrading; the router degrades only what the small pool can serve).
        small_room = max(0.0, room * small_servers - hits * hit_small_s) / degraded_s
        degraded = min(max(0.0, misses - room * large_servers / miss_s), small_room) if degrade else 0.0
        large_backlog, small_backlog = float(window.large.queue_depth), float(window.small.queue_depth)
        moved = 0.0
        if degrade:  # idle small workers take queued misses the large pool would not reach in time
            reachable = large_servers * max(0.0, fleet.slo_seconds - miss_s) / miss_s
            moved = max(0.0, large_backlog - reachable)
            large_backlog, small_backlog = large_backlog - moved, small_backlog + moved
        served_misses = misses - degraded
        # Hits beyond the small pool's room overflow onto idle large GPUs (MoDM's rule).
        hit_room = room * small_servers / hit_small_s - degraded * degraded_s / hit_small_s
        large_spare = max(0.0, room * large_servers - served_misses * miss_s) / hit_large_s
        overflow = min(max(0.0, hits - max(0.0, hit_room)), large_spare)

        large_streams = [Stream(served_misses, miss_s), Stream(overflow, hit_large_s, hit_cs2)]
        small_streams = [Stream(hits - overflow, hit_small_s, hit_cs2), Stream(degraded, degraded_s)]
        large_f = self._pool(large_streams, window.large, target.large, large_backlog, fleet)
        small_f = self._pool(small_streams, window.small, target.small, small_backlog, fleet)

        rates = [s.per_s for s in large_streams + small_streams]
        total = sum(rates)
        responses = large_f.mean_response_s + small_f.mean_response_s
        overs = large_f.over_slo_share + small_f.over_slo_share
        if total > 0:
            mean = sum(r * x for r, x in zip(rates, responses, strict=True)) / total
            over = sum(r * x for r, x in zip(rates, overs, strict=True)) / total
        else:
            mean, over = 0.0, 0.0
        # Of the requests the horizon serves (its arrivals and the queues already waiting), those
        # degraded: queued misses moved to the small pool count too, so a split that relies on
        # moving them pays for it and, when chosen, tells the router to degrade.
        serves = total * self.horizon_s + window.large.queue_depth + window.small.queue_depth
        degraded_share = (degraded * self.horizon_s + moved) / serves if serves > 0 else 0.0
        prediction = Prediction(large_f.utilisation, small_f.utilisation, mean, over, degraded_share)
        latency = min(mean / fleet.slo_seconds, self.latency_cap)
        score = over + self.latency_weight * latency + self.degraded_weight * degraded_share
        return Scored(large, degrade, prediction, score)

    def _pool(self, streams: list[Stream], pool: PoolState, target: int, backlog: float, fleet: Fleet) -> PoolForecast:
        """A pool keeps its ready GPUs up to the target; any more join after its model's load
        (GPUs already loading are assumed to need as long), together or, where the scaler moves
        one at a time, one load after another."""
        slots = pool.profile.capacity
        joining = max(0, target - pool.ready)
        load_s = fleet.load_seconds(pool.profile)
        serial = fleet.moves_one_at_a_time and joining > 1
        return forecast(
            streams,
            servers_now=min(pool.ready, target) * slots,
            servers_later=target * slots,
            join_after_s=load_s if joining else 0.0,
            joins=joining if serial else 1,
            join_every_s=load_s if serial else 0.0,
            backlog=backlog,
            horizon_s=self.horizon_s,
            slo_s=fleet.slo_seconds,
        )

    @staticmethod
    def _describe(scored: Scored) -> str:
        p = scored.prediction
        return (
            f"predicted {p.over_slo_share:.0%} over the SLO, mean {p.mean_latency_s:.0f}s, "
            f"utilisation {p.large_utilisation:.2f} large / {p.small_utilisation:.2f} small"
        )

    @staticmethod
    def _describe_load(window: Window) -> str:
        return (
            f"load {window.request_rate_per_min:.1f} req/min, hit rate {window.hit_rate:.2f}, "
            f"kappa {window.kappa:.2f}, queued {window.large.queue_depth} large / {window.small.queue_depth} small"
        )


@dataclass(frozen=True)
class AllLargePolicy:
    """Every GPU on the large model: the baseline MoDM is measured against."""

    @property
    def name(self) -> str:
        return "all-large"

    def initial_state(self) -> None:
        return None

    def decide(
        self, window: Window, current: Allocation, fleet: Fleet, state: object, *, scaler_follows: bool = True
    ) -> Decision:
        target = fleet.split(fleet.large_bounds(misses_arrive=True)[1])
        return Decision(target, f"all-large: {target}, the most large GPUs the bounds allow")


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (SloAwarePolicy(), ModmPolicy(Variant.QUALITY_FIRST), ModmPolicy(Variant.PROPORTIONAL), AllLargePolicy())
}
DEFAULT_POLICY = "slo-aware"


def policy_named(name: str) -> Policy:
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}") from None
