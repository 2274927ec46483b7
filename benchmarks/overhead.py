"""The serving system's own overhead (issue 16, benchmark 3): what the router and the cache add to a
request, next to the device time they serve, and how many requests one router replica sustains.

Everything runs as the real processes (router, cache with MiniLM, Milvus Lite and its embedded S3,
workers) on loopback, with emulated devices at time scale 0: a worker answers at once with its flat
image, so what is measured is the system alone. The cache is seeded through its own Insert with
photo-like 1024x1024 PNGs (~1.6 MB, a real image's weight where the emulated worker's flat colour is
a few KB), under the parameters the router resolves for a request that names none, so exact repeats
and hits fetch, move and re-encode real-sized images.

1. Overhead at a 64-GPU fleet's rate: a DiffusionDB trace, the cache seeded with its first
   requests' prompts; the next requests (closed loop, unmeasured) warm it further and give the mix
   of outcomes, from which the rate follows: the GPUs over the mean device seconds of that mix (a
   miss the large profile's image, a hit the small profile's img2img at its k, an exact repeat
   nothing), the most such a fleet could serve. The requests after that are replayed in an open
   loop (Poisson) at that rate. Per request, the router and the cache's time is the router's total
   without the queue and the worker call; it is set against the device time of a hit at the median
   k and of a miss. The router's stage histograms are read before and after, as a cross-check.
2. Saturation of one router: closed loops of C clients from this process (C doubling until the
   throughput stops growing by 5%) over exact repeats of cached images, as cached (PNG) and in a
   format the router must re-encode (JPEG), and over hits (prompts the cache answers as hits, found
   by asking the router with cache policy no_store first). Every process's CPU seconds per request
   (psutil) say which one saturates first.

Each run records /proc/loadavg before and after (a 1-minute value over 3 on this 2-core machine
flags a shared machine). Writes report.json and report.md to --out.

    .venv/bin/python benchmarks/overhead.py    # 6 to 8 minutes; writes docs/bench/scale/overhead

docs/bench/scale/overhead/README.md gives the method in full and the second run (torch's threads).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modm.bench.records import RequestRecord, Run  # noqa: E402
from modm.bench.report import percentile  # noqa: E402
from modm.bench.traces import TraceRequest, read_trace  # noqa: E402
from modm.reuse import remaining_share  # noqa: E402
from modm.services.worker.device_profile import DeviceProfile, load_profile  # noqa: E402

LOAD_FLAG = 3.0  # a 1-minute load average above this shared the machine's 2 cores with others
GROWTH = 1.05  # a sweep goes on while each level beats the best before it by this factor
STAGE_METRIC = "modm_router_stage_seconds"
OUTCOMES = ("exact_repeat", "hit", "miss")
DEFAULT_OUT = ROOT / "docs/bench/scale/overhead"
DEFAULT_TRACE = ROOT / "benchmarks/traces/diffusiondb-5k.jsonl"
# The closed loops of the saturation runs: what each measures, and the requests' options.
SWEEPS: dict[str, tuple[str, dict[str, Any]]] = {
    "exact_png": ("Exact repeats, PNG as cached (no re-encode)", {}),
    "exact_jpeg": ("Exact repeats, JPEG (the router re-encodes the cached PNG)", {"output_format": "jpeg"}),
    "hits": ("Hits on zero-time devices (lookup, fetch, img2img call)", {}),
}


# --- what is computed from the records (unit-tested) ---------------------------------------


def read_loadavg(text: str | None = None) -> dict[str, Any]:
    """The 1-, 5- and 15-minute load averages, and whether the 1-minute one is over LOAD_FLAG."""
    text = Path("/proc/loadavg").read_text() if text is None else text
    one, five, fifteen = (float(value) for value in text.split()[:3])
    return {"1m": one, "5m": five, "15m": fifteen, "over_flag": one > LOAD_FLAG}


def system_seconds(record: RequestRecord) -> float:
    """The router's and the cache's time on a request: the router's total without the wait in its
    queue and the worker call (what is left is lookup, fetch, re-encoding, planning and gRPC)."""
    t = record.timings
    return max(0.0, t["total_seconds"] - t["queue_seconds"] - t["generate_seconds"])


def spread_ms(seconds: Sequence[float]) -> dict[str, float]:
    """n, mean, p50 and p99 of durations in seconds, in milliseconds (empty without any)."""
    if not seconds:
        return {}
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "mean": round(statistics.fmean(ms), 3),
        "p50": round(percentile(ms, 50), 3),
        "p99": round(percentile(ms, 99), 3),
    }


@dataclass(frozen=True)
class Fleet:
    """The GPUs the overhead is set against: device seconds from the two profiles, batch 1."""

    large: DeviceProfile
    small: DeviceProfile
    gpus: int

    def miss_seconds(self) -> float:
        overhead, per_step = self.large.call_seconds(1, self.large.width, self.large.height)
        return overhead + self.large.default_steps * per_step

    def hit_steps(self, skipped: int, total: int) -> int:
        """Steps the small model's img2img runs for a hit that skips `skipped` of `total`."""
        return self.small.spec.img2img_steps(self.small.default_steps, remaining_share(skipped, total))

    def hit_seconds(self, skipped: int, total: int) -> float:
        overhead, per_step = self.small.call_seconds(1, self.small.width, self.small.height)
        return overhead + self.hit_steps(skipped, total) * per_step

    def device_seconds(self, record: RequestRecord) -> float:
        if record.outcome == "miss":
            return self.miss_seconds()
        if record.outcome == "hit":
            return self.hit_seconds(record.skipped_steps, record.total_steps)
        return 0.0

    def rate(self, records: Sequence[RequestRecord]) -> float:
        """Requests/s the GPUs serve with this mix, every GPU busy and the split ideal."""
        served = [self.device_seconds(r) for r in records if r.ok]
        if not served or not any(served):
            raise ValueError("no answered request needed a GPU: no fleet rate")
        return self.gpus / statistics.fmean(served)

    def large_only_rate(self) -> float:
        return self.gpus / self.miss_seconds()


