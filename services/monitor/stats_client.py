"""Reads `modm.v1.Router/Stats` from every router and folds them into one `Window`.

Routers are found like the router finds workers (`discovery.split_target` / `resolve`): a static
`host:port`, or `dns:name:port` re-resolved every round (a headless Service gives every router
pod). Every call has a deadline. A router that does not answer, or a name that does not resolve,
is listed in `StatsReading.unreachable` with why, never silently left out of the totals.

Aggregation (`aggregate`, pure): each router sees its own share of the traffic, so rates,
router queues and in-flight requests add up; the hit rate is weighted by each router's served
requests and the k distribution by its hits. Every router sees the same workers, so a pool's
ready workers are the union of the healthy worker addresses, not a sum; how long a job takes in
a pool comes from its workers' profiles, measured service times, steps, batch capacity and load
time (`pool_profile`).

The same client tells every router the decision's degrade override (`set_degrade`), found the
same way and under the same deadline; routers that do not take it are reported likewise. With
`token_file`, every call carries its bearer token (routers with `tokens_file` refuse others).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc import aio

from modm.services.monitor.observations import TOTAL_STEPS, PoolProfile, PoolState, Window
from modm.services.router.auth import operator_token, parse_tokens
from modm.services.router.discovery import format_address, resolve, split_target
from modm.tls import ClientTls, open_channel
from modm.v1 import router_pb2, router_pb2_grpc

log = logging.getLogger(__name__)

POOLS = ("large", "small")


@dataclass(frozen=True)
class StatsReading:
    """One round: the Stats of every router that answered, and those that did not (address -> why)."""

    stats: dict[str, router_pb2.RouterStats] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)


def _served(stats: router_pb2.RouterStats) -> float:
    if stats.outcomes:
        return float(sum(n for outcome, n in stats.outcomes.items() if outcome != "failed"))
    return float(stats.requests)


def _hits(stats: router_pb2.RouterStats) -> float:
    if stats.outcomes:
        return float(stats.outcomes.get("hit", 0))
    return _served(stats) * max(0.0, stats.hit_rate - stats.exact_repeat_rate)


def _typical(values: Sequence[int]) -> int | None:
    """The middle of the values reported (0: not reported), or None."""
    reported = sorted(v for v in values if v > 0)
    return statistics.median_low(reported) if reported else None


def pool_profile(workers: Sequence[router_pb2.WorkerStats], fallback: PoolProfile) -> PoolProfile:
    """A pool's `PoolProfile` from its workers' Stats.

    Each worker's warm-up profile (overhead + steps x seconds per step, batch 1) gives the shape
    of a job's time; what the router measured over the window sets its level: the requests each
    worker completed took `mean_service_seconds` for `mean_service_seconds / mean_seconds_per_step`
    steps on average, against what the profile says those steps take, and the profile is scaled
    by that ratio (weighted by completions), so batches or a shared GPU that slow the jobs down
    are priced in. With no profile, the measured seconds per step (overhead folded in) stand
    alone. Steps, capacity and load time are what the workers report, else the fallback's.
    """
    profiled = [w for w in workers if w.profiled_seconds_per_step > 0]
    measured = [w for w in workers if w.completed and w.mean_seconds_per_step > 0 and w.mean_service_seconds > 0]
    jobs = sum(w.completed for w in measured)
    took = sum(w.completed * w.mean_service_seconds for w in measured)
    steps_run = sum(w.completed * w.mean_service_seconds / w.mean_seconds_per_step for w in measured)
    if profiled:
        sps = statistics.fmean(w.profiled_seconds_per_step for w in profiled)
        overhead = statistics.fmean(max(0.0, w.profiled_overhead_seconds) for w in profiled)
        if measured:
            scale = took / (jobs * overhead + steps_run * sps)
            sps, overhead = sps * scale, overhead * scale
    elif measured:
        sps, overhead = took / steps_run, 0.0
    else:
        sps, overhead = fallback.seconds_per_step, fallback.overhead_seconds
    steps, capacity = _typical([w.default_steps for w in workers]), _typical([w.capacity for w in workers])
    loads = [w.load_seconds for w in workers if w.load_seconds > 0]
    return PoolProfile(
        seconds_per_step=sps,
        overhead_seconds=overhead,
        steps=steps or fallback.steps,
        capacity=capacity or fallback.capacity,
        load_seconds=statistics.fmean(loads) if loads else fallback.load_seconds,
    )


def aggregate(
    stats: Sequence[router_pb2.RouterStats],
    large_fallback: PoolProfile,
    small_fallback: PoolProfile,
    total_steps: int = TOTAL_STEPS,
) -> Window:
    """One Window from several routers' Stats (see the module docstring for how each field adds up)."""
    if not stats:
        raise ValueError("no router answered: nothing to aggregate")
    served = [_served(s) for s in stats]
    all_served = sum(served)
    hits = [_hits(s) for s in stats]
    all_hits = sum(hits)

    def weighted(values: Sequence[float], weights: Sequence[float]) -> float:
        total = sum(weights)
        return sum(v * w for v, w in zip(values, weights, strict=True)) / total if total else 0.0

    k_distribution: dict[int, float] = {}
    k_weights = hits if all_hits else [1.0 if s.k_distribution else 0.0 for s in stats]
    k_total = sum(k_weights)
    for s, w in zip(stats, k_weights, strict=True):
        for k, p in s.k_distribution.items():
            k_distribution[int(k)] = k_distribution.get(int(k), 0.0) + p * w / k_total
    hit_rate = min(1.0, weighted([s.hit_rate for s in stats], served))
    repeat_rate = min(hit_rate, weighted([s.exact_repeat_rate for s in stats], served))

    pools: dict[str, PoolState] = {}
    for pool, fallback in (("large", large_fallback), ("small", small_fallback)):
        workers = [w for s in stats for w in s.workers if w.pool == pool]
        ready = {w.address for w in workers if w.healthy}
        pool_stats = [p for s in stats for p in s.pools if p.pool == pool]
        # routers that list no workers still report how many they reach
        reported = len(ready) if workers else max((p.workers for p in pool_stats), default=0)
        pools[pool] = PoolState(
            ready=reported,
            profile=pool_profile(workers, fallback),
            queue_depth=sum(p.queue_depth for p in pool_stats),
            in_flight=sum(p.in_flight for p in pool_stats),
        )
    return Window(
        seconds=max((s.window_seconds for s in stats), default=0.0) or 1.0,
        request_rate_per_min=sum(max(0.0, s.request_rate_per_min) for s in stats),
        hit_rate=hit_rate if all_served else 0.0,
        k_distribution=k_distribution,
        large=pools["large"],
        small=pools["small"],
        exact_repeat_rate=repeat_rate if all_served else 0.0,
        total_steps=total_steps,
    )


