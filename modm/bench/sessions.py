"""Arrivals from a production request trace: per-user sessions, the window of the trace a
benchmark replays, and the time compression that replays it at the benchmark's rate.

The source is the Alibaba GenTD26 `lora_request_trace.csv` (`gmt_create`, `groupId`,
`num_inference_steps`, `num_images_per_prompt`, ...; no prompt text). It states no licence, so
traces carrying its times are built at run time into a given path and never committed.

- A session is one user's (`groupId`'s) consecutive requests, each within `gap_s` of the last.
- A window starts `start_day` days into the trace and spans `days` (default: just long enough to
  hold rate x duration requests). When it holds more, whole sessions are kept, in a seeded random
  order, until there are enough: thinning users, not requests, keeps each session's shape.
- The window is compressed by span / duration, so its diurnal load, bursts and sessions keep
  their shape at the target mean rate.
"""

from __future__ import annotations

import csv
import math
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

DAY_S = 86400.0
HOUR_S = 3600.0


@dataclass(frozen=True)
class Arrival:
    t: float  # seconds, in the trace's own (anonymised) clock
    user: str
    steps: int | None = None
    images: int | None = None


def read_arrivals(path: Path) -> list[Arrival]:
    """The trace's requests in time order (ties keep file order)."""
    arrivals = []
    with path.open(encoding="utf-8", newline="") as file:
        for number, row in enumerate(csv.DictReader(file), 1):
            try:
                when = datetime.strptime(row["gmt_create"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                steps, images = _count(row["num_inference_steps"]), _count(row["num_images_per_prompt"])
                arrivals.append(Arrival(when.timestamp(), row["groupId"], steps, images))
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{path}: row {number}: {error!r}") from error
    return sorted(arrivals, key=lambda a: a.t)


def _count(text: str) -> int | None:
    """`30.0` -> 30; empty (the trace leaves some requests' parameters blank) -> None."""
    return int(float(text)) if text.strip() else None


def sessions(arrivals: Sequence[Arrival], gap_s: float) -> list[list[int]]:
    """Indices of each session's requests (arrivals in time order), sessions in the order of their
    first request."""
    open_sessions: dict[str, list[int]] = {}
    found: list[list[int]] = []
    for i, arrival in enumerate(arrivals):
        current = open_sessions.get(arrival.user)
        if current is None or arrival.t - arrivals[current[-1]].t > gap_s:
            current = open_sessions[arrival.user] = []
            found.append(current)
        current.append(i)
    return found


@dataclass(frozen=True)
class Window:
    """Which part of the trace to replay, and at what mean rate over what duration."""

    rate: float  # target mean requests/s
    duration_s: float  # target length of the replay
    start_day: float = 0.0  # days after the trace's first request
    days: float | None = None  # None: just long enough to hold rate x duration requests
    gap_s: float = 1800.0  # a user's pause that ends a session
    seed: int = 0  # which sessions a thinned window keeps

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.duration_s <= 0 or self.gap_s <= 0:
            raise ValueError("rate, duration and session gap must be positive")
        if self.start_day < 0 or (self.days is not None and self.days <= 0):
            raise ValueError("start_day must be at least 0 and days positive")
        if self.requests < 1:
            raise ValueError("rate x duration must be at least one request")

    @property
    def requests(self) -> int:
        return round(self.rate * self.duration_s)


@dataclass(frozen=True)
class Selection:
    arrivals: list[Arrival]  # kept, in time order
    session: list[int]  # each kept arrival's session, numbered in order of first request
    origin: float  # the window's start, in the trace's clock
    span_s: float  # the window's length, in the trace's clock


def select(arrivals: Sequence[Arrival], window: Window) -> Selection:
    """The window's requests, thinned by whole sessions to about rate x duration."""
    if not arrivals:
        raise ValueError("the arrival trace is empty")
    origin = arrivals[0].t + window.start_day * DAY_S
    inside = [a for a in arrivals if a.t >= origin]
    need = window.requests
    if window.days is None:
        inside = inside[:need]
        span = inside[-1].t - origin if inside else 0.0
    else:
        span = window.days * DAY_S
        inside = [a for a in inside if a.t < origin + span]
    if len(inside) < need:
        raise ValueError(
            f"the window holds {len(inside)} requests, fewer than the {need} that {window.rate}/s over "
            f"{window.duration_s} s needs: widen it (days), start it earlier (start_day) or lower the rate"
        )
    if span <= 0:
        raise ValueError("the window's requests arrive all at once: ask for more requests")
    groups = sessions(inside, window.gap_s)
    if len(inside) > need:
        chosen, total = [], 0
        for g in random.Random(window.seed).sample(range(len(groups)), len(groups)):
            if total >= need:
                break
            chosen.append(g)
            total += len(groups[g])
        groups = [groups[g] for g in sorted(chosen)]
    session_of = {i: number for number, group in enumerate(groups) for i in group}
    kept = sorted(session_of)
    return Selection([inside[i] for i in kept], [session_of[i] for i in kept], origin, span)


def session_stats(session: Sequence[int]) -> dict[str, float]:
    """How long sessions are (in requests), and the share of requests in sessions of 5 or more."""
    lengths = sorted(Counter(session).values())
    return {
        "sessions": len(lengths),
        "mean": round(statistics.fmean(lengths), 2),
        "median": statistics.median(lengths),
        "p90": lengths[math.ceil(0.9 * len(lengths)) - 1],
        "max": lengths[-1],
        "share_in_5_plus": round(sum(n for n in lengths if n >= 5) / len(session), 4),
    }


def load_shape(times: Sequence[float], origin: float, span_s: float) -> dict[str, float]:
    """Hourly load over the window (trace clock): the busiest hour of day, averaged over the
    window's days, over the mean hour (diurnal), and the busiest single hour over the mean (bursts)."""
    first = math.floor(origin / HOUR_S)
    hours = max(1, math.ceil((origin + span_s) / HOUR_S) - first)
    counts = [0] * hours
    for t in times:
        counts[min(math.floor(t / HOUR_S) - first, hours - 1)] += 1
    by_hour_of_day: defaultdict[int, list[int]] = defaultdict(list)
    for hour, count in enumerate(counts):
        by_hour_of_day[(first + hour) % 24].append(count)
    mean = statistics.fmean(counts)
    peak_of_day = max(statistics.fmean(c) for c in by_hour_of_day.values())
    return {
        "hours": hours,
        "diurnal_peak_to_mean": round(peak_of_day / mean, 3),
        "busiest_hour_to_mean": round(max(counts) / mean, 3),
    }