def median_k(records: Sequence[RequestRecord]) -> tuple[int, int] | None:
    """(k, total steps) of the median hit by k (the lower median: a k the table gives)."""
    hits = sorted((r.skipped_steps, r.total_steps) for r in records if r.ok and r.outcome == "hit")
    return hits[(len(hits) - 1) // 2] if hits else None


def overhead_summary(records: Sequence[RequestRecord], fleet: Fleet) -> dict[str, Any]:
    """The router and cache's time per request, by outcome and stage, against the device times."""
    ok = [r for r in records if r.ok]
    by_outcome = {o: [r for r in ok if r.outcome == o] for o in OUTCOMES}
    reused = by_outcome["exact_repeat"] + by_outcome["hit"]

    def stage(rows: Iterable[RequestRecord], key: str) -> dict[str, float]:
        return spread_ms([r.timings[key] for r in rows])

    system = spread_ms([system_seconds(r) for r in ok])
    k = median_k(ok)
    device = {"miss_s": round(fleet.miss_seconds(), 4)}
    if k is not None:
        device |= {
            "median_k": k[0],
            "total_steps": k[1],
            "hit_steps": fleet.hit_steps(*k),
            "hit_s": round(fleet.hit_seconds(*k), 4),
        }
    ratios = {}
    if system:
        for name in ("hit_s", "miss_s"):
            if name in device:
                seconds = device[name] * 1000
                ratios[f"p50_over_{name[:-2]}"] = round(system["p50"] / seconds, 5)
                ratios[f"p99_over_{name[:-2]}"] = round(system["p99"] / seconds, 5)
    return {
        "requests": len(records),
        "errors": len(records) - len(ok),
        "outcomes": dict(Counter(r.outcome for r in ok)),
        "system_ms": system,
        "system_ms_by_outcome": {o: spread_ms([system_seconds(r) for r in rows]) for o, rows in by_outcome.items()},
        "stages_ms": {
            "lookup": stage(ok, "lookup_seconds"),
            "embed": stage([r for r in ok if r.outcome != "exact_repeat"], "embed_seconds"),
            "search": stage([r for r in ok if r.outcome != "exact_repeat"], "search_seconds"),
            # An exact repeat answered from an identical request's generation (single-flight) fetches nothing.
            "fetch": stage([r for r in reused if r.timings["fetch_seconds"] > 0], "fetch_seconds"),
            "queue": stage(ok, "queue_seconds"),
            "worker_call_zero_time": stage(by_outcome["hit"] + by_outcome["miss"], "generate_seconds"),
        },
        "client_latency_ms": spread_ms([r.latency_s for r in ok]),
        "device": device,
        "system_over_device": ratios,
    }


def level_summary(
    records: Sequence[RequestRecord], concurrency: int, window: tuple[float, float], cpu_seconds: Mapping[str, float]
) -> dict[str, Any]:
    """One closed-loop level: what was answered inside the measured window (after the warm-up),
    its throughput, latencies, and each process's CPU per request and share of one core."""
    opens, closes = window
    length = closes - opens
    inside = [r for r in records if opens < r.done_s <= closes]
    ok = [r for r in inside if r.ok]
    per_request = {kind: round(s * 1000 / len(ok), 3) for kind, s in cpu_seconds.items()} if ok else {}
    return {
        "concurrency": concurrency,
        "window_s": round(length, 3),
        "answered": len(ok),
        "errors": dict(Counter(r.error for r in inside if not r.ok)),
        "throughput_rps": round(len(ok) / length, 2),
        "outcomes": dict(Counter(r.outcome for r in ok)),
        "latency_ms": spread_ms([r.latency_s for r in ok]),
        "system_ms": spread_ms([system_seconds(r) for r in ok]),
        "fetch_ms": spread_ms([r.timings["fetch_seconds"] for r in ok]),
        "cpu_ms_per_request": per_request,
        "cpu_share_of_one_core": {kind: round(s / length, 3) for kind, s in cpu_seconds.items()},
        "one_core_rps": {kind: round(1000 / ms, 1) for kind, ms in per_request.items() if ms > 0},
    }


def keep_sweeping(throughputs: Sequence[float]) -> bool:
    """True while the last level beat every level before it by GROWTH (the first always does)."""
    return len(throughputs) < 2 or throughputs[-1] >= GROWTH * max(throughputs[:-1])


def saturation(levels: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The best level, and the process that used the most CPU there (the first to fill a core)."""
    best = max(levels, key=lambda level: level["throughput_rps"])
    shares = {kind: share for kind, share in best["cpu_share_of_one_core"].items()}
    busiest = max(shares, key=lambda kind: shares[kind]) if shares else None
    return {
        "max_rps": best["throughput_rps"],
        "at_concurrency": best["concurrency"],
        "busiest_process": busiest,
        "busiest_share_of_one_core": shares.get(busiest) if busiest else None,
        "cores_used": round(sum(shares.values()), 3),
    }


def stage_histograms(text: str) -> dict[str, dict[str, Any]]:
    """The router's stage histograms from its Prometheus text: per stage its count, sum and
    cumulative bucket counts by upper bound."""
    from prometheus_client.parser import text_string_to_metric_families

    stages: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != STAGE_METRIC:
            continue
        for sample in family.samples:
            entry = stages.setdefault(sample.labels["stage"], {"count": 0.0, "sum": 0.0, "buckets": {}})
            if sample.name.endswith("_bucket"):
                entry["buckets"][float(sample.labels["le"])] = sample.value
            elif sample.name.endswith("_count"):
                entry["count"] = sample.value
            elif sample.name.endswith("_sum"):
                entry["sum"] = sample.value
    return stages


def histogram_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """What each stage observed between two reads: count, mean, and the bucket bounds that hold
    the p50 and p99 (the histogram's resolution), in milliseconds."""
    out: dict[str, dict[str, float | None]] = {}
    for stage, now in after.items():
        was = before.get(stage, {"count": 0.0, "sum": 0.0, "buckets": {}})
        count = now["count"] - was["count"]
        if count <= 0:
            continue
        buckets = sorted((bound, n - was["buckets"].get(bound, 0.0)) for bound, n in now["buckets"].items())

        def bound_of(q: float, buckets: list[tuple[float, float]] = buckets, count: float = count) -> float | None:
            bound = next(b for b, n in buckets if n >= q * count)
            return None if bound == float("inf") else round(bound * 1000, 3)

        out[stage] = {
            "count": count,
            "mean_ms": round((now["sum"] - was["sum"]) / count * 1000, 3),
            "p50_at_most_ms": bound_of(0.5),
            "p99_at_most_ms": bound_of(0.99),
        }
    return out


def photo_like_png(seed: int, side: int = 1024) -> bytes:
    """A deterministic PNG with a real image's weight: smooth colour fields (16x16 random colours,
    bicubic) under pixel noise of sigma 3, ~1.6 MB at 1024x1024."""
    import numpy as np
    from PIL import Image

    from modm.images import encode_image

    rng = np.random.default_rng(seed)
    fields = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize(
        (side, side), Image.Resampling.BICUBIC
    )
    noisy = np.asarray(fields, dtype=np.int16) + rng.normal(0, 3, (side, side, 3)).astype(np.int16)
    return encode_image(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)))


def seeded_params(prompt: str, large: DeviceProfile, seed: int) -> Any:
    """An entry's parameters as the router inserts a miss that named none (its resolved defaults):
    the large model's default size and guidance, steps 0 (the model's default), the seed it ran."""
    from modm.v1 import common_pb2

    return common_pb2.GenerationParams(
        prompt=prompt,
        width=large.width,
        height=large.height,
        guidance_scale=large.spec.default_guidance,
        seed=seed,
    )


def distinct(prompts: Iterable[str]) -> list[str]:
    """Each prompt once, in the trace's order (an exact repeat must not be seeded twice)."""
    return list(dict.fromkeys(prompts))


# --- the stack and the load ----------------------------------------------------------------


def split_cache(kinds: Mapping[str, float], helpers: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds by process: the stack meter's kinds, its own process named the client (it
    sends the load), and the cache's tree split into its Python process (gRPC, the embedder,
    Milvus Lite, which serves from threads of that process, the S3 client) and each helper server
    it started (`cache/weed`: the embedded S3), so that each entry is one process's load."""
    out = {("client" if kind == "bench" else kind): seconds for kind, seconds in kinds.items()}
    if "cache" in out:
        out["cache"] = round(out["cache"] - sum(helpers.values()), 3)
        out |= {f"cache/{name}": round(seconds, 3) for name, seconds in helpers.items()}
    return out


