"""The best speedup a cache can give over the large model alone (the issue's bound).

A miss costs the large model's full schedule; a reuse costs the share `1 - k/total` of the
steps a hit still runs (`kappa`, averaged over reuses; an exact repeat runs none), at the small
model's price per step, `c = small seconds per step / large seconds per step`. So, per request,
the mixture costs `(1 - h) + h * kappa * c` of the large model's time and

    speedup <= 1 / ((1 - h) + h * kappa * c)

Real serving also pays fixed costs per image (text encoders, VAE, cache lookup and fetch) and
the small model may run a different number of steps than the large one, so a measured speedup
sits below this bound; the report prints their ratio.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from modm.bench.records import RequestRecord, StatsSample


def speedup_bound(hit_rate: float, kappa: float, cost_ratio: float) -> float:
    if not 0.0 <= hit_rate <= 1.0:
        raise ValueError("hit_rate must be in [0, 1]")
    if kappa < 0 or cost_ratio < 0:
        raise ValueError("kappa and cost_ratio must not be negative")
    cost = (1.0 - hit_rate) + hit_rate * kappa * cost_ratio
    return float("inf") if cost == 0 else 1.0 / cost


def kappa_of(records: Iterable[RequestRecord]) -> float:
    """Mean share of steps a reuse still runs: 1 - k/total for hits, 0 for exact repeats."""
    shares = []
    for r in records:
        if r.outcome == "exact_repeat":
            shares.append(0.0)
        elif r.outcome == "hit" and r.total_steps > 0:
            shares.append(1.0 - r.skipped_steps / r.total_steps)
    return statistics.fmean(shares) if shares else 0.0


def hit_rate_of(records: Sequence[RequestRecord]) -> float:
    served = [r for r in records if r.ok]
    return sum(r.reused for r in served) / len(served) if served else 0.0


# A worker whose warm-up fit failed (its long run timed faster than its short one, as under heavy
# CPU contention) reports 1e-6 s/step; such a profile says nothing about c.
MIN_SECONDS_PER_STEP = 1e-5


def cost_ratio_of(samples: Sequence[StatsSample], field: str = "profiled_seconds_per_step") -> float | None:
    """c = small / large seconds per step, each pool's mean over the Stats samples that have it.

    `profiled_seconds_per_step` is what each worker measured at warm-up (the issue's c);
    `mean_seconds_per_step` is what the router measured while serving the run.
    """
    per_pool: dict[str, list[float]] = {}
    for sample in samples:
        for worker in sample.workers:
            seconds = worker.get(field) or 0.0
            if seconds > MIN_SECONDS_PER_STEP:
                per_pool.setdefault(str(worker.get("pool")), []).append(float(seconds))
    if not per_pool.get("large") or not per_pool.get("small"):
        return None
    return statistics.fmean(per_pool["small"]) / statistics.fmean(per_pool["large"])


@dataclass(frozen=True)
class Bound:
    hit_rate: float
    kappa: float
    cost_ratio: float
    speedup: float

    @classmethod
    def of(cls, records: Sequence[RequestRecord], cost_ratio: float) -> Bound:
        h, kappa = hit_rate_of(records), kappa_of(records)
        return cls(h, kappa, cost_ratio, speedup_bound(h, kappa, cost_ratio))