class StatsClient:
    """Reads every router's Stats, each call under `timeout_s`; keeps one channel per address."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        timeout_s: float,
        resolver: Callable[[str, int], Awaitable[list[str]]] = resolve,
        token_file: Path | None = None,
        tls: ClientTls | None = None,
        source: str = "",
    ) -> None:
        if not targets:
            raise ValueError("the monitor needs at least one router address")
        self.targets = list(targets)
        self.timeout_s = timeout_s
        self.token_file = token_file
        self.tls = tls
        self.source = source
        self._resolver = resolver
        self._channels: dict[str, aio.Channel] = {}

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        """A bearer token from the file (re-read each call so a rotated Secret is picked up): its
        operator token (`<token> *`, which SetDegrade needs), else any token (Stats only)."""
        if self.token_file is None:
            return ()
        text = self.token_file.read_text()  # the router's own format: comments skipped
        token = operator_token(text) or min(parse_tokens(text), default="")
        return (("authorization", f"Bearer {token}"),)

    async def _addresses(self, unreachable: dict[str, str]) -> list[str]:
        found: list[str] = []
        for target in self.targets:
            is_dns, host, port = split_target(target)
            if not is_dns:
                found.append(format_address(host, port))
                continue
            try:
                addresses = await asyncio.wait_for(self._resolver(host, port), self.timeout_s)
            except (OSError, TimeoutError) as error:
                unreachable[target] = f"cannot resolve: {error or type(error).__name__}"
                continue
            if not addresses:
                unreachable[target] = "resolves to no address"
            found.extend(a for a in addresses if a not in found)
        return found

    def _stub(self, address: str) -> router_pb2_grpc.RouterStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = open_channel(aio, address, [], self.tls)
        return router_pb2_grpc.RouterStub(channel)

    async def _one(self, address: str) -> router_pb2.RouterStats:
        stub = self._stub(address)
        return await stub.Stats(router_pb2.RouterStatsRequest(), timeout=self.timeout_s, metadata=self._metadata())

    async def _every(
        self, call: Callable[[str], Awaitable[object]], kind: type
    ) -> tuple[dict[str, object], dict[str, str]]:
        """`call` on every router at once: what answered, and what did not (address -> why)."""
        unreachable: dict[str, str] = {}
        addresses = await self._addresses(unreachable)
        for gone in set(self._channels) - set(addresses):
            with contextlib.suppress(Exception):
                await self._channels.pop(gone).close()
        results = await asyncio.gather(*(call(a) for a in addresses), return_exceptions=True)
        answers: dict[str, object] = {}
        for address, result in zip(addresses, results, strict=True):
            if isinstance(result, kind):
                answers[address] = result
            elif isinstance(result, aio.AioRpcError):
                unreachable[address] = f"{result.code().name}: {result.details()}"
            elif isinstance(result, grpc.RpcError | OSError):
                unreachable[address] = str(result) or type(result).__name__
            elif isinstance(result, BaseException):
                raise result
        return answers, unreachable

    async def read(self) -> StatsReading:
        answers, unreachable = await self._every(self._one, router_pb2.RouterStats)
        stats = {address: reply for address, reply in answers.items() if isinstance(reply, router_pb2.RouterStats)}
        for address, why in unreachable.items():
            log.warning("router unreachable", extra={"router": address, "error": why})
        return StatsReading(stats, unreachable)

    async def set_degrade(self, degrade: bool, reason: str, ttl_s: float) -> dict[str, str]:
        """Tells every router the override (set or clear); returns the routers that did not take it."""
        request = router_pb2.SetDegradeRequest(
            degrade_misses=degrade, reason=reason, ttl_seconds=ttl_s, source=self.source
        )

        async def one(address: str) -> router_pb2.DegradeState:
            return await self._stub(address).SetDegrade(request, timeout=self.timeout_s, metadata=self._metadata())

        _, unreachable = await self._every(one, router_pb2.DegradeState)
        for address, why in unreachable.items():
            log.warning("router did not take the degrade override", extra={"router": address, "error": why})
        return unreachable

    async def close(self) -> None:
        for channel in self._channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
        self._channels.clear()