class Meter:
    """CPU seconds of every process of the stack since `start`, the cache's helpers apart."""

    def __init__(self, pids: Iterable[int], cache_pid: int) -> None:
        from modm.bench.harness import StackMeter

        self._kinds = StackMeter(pids)
        self._cache_pid = cache_pid
        self._helpers: dict[str, float] = {}

    def _helper_seconds(self) -> dict[str, float]:
        import psutil

        out: dict[str, float] = {}
        for child in psutil.Process(self._cache_pid).children(recursive=True):
            try:
                times, name = child.cpu_times(), child.name()
            except psutil.Error:
                continue
            out[name] = out.get(name, 0.0) + times.user + times.system
        return out

    def start(self) -> None:
        self._kinds.start()
        self._helpers = self._helper_seconds()

    def used(self) -> dict[str, float]:
        helpers = {name: s - self._helpers.get(name, 0.0) for name, s in self._helper_seconds().items()}
        return split_cache(self._kinds.used(), helpers)


@dataclass
class Stack:
    """The real processes, on loopback."""

    processes: list[Any]
    router: Any
    cache: Any
    metrics_port: int

    def meter(self) -> Meter:
        return Meter((p.proc.pid for p in self.processes), self.cache.proc.pid)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def stage_histograms(self) -> dict[str, dict[str, Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as reply:
            return stage_histograms(reply.read().decode())


def start_stack(root: Path, large: str, small: str) -> Stack:
    """Cache, one zero-time worker per pool, and a router over them (its stage histograms on a
    metrics port; discovery at its default interval, not the tests' 0.5 s)."""
    from modm.bench.stack import wait_for_pools
    from modm.launch import free_port
    from tests.procs import start_cache, start_router, start_worker

    logs = root / "logs"
    logs.mkdir(parents=True)
    processes: list[Any] = []
    try:
        cache = start_cache(root / "cache", logs, log_format="text")
        processes.append(cache)
        workers = [
            start_worker(
                None, logs, device="emulated", profile=profile, time_scale=0, batch_window_ms=0, log_format="text"
            )
            for profile in (large, small)
        ]
        processes += workers
        for process in processes:
            process.wait_serving(timeout=600)
        metrics_port = free_port()
        router = start_router(
            logs,
            workers[0].address,
            workers[1].address,
            cache.address,
            metrics_port=metrics_port,
            discovery_interval_s=2.0,
        )
        processes.append(router)
        router.wait_serving()
        wait_for_pools(router.address, ["large", "small"])
    except BaseException:
        for process in reversed(processes):
            process.stop()
        raise
    return Stack(processes, router, cache, metrics_port)


async def seed_cache(address: str, prompts: Sequence[str], large: DeviceProfile, images: Sequence[bytes]) -> None:
    """Insert one entry per prompt through the cache's own API, eight at a time."""
    from modm.services.router.backends import GrpcCache
    from modm.services.router.settings import RouterSettings
    from modm.services.worker.emulation import emulated_model_id

    tenant = RouterSettings.model_fields["default_tenant"].default
    cache = GrpcCache(address)
    room = asyncio.Semaphore(8)

    async def insert(i: int, prompt: str) -> None:
        async with room:
            params = seeded_params(prompt, large, i)
            metadata = {"source": "benchmarks/overhead.py"}
            await cache.insert(
                tenant, prompt, images[i % len(images)], emulated_model_id(large), params, metadata, 120.0
            )

    try:
        await asyncio.gather(*(insert(i, p) for i, p in enumerate(prompts)))
    finally:
        await cache.close()


async def outcomes(endpoint: str, prompts: Sequence[str], **kwargs: Any) -> list[str]:
    """How the router serves each prompt (eight at a time); '' for an error."""
    from modm.client import AsyncClient, ModmClientError

    room = asyncio.Semaphore(8)
    async with AsyncClient(endpoint, timeout=120.0) as client:

        async def one(prompt: str) -> str:
            async with room:
                try:
                    return (await client.generate(prompt, **kwargs)).outcome
                except ModmClientError:
                    return ""

        return list(await asyncio.gather(*(one(p) for p in prompts)))


async def hit_prompts(endpoint: str, candidates: Sequence[str], wanted: int) -> list[str]:
    """The first `wanted` candidates the router serves as hits (asked with cache policy no_store,
    so nothing is inserted; hits are not inserted either, so each stays a hit)."""
    served = await outcomes(endpoint, candidates, cache_policy="no_store")
    hits = [prompt for prompt, outcome in zip(candidates, served, strict=True) if outcome == "hit"][:wanted]
    if not hits:
        raise RuntimeError(f"none of {len(candidates)} near-duplicate prompts is a hit")
    return hits


async def closed_loop(
    endpoint: str,
    pool: Sequence[str],
    kwargs: Mapping[str, Any],
    concurrency: int,
    window: tuple[float, float],
    meter: Meter,
) -> tuple[list[RequestRecord], dict[str, float]]:
    """`concurrency` clients sending the pool's prompts in turn until the window closes; the
    processes' CPU seconds over the window (after the warm-up)."""
    from modm.client import AsyncClient, ModmClientError

    records: list[RequestRecord] = []
    cpu: dict[str, float] = {}
    turns = itertools.cycle(enumerate(pool))  # shared: the clients take prompts in turn
    async with AsyncClient(endpoint, timeout=60.0, retries=0) as client:
        start = time.monotonic()

        async def one_client() -> None:
            for index, prompt in turns:
                sent = time.monotonic() - start
                if sent >= window[1]:
                    return
                try:
                    result = await client.generate(prompt, **kwargs)
                except ModmClientError as error:
                    done = time.monotonic() - start
                    records.append(RequestRecord(index, prompt, "", sent, sent, done, done - sent, error=error.code))
                    continue
                done = time.monotonic() - start
                records.append(
                    RequestRecord(
                        index,
                        prompt,
                        "",
                        sent,
                        sent,
                        done,
                        done - sent,
                        outcome=result.outcome,
                        skipped_steps=result.skipped_steps,
                        total_steps=result.total_steps,
                        worker=result.worker,
                        timings=result.timings,
                    )
                )

        async def measure() -> None:
            await asyncio.sleep(window[0])
            meter.start()
            await asyncio.sleep(window[1] - window[0])
            cpu.update(meter.used())

        await asyncio.gather(measure(), *(one_client() for _ in range(concurrency)))
    return records, cpu


def sweep(
    endpoint: str,
    pool: Sequence[str],
    kwargs: Mapping[str, Any],
    levels: Sequence[int],
    window: tuple[float, float],
    meter: Meter,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Closed loops at each concurrency until the throughput stops growing."""
    done: list[dict[str, Any]] = []
    for concurrency in levels:
        load_before = read_loadavg()
        records, cpu = asyncio.run(closed_loop(endpoint, pool, kwargs, concurrency, window, meter))
        level = level_summary(records, concurrency, window, cpu)
        level["loadavg"] = {"before": load_before, "after": read_loadavg()}
        done.append(level)
        log(
            f"  C={concurrency}: {level['throughput_rps']} req/s, system p50/p99 "
            f"{level['system_ms'].get('p50')}/{level['system_ms'].get('p99')} ms, "
            f"CPU ms/request {level['cpu_ms_per_request']}, load {level['loadavg']['after']['1m']}"
        )
        if not keep_sweeping([lv["throughput_rps"] for lv in done]):
            break
    return {"levels": done, "saturation": saturation(done)}


def replay_run(endpoint: str, requests: Sequence[TraceRequest], send_at: Sequence[float] | None, **options: Any) -> Run:
    from modm.bench.replay import ReplayOptions, replay

    return asyncio.run(replay(endpoint, requests, send_at, ReplayOptions("modm", **options)))


# --- the report --------------------------------------------------------------------------


def _ms(spread: Mapping[str, float], key: str) -> str:
    return f"{spread[key]:.1f}" if key in spread else "-"


def _row(label: str, spread: Mapping[str, float]) -> str:
    """A table row: p50, p99, mean (ms) and n."""
    return f"| {label} | {_ms(spread, 'p50')} | {_ms(spread, 'p99')} | {_ms(spread, 'mean')} | {spread.get('n', 0)} |"


def _p50_p99(spread: Mapping[str, float]) -> str:
    return f"{_ms(spread, 'p50')}/{_ms(spread, 'p99')}"


def _loads(run: Mapping[str, Any]) -> str:
    before, after = run["loadavg"]["before"]["1m"], run["loadavg"]["after"]["1m"]
    flag = (
        " **(over 3: shared machine)**"
        if run["loadavg"]["before"]["over_flag"] or run["loadavg"]["after"]["over_flag"]
        else ""
    )
    return f"{before:.2f} -> {after:.2f}{flag}"


def markdown(report: Mapping[str, Any]) -> str:
    """report.md: the numbers of report.json that answer the two questions."""
    setup, at_rate = report["setup"], report["overhead_at_fleet_rate"]
    summary, device = at_rate["summary"], at_rate["summary"]["device"]
    lines = [
        "# The serving system's own overhead",
        "",
        f"Command: `{report['command']}` ({report['wall_s']:.0f} s on {report['machine']['cores']} cores; "
        f"{report['machine']['cpu']}). The method: `docs/bench/scale/overhead/README.md`.",
        "",
        f"Zero-time emulated devices ({setup['large_profile']} large, {setup['small_profile']} small); the cache "
        f"seeded with {setup['seeded_entries']} photo-like {setup['image']['side']}x{setup['image']['side']} PNGs "
        f"of {setup['image']['mean_bytes'] / 1e6:.2f} MB; OMP_NUM_THREADS of the stack: {setup['omp_threads']}.",
        "",
        f"## Router and cache time per request at {setup['gpus']} GPUs' rate",
        "",
        f"Rate {at_rate['rate_rps']:.2f} req/s (the mix of {at_rate['calibration']['requests']} calibration "
        f"requests on {setup['gpus']} GPUs; large-only's {setup['gpus']} GPUs: {at_rate['large_only_rps']:.2f} "
        f"req/s), {summary['requests']} requests in an open loop, {summary['errors']} errors, outcomes "
        f"{summary['outcomes']}; load average {_loads(at_rate)}.",
        "",
        "| | p50 ms | p99 ms | mean ms | n |",
        "|---|---|---|---|---|",
        _row("router + cache (total - queue - worker call)", summary["system_ms"]),
    ]
    lines += [_row(f"... {outcome}", spread) for outcome, spread in summary["system_ms_by_outcome"].items()]
    lines += [_row(f"stage: {stage}", spread) for stage, spread in summary["stages_ms"].items()]
    lines += ["", "Device time of one request (the profiles, batch 1, 1024x1024):", ""]
    lines.append(f"- miss: {device['miss_s']:.2f} s ({setup['large_profile']})")
    if "hit_s" in device:
        lines.append(
            f"- hit at the median k = {device['median_k']} of {device['total_steps']}: {device['hit_s']:.2f} s "
            f"({setup['small_profile']} img2img, {device['hit_steps']} steps)"
        )
    ratios = summary["system_over_device"]
    lines += [
        f"- router + cache at p50 / p99 over the {name}'s device time: {ratios[f'p50_over_{name}']:.2%} / "
        f"{ratios[f'p99_over_{name}']:.2%}"
        for name in ("hit", "miss")
        if f"p50_over_{name}" in ratios
    ]
    hist = at_rate["stage_histograms"]
    lines += ["", "The router's `modm_router_stage_seconds` over the same requests:", ""]
    lines += [
        f"- {stage}: {h['count']:.0f} observed, mean {h['mean_ms']} ms, p50 <= {h['p50_at_most_ms']} ms, "
        f"p99 <= {h['p99_at_most_ms']} ms"
        for stage, h in hist.items()
    ]
    lines += ["", f"CPU ms per request over the open loop: {at_rate['cpu_ms_per_request']}", ""]
    lines += ["## Saturation of one router replica", ""]
    for run in report["saturation"].values():
        sat = run["saturation"]
        lines += [
            f"### {run['title']}",
            "",
            f"Most: **{sat['max_rps']} req/s** at C = {sat['at_concurrency']}; busiest process: "
            f"{sat['busiest_process']} at {sat['busiest_share_of_one_core']} of a core; all processes "
            f"{sat['cores_used']} cores.",
            "",
            "| C | req/s | router+cache p50/p99 ms | client p50/p99 ms | CPU ms/request | one core's req/s | load 1m |",
            "|---|---|---|---|---|---|---|",
        ]
        for level in run["levels"]:
            cpu = ", ".join(f"{k} {v}" for k, v in level["cpu_ms_per_request"].items())
            one = ", ".join(f"{k} {v}" for k, v in level["one_core_rps"].items())
            lines.append(
                f"| {level['concurrency']} | {level['throughput_rps']} | {_p50_p99(level['system_ms'])} | "
                f"{_p50_p99(level['latency_ms'])} | {cpu} | {one} | {_loads(level)} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


# --- the run -----------------------------------------------------------------------------


def parse_levels(text: str) -> list[int]:
    levels = [int(part) for part in text.split(",") if part.strip()]
    if not levels or any(c < 1 for c in levels) or levels != sorted(set(levels)):
        raise argparse.ArgumentTypeError("levels are increasing positive concurrencies, e.g. 1,2,4,8")
    return levels


def parse_sweeps(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names or set(names) - set(SWEEPS):
        raise argparse.ArgumentTypeError(f"sweeps are some of {', '.join(SWEEPS)}")
    return names


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "unknown CPU",
    )
    return {"cores": os.cpu_count(), "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--gpus", type=int, default=64, help="The fleet whose rate the overhead is measured at.")
    parser.add_argument("--large-profile", default="sd3.5-large-a100")
    parser.add_argument("--small-profile", default="sdxl-a100")
    parser.add_argument("--seed-requests", type=int, default=600, help="The trace's first N requests seed the cache.")
    parser.add_argument("--calibrate", type=int, default=300, help="The next N: closed loop, unmeasured; the mix.")
    parser.add_argument("--measure", type=int, default=1200, help="The next N: open loop at the fleet's rate.")
    parser.add_argument("--pool", type=int, default=100, help="Prompts of each saturation loop (repeats, hits).")
    parser.add_argument("--levels", type=parse_levels, default=parse_levels("1,2,4,8,16,32,64"))
    parser.add_argument("--warm-s", type=float, default=2.0, help="Unmeasured start of each closed-loop level.")
    parser.add_argument("--level-s", type=float, default=10.0, help="Measured seconds of each level.")
    parser.add_argument("--sweeps", type=parse_sweeps, default=list(SWEEPS), help=f"Some of {', '.join(SWEEPS)}.")
    parser.add_argument(
        "--omp-threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS of every process of the stack (torch in the cache's embedder); 0 leaves each "
        "library's default (torch: one thread per core).",
    )
    parser.add_argument("--keep-logs", action="store_true", help="Keep the processes' logs and data under --out.")
    args = parser.parse_args()

    started = time.monotonic()
    command = " ".join([".venv/bin/python", "benchmarks/overhead.py", *sys.argv[1:]])
    large, small = load_profile(args.large_profile), load_profile(args.small_profile)
    fleet = Fleet(large, small, args.gpus)
    trace = read_trace(args.trace)
    seeded = distinct(r.prompt for r in trace[: args.seed_requests])
    calibration = trace[args.seed_requests : args.seed_requests + args.calibrate]
    measured = trace[args.seed_requests + args.calibrate : args.seed_requests + args.calibrate + args.measure]
    if len(measured) < args.measure:
        parser.error(f"{args.trace} has {len(trace)} requests: fewer than seed + calibrate + measure")
    near = distinct(r.prompt for r in trace[args.seed_requests :] if r.extra.get("kind") == "near")
    candidates = [p for p in near if p not in set(seeded)][: 6 * args.pool]  # about a quarter of them are hits

    def log(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {line}", flush=True)

    if args.omp_threads:
        os.environ["OMP_NUM_THREADS"] = str(args.omp_threads)  # the stack's processes inherit it
    images = [photo_like_png(seed) for seed in range(8)]
    window = (args.warm_s, args.warm_s + args.level_s)
    root = Path(tempfile.mkdtemp(prefix="modm-ovh-"))  # short: the cache's S3 socket path
    log(f"starting the stack under {root} (load {read_loadavg()['1m']})")
    stack = start_stack(root, args.large_profile, args.small_profile)
    try:
        meter = stack.meter()
        endpoint = stack.router.address
        log(f"seeding the cache with {len(seeded)} entries")
        asyncio.run(seed_cache(stack.cache.address, seeded, large, images))
        probe = asyncio.run(outcomes(endpoint, seeded[:1]))
        if probe != ["exact_repeat"]:
            raise RuntimeError(f"a seeded prompt was served as {probe}, not an exact repeat: the seeded params drifted")
        hits = asyncio.run(hit_prompts(endpoint, candidates, args.pool)) if "hits" in args.sweeps else []
        log(f"{len(hits)} hit prompts from {len(candidates)} near duplicates")
        saturation_runs = {}
        for name in args.sweeps:
            title, kwargs = SWEEPS[name]
            pool = hits if name == "hits" else seeded[: args.pool]
            log(f"saturation: {title}")
            saturation_runs[name] = {"title": title, "prompts": len(pool)} | sweep(
                endpoint, pool, kwargs, args.levels, window, meter, log
            )

        log(f"calibration: {len(calibration)} requests, closed loop of 16")
        calibrated = replay_run(endpoint, calibration, None, concurrency=16, timeout_s=120.0)
        rate = fleet.rate(calibrated.records)
        log(f"{args.gpus} GPUs serve {rate:.2f} req/s with this mix; measuring {len(measured)} requests at that rate")
        from modm.bench.schedule import arrival_times

        load_before, hist_before = read_loadavg(), stack.stage_histograms()
        meter.start()
        run = replay_run(endpoint, measured, arrival_times(len(measured), lambda i: rate, seed=0), timeout_s=120.0)
        cpu = meter.used()
        summary = overhead_summary(run.records, fleet)
        answered = max(1, len(run.records) - summary["errors"])
        at_rate = {
            "rate_rps": round(rate, 3),
            "large_only_rps": round(fleet.large_only_rate(), 3),
            "calibration": {
                "requests": len(calibration),
                "outcomes": dict(Counter(r.outcome for r in calibrated.records)),
            },
            "duration_s": run.info.duration_s,
            "summary": summary,
            "stage_histograms": histogram_delta(hist_before, stack.stage_histograms()),
            "cpu_ms_per_request": {kind: round(s * 1000 / answered, 3) for kind, s in cpu.items()},
            "cpu_share_of_one_core": {kind: round(s / run.info.duration_s, 3) for kind, s in cpu.items()},
            "loadavg": {"before": load_before, "after": read_loadavg()},
        }
        log(f"router + cache per request: {summary['system_ms']} ms; device {summary['device']}")
    finally:
        stack.stop()
        if args.keep_logs:
            shutil.copytree(root / "logs", args.out / "logs", dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)

    sizes = [len(image) for image in images]
    report = {
        "command": command,
        "wall_s": round(time.monotonic() - started, 1),
        "machine": machine(),
        "setup": {
            "gpus": args.gpus,
            "large_profile": args.large_profile,
            "small_profile": args.small_profile,
            "time_scale": 0,
            "omp_threads": args.omp_threads or "library default",
            "trace": str(args.trace.relative_to(ROOT)) if args.trace.is_relative_to(ROOT) else str(args.trace),
            "seeded_entries": len(seeded),
            "image": {"side": 1024, "format": "png", "mean_bytes": round(statistics.fmean(sizes))},
            "window_s": list(window),
            "levels": args.levels,
        },
        "overhead_at_fleet_rate": at_rate,
        "saturation": saturation_runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "report.md").write_text(markdown(report))
    log(f"wrote {args.out / 'report.json'} and report.md")


if __name__ == "__main__":
    main()
