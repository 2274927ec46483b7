"""Queueing estimates for one pool over a short horizon: the backlog already waiting drains (or
grows) as a fluid, and the random part of the wait is M/G/c (Erlang C with the Allen-Cunneen
correction for the service-time variability). Pure arithmetic, cheap enough to evaluate every
split of a 64-GPU fleet each window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

HORIZON_SAMPLES = 24


def erlang_c(servers: int, offered: float) -> float:
    """Probability that an arrival waits in M/M/c with `offered` = arrival rate x service time."""
    if offered <= 0:
        return 0.0
    if servers <= 0 or offered >= servers:
        return 1.0
    blocking = 1.0  # Erlang B by its stable recurrence
    for k in range(1, servers + 1):
        blocking = offered * blocking / (k + offered * blocking)
    rho = offered / servers
    return blocking / (1.0 - rho + rho * blocking)


@dataclass(frozen=True)
class Stream:
    """A class of jobs sent to a pool: arrivals per second, mean service seconds, and the squared
    coefficient of variation of the service time (0: every job takes the same time)."""

    per_s: float
    service_s: float
    cs2: float = 0.0


@dataclass(frozen=True)
class PoolForecast:
    utilisation: float  # offered load / servers once every GPU has joined (inf with none)
    mean_response_s: tuple[float, ...]  # per stream: wait + service, averaged over the horizon
    over_slo_share: tuple[float, ...]  # per stream: share of arrivals whose response exceeds the SLO


def _mixture(streams: Sequence[Stream]) -> tuple[float, float, float]:
    rate = sum(s.per_s for s in streams)
    if rate <= 0:
        return 0.0, 0.0, 0.0
    mean = sum(s.per_s * s.service_s for s in streams) / rate
    second = sum(s.per_s * s.service_s**2 * (1.0 + s.cs2) for s in streams) / rate
    return rate, mean, max(0.0, second / mean**2 - 1.0) if mean > 0 else 0.0


def _servers_at(t: float, now: int, later: int, after_s: float, joins: int, every_s: float) -> int:
    if t < after_s:
        return now
    if joins <= 1 or every_s <= 0:
        return later
    joined = min(joins, 1 + int((t - after_s) // every_s))
    return now + (later - now) * joined // joins


def forecast(
    streams: Sequence[Stream],
    *,
    servers_now: int,
    servers_later: int,
    join_after_s: float,
    backlog: float,
    horizon_s: float,
    slo_s: float,
    joins: int = 1,
    join_every_s: float = 0.0,
) -> PoolForecast:
    """Predict the next `horizon_s` of a pool that has `servers_now` GPUs serving, gains (or has)
    `servers_later` after `join_after_s` (GPUs loading a model), and `backlog` jobs queued. With
    `joins` > 1 the new servers come in that many equal steps, `join_every_s` apart (GPUs moved
    one after another).

    An unstable pool (utilisation >= 1) counts every arrival as over the SLO and its stationary
    wait as the whole horizon, so more capacity always looks better.
    """
    rate, mean_s, cs2 = _mixture(streams)
    if mean_s <= 0:  # no arrivals: nothing to predict
        return PoolForecast(0.0, tuple(s.service_s for s in streams), tuple(0.0 for _ in streams))
    offered = rate * mean_s
    utilisation = offered / servers_later if servers_later > 0 else math.inf
    dt = horizon_s / HORIZON_SAMPLES
    queued = backlog
    waits = [0.0] * len(streams)
    over = [0.0] * len(streams)
    for i in range(HORIZON_SAMPLES):
        t = (i + 0.5) * dt
        servers = _servers_at(t, servers_now, servers_later, join_after_s, joins, join_every_s)
        if servers <= 0:
            backlog_wait, stationary, tail_c, decay = horizon_s, horizon_s, 1.0, 0.0
        else:
            backlog_wait = queued * mean_s / servers
            if offered < servers:
                tail_c = erlang_c(servers, offered)
                decay = (servers - offered) / mean_s * 2.0 / (1.0 + cs2)
                stationary = min(horizon_s, tail_c / decay) if tail_c > 0 else 0.0
            else:
                tail_c, decay, stationary = 1.0, 0.0, horizon_s
        for j, stream in enumerate(streams):
            waits[j] += backlog_wait + stationary
            slack = slo_s - stream.service_s - backlog_wait
            over[j] += 1.0 if slack < 0 else tail_c * math.exp(-decay * slack)
        capacity_per_s = servers / mean_s if servers > 0 else 0.0
        queued = max(0.0, queued + (rate - capacity_per_s) * dt)
    return PoolForecast(
        utilisation,
        tuple(s.service_s + w / HORIZON_SAMPLES for s, w in zip(streams, waits, strict=True)),
        tuple(min(1.0, o / HORIZON_SAMPLES) for o in over),
    )
