"""The best speedup a cache can give over the large model alone (the issue's bound).

A miss costs the large model's full schedule; an exact repeat costs no step; an img2img hit
costs the share of its steps it still runs (`kappa`, `modm.reuse`) at the small model's price
per step, `c = small seconds per step / large seconds per step`. With `h` the share of requests
served from the cache (hits and exact repeats) and `h_i` the img2img hits among them, the
mixture costs `(1 - h) + h_i * kappa * c` of the large model's time and

    speedup <= 1 / ((1 - h) + h_i * kappa * c)

Real serving also pays fixed costs per image (text encoders, VAE, cache lookup and fetch) and
the small model may run a different number of steps than the large one, so a measured speedup
sits below this bound; the report prints their ratio.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from modm import reuse
from modm.bench.records import RequestRecord, StatsSample


def speedup_bound(hit_rate: float, img2img_rate: float, kappa: float, cost_ratio: float) -> float:
    if not 0.0 <= img2img_rate <= hit_rate <= 1.0:
        raise ValueError("need 0 <= img2img_rate <= hit_rate <= 1")
    if kappa < 0 or cost_ratio < 0:
        raise ValueError("kappa and cost_ratio must not be negative")
    cost = (1.0 - hit_rate) + img2img_rate * kappa * cost_ratio
    return float("inf") if cost == 0 else 1.0 / cost


def kappa_of(records: Iterable[RequestRecord]) -> float:
    """Mean share of its steps an img2img hit still runs (exact repeats are not hits); 0 without one."""
    hit_kappa = reuse.kappa(
        Counter((r.skipped_steps, r.total_steps) for r in records if r.outcome == "hit" and r.total_steps)
    )
    return 0.0 if hit_kappa is None else hit_kappa


def _share(records: Sequence[RequestRecord], counted: Callable[[RequestRecord], bool]) -> float:
    served = [r for r in records if r.ok]
    return sum(counted(r) for r in served) / len(served) if served else 0.0


def hit_rate_of(records: Sequence[RequestRecord]) -> float:
    """Share of served requests reused from the cache: img2img hits and exact repeats."""
    return _share(records, lambda r: r.reused)


def img2img_rate_of(records: Sequence[RequestRecord]) -> float:
    """Share of served requests that were img2img hits."""
    return _share(records, lambda r: r.outcome == "hit")


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
    img2img_rate: float
    kappa: float
    cost_ratio: float
    speedup: float

    @classmethod
    def of(cls, records: Sequence[RequestRecord], cost_ratio: float) -> Bound:
        h, h_i, hit_kappa = hit_rate_of(records), img2img_rate_of(records), kappa_of(records)
        return cls(h, h_i, hit_kappa, cost_ratio, speedup_bound(h, h_i, hit_kappa, cost_ratio))
