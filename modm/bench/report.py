"""The report of one or more runs of the same trace: report.json, report.md and PNG plots.

Numbers per run: throughput (completed requests over the time from the first send to the last
reply), latency as the client saw it (mean, p50, p99), serving time (latency less the wait in
the router's queue), the share of requests over the SLO (errors count as over), outcomes,
hit rate, the k distribution and the denoising steps each pool ran (the work, apart from
time), all over the measured requests (a closed loop's warm-up is left out). A closed-loop run
adds its saturation throughput over the measured phase, the split the pools had then and the
slots the monitor switched in each phase, and an emulated fleet's run the harness check
(`modm.bench.harness`). Runs are grouped by fleet (GPUs and model pair); within a group: the
speedup of each modm run (one router, or several) over large-only in mean latency, mean serving
time, throughput and saturation throughput, next to the bound (`modm.bench.bound`). A run with
several routers also reports whether they gave a worker more than its capacity between them,
and their retries and refusals.

Times are the run's wall-clock seconds, except `saturation_rps`: requests per second of the
emulated GPUs' own time (the wall rate times the fleet's time scale), what the real fleet would
serve.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from modm.bench import harness
from modm.bench.bound import MIN_SECONDS_PER_STEP, Bound, cost_ratio_of, hit_rate_of, kappa_of
from modm.bench.phases import switches
from modm.bench.records import MODES, RequestRecord, Run, StatsSample

PLOTS = ("latency.png", "hit_rate.png", "k_distribution.png", "allocation.png", "throughput.png")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _spread(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "mean": round(statistics.fmean(values), 4),
        "p50": round(percentile(values, 50), 4),
        "p90": round(percentile(values, 90), 4),
        "p99": round(percentile(values, 99), 4),
        "max": round(max(values), 4),
    }


def summarize(run: Run, slo_s: float) -> dict[str, Any]:
    records = run.measured
    ok = [r for r in records if r.ok]
    first = min((r.sent_s for r in records), default=0.0)
    last = max((r.done_s for r in ok), default=first)
    span = last - first
    hits = [r for r in ok if r.outcome == "hit"]
    ks = Counter(r.skipped_steps for r in hits)
    summary: dict[str, Any] = {
        "mode": run.info.mode,
        "requests": len(records),
        "completed": len(ok),
        "errors": dict(Counter(r.error for r in records if not r.ok)),
        "duration_s": round(span, 3),
        "throughput_rps": round(len(ok) / span, 4) if span > 0 else None,
        "latency_s": _spread([r.latency_s for r in ok]),
        "service_s": _spread([r.service_s for r in ok]),
        "slo_s": slo_s,
        "slo_violation_share": round(sum(not r.ok or r.latency_s > slo_s for r in records) / len(records), 4)
        if records
        else None,
        "outcomes": dict(Counter(r.outcome for r in ok)),
        "pools": dict(Counter(r.pool for r in ok)),
        "steps_by_pool": steps_by_pool(ok),
        "hit_rate": round(hit_rate_of(records), 4),
        "kappa": round(kappa_of(records), 4),
        "k_distribution": {str(k): round(n / len(hits), 4) for k, n in sorted(ks.items())} if hits else {},
        "degraded": sum(r.degraded for r in ok),
        "large_took_hit": sum(r.large_took_hit for r in ok),
        "cost_ratio_c": _round(cost_ratio_of(run.samples)),
        "cost_ratio_c_served": _round(cost_ratio_of(run.samples, "mean_seconds_per_step")),
        "allocation": _allocation(run),
        "degrade_override_samples": sum(sample.degrade_override for sample in run.samples),
        "workers": _last_workers(run),
    }
    scored = [(r.outcome, r.clip_score) for r in ok if r.clip_score is not None]
    if scored:
        from modm.bench.quality import mean_by

        summary["clip_score_by_outcome"] = mean_by(scored)  # type: ignore[arg-type]
    return summary


def steps_by_pool(records: Sequence[RequestRecord]) -> dict[str, int]:
    """Denoising steps each pool ran for these requests: the GPU work, whatever the timings."""
    steps: Counter[str] = Counter()
    for r in records:
        steps[r.pool] += r.steps_run
    return dict(steps)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _allocation(run: Run) -> dict[str, dict[str, float]]:
    """Workers per pool over the Stats samples of the measured phase: least, most and mean."""
    out: dict[str, dict[str, float]] = {}
    measured = [s for s in run.samples if s.at >= run.info.measure_start_s]
    for pool in ("large", "small"):
        counts = [s.pools[pool]["workers"] for s in measured if pool in s.pools]
        if counts:
            out[pool] = {"min": min(counts), "max": max(counts), "mean": round(statistics.fmean(counts), 3)}
    return out


def _last_workers(run: Run) -> list[dict[str, Any]]:
    for sample in reversed(run.samples):
        if sample.workers:
            return sample.workers
    return []


def fleet_of(run: Run) -> tuple[int, str]:
    """(GPUs, model pair) of a run: as the bench recorded them, else the most workers the
    router's Stats listed at once."""
    gpus = run.info.gpus or max((len(sample.workers) for sample in run.samples), default=0)
    return gpus, run.info.pair


WORKER_SECONDS = (
    "profiled_seconds_per_step",
    "profiled_overhead_seconds",
    "mean_service_seconds",
    "mean_seconds_per_step",
)


def gpu_time_samples(run: Run) -> list[StatsSample]:
    """The run's Stats samples with its workers' seconds in the GPUs' own time (divided by the
    run's time scale), so that the runs of a fleet, each at its own scale, pool into one c."""
    scale = run.info.time_scale or 1.0
    if scale == 1.0:
        return run.samples

    def unscaled(worker: dict[str, Any]) -> dict[str, Any]:
        return {k: v / scale if k in WORKER_SECONDS and isinstance(v, int | float) else v for k, v in worker.items()}

    return [replace(sample, workers=[unscaled(w) for w in sample.workers]) for sample in run.samples]


def cost_ratio(samples: Sequence[StatsSample]) -> tuple[float | None, str]:
    """c of a group of runs and where it came from. c is the workers' property: every run's
    Stats samples count (in modm an idle large worker may take every hit, leaving the small pool
    unmeasured; the baselines measure each pool)."""
    profiled = cost_ratio_of(samples)
    if profiled is not None:
        return profiled, "profiled"
    return cost_ratio_of(samples, "mean_seconds_per_step"), "served"


def compare(
    runs: Mapping[str, Run], summaries: Mapping[str, dict[str, Any]], c: tuple[float | None, str]
) -> dict[str, Any] | None:
    """Speedups of modm over large-only (runs and summaries of one fleet, by mode), and the bound
    with the fleet's c (`cost_ratio`)."""
    if "modm" not in runs or "large-only" not in runs:
        return None
    m, base = summaries["modm"], summaries["large-only"]
    out: dict[str, Any] = {}
    # Wall-clock figures compare only runs on one time scale; saturation is in the GPUs' time.
    same_clock = runs["modm"].info.time_scale == runs["large-only"].info.time_scale
    for key, label in (("latency_s", "mean_latency"), ("service_s", "mean_service")):
        if same_clock and m[key] and base[key]:
            out[f"speedup_{label}"] = round(base[key]["mean"] / m[key]["mean"], 4)
    for key, label in (("throughput_rps", "throughput"), ("saturation_rps", "saturation")):
        if (same_clock or label == "saturation") and m[key] and base[key]:
            out[f"speedup_{label}"] = round(m[key] / base[key], 4)
    cost, source = c
    if cost is not None:
        bound = Bound.of(runs["modm"].measured, cost)
        out["bound"] = {k: round(v, 4) for k, v in asdict(bound).items()} | {"cost_ratio_source": source}
        for key in ("speedup_mean_service", "speedup_mean_latency", "speedup_throughput", "speedup_saturation"):
            if key in out:
                out[f"{key}_over_bound"] = round(out[key] / bound.speedup, 4)
    pooled = [sample for run in runs.values() for sample in gpu_time_samples(run)]
    served = cost_ratio_of(pooled, "mean_seconds_per_step")
    if served is not None and source == "profiled":
        with_served = Bound.of(runs["modm"].measured, served)
        out["bound_with_served_c"] = {k: round(v, 4) for k, v in asdict(with_served).items()}
    return out


def fleet_summary(run: Run, c: float | None) -> dict[str, Any]:
    """The fleet fields of a run: what it ran on, its phases, its saturation throughput and its
    harness check (an emulated fleet's run; None where nothing was measured)."""
    info = run.info
    gpus, pair = fleet_of(run)
    start = info.measure_start_s
    wall = harness.saturation_rps(run.records, start) if info.concurrency else None
    loads = [value for at, value in info.load_average if at >= start]
    checked = None
    if info.cpu_seconds:
        checked = harness.check(
            info.mode,
            duration_s=info.duration_s,
            cpu_seconds=info.cpu_seconds,
            saturation_wall_rps=wall,
            capacity_rps=info.capacity_rps,
            loads=loads,
            cores=info.cores,
        )
    moved = switches(run.samples)
    last_sent = max((r.sent_s for r in run.records), default=start)
    return {
        "gpus": gpus,
        "pair": pair,
        "policy": info.policy,
        "routers": info.routers,
        "time_scale": info.time_scale,
        "concurrency": info.concurrency,
        "saturation_rps": _round(wall * info.time_scale if wall is not None else None),
        "saturation_rps_wall": _round(wall),
        "c": _round(c),
        "phases": {
            "warmup_requests": sum(r.warmup for r in run.records),
            "warmup_s": round(start, 3),
            "measured_s": round(max(0.0, last_sent - start), 3),
            "settled": info.settled,
            "switches_warmup": sum(at < start for at in moved),
            "switches_measured": sum(at >= start for at in moved),
        },
        "load_average": {"max": max(loads, default=None), "samples": len(loads), "cores": info.cores},
        "capped_by_machine": None if checked is None else checked.capped_by_machine,
        "harness": None if checked is None else checked.to_dict(),
        "cpu_seconds": info.cpu_seconds,
        "rss_mib": info.rss_mib,
        "work_split": work_split(run) if info.mode == "modm" else None,
        "dispatch": dispatch_summary(run) if info.routers > 1 or info.router_metrics else None,
    }


def work_split(run: Run) -> dict[str, float] | None:
    """The split the measured phase's work asks for: each pool's share of the GPU seconds its
    requests took on their workers' profiles (overhead + steps run x seconds per step, batch 1),
    times the fleet's GPUs. A saturated fleet serves the most when its pools have these shares;
    what the monitor chose is in `allocation`. None without both pools' profiles."""
    profile: dict[str, tuple[list[float], list[float]]] = {}
    for sample in run.samples:
        for w in sample.workers:
            if (w.get("profiled_seconds_per_step") or 0.0) > MIN_SECONDS_PER_STEP:
                per_step, overhead = profile.setdefault(str(w.get("pool")), ([], []))
                per_step.append(float(w["profiled_seconds_per_step"]))
                overhead.append(float(w.get("profiled_overhead_seconds") or 0.0))
    if set(profile) < {"large", "small"}:
        return None
    seconds = dict.fromkeys(("large", "small"), 0.0)
    for r in run.measured:
        if r.ok and r.pool in seconds:
            per_step, overhead = profile[r.pool]
            seconds[r.pool] += statistics.fmean(overhead) + r.steps_run * statistics.fmean(per_step)
    total = sum(seconds.values())
    if total <= 0:
        return None
    share = seconds["large"] / total
    return {"large_share": round(share, 4), "large_gpus": round(share * fleet_of(run)[0], 2)}


def dispatch_summary(run: Run) -> dict[str, Any]:
    """What the routers did to the workers over the measured phase: how often a worker held more
    than its capacity between all routers (only the sum shows it), retries and refusals."""
    measured = [s for s in run.samples if s.at >= run.info.measure_start_s and s.fleet_in_flight]
    seen = over = 0
    excess = 0
    for sample in measured:
        capacity = {str(w.get("address")): int(w.get("capacity") or 0) for w in sample.workers}
        for address, in_flight in sample.fleet_in_flight.items():
            if capacity.get(address):
                seen += 1
                over += in_flight > capacity[address]
                excess = max(excess, in_flight - capacity[address])
    records = run.measured
    return {
        "routers": run.info.routers,
        "worker_samples": seen,
        "over_capacity_share": round(over / seen, 4) if seen else None,
        "most_over_capacity": excess if seen else None,
        "retried_requests": sum(r.attempts > 1 for r in records if r.ok),
        "errors": dict(Counter(r.error for r in records if not r.ok)),
        "large_took_hit": sum(r.large_took_hit for r in records),
        "router_metrics": run.info.router_metrics,
    }


def _order(run: Run) -> tuple[str, int, int, int, str]:
    gpus, pair = fleet_of(run)
    return pair, gpus, MODES.index(run.info.mode), run.info.routers, run.info.policy


def build(
    runs: Mapping[str, Run], *, slo_s: float, trace: str = "", quality: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The report of runs keyed by their folder's name (their `id`)."""
    ordered = dict(sorted(runs.items(), key=lambda item: _order(item[1])))
    groups: dict[tuple[int, str], dict[tuple[str, int, str], str]] = {}  # fleet -> (mode, routers, policy) -> id
    for rid, run in ordered.items():
        groups.setdefault(fleet_of(run), {})[(run.info.mode, run.info.routers, run.info.policy)] = rid
    summaries: dict[str, dict[str, Any]] = {}
    comparisons = []
    for (gpus, pair), ids in groups.items():
        c = cost_ratio([sample for rid in ids.values() for sample in gpu_time_samples(ordered[rid])])
        for rid in ids.values():
            summaries[rid] = {"id": rid} | summarize(ordered[rid], slo_s) | fleet_summary(ordered[rid], c[0])
        bases = sorted((routers, rid) for (mode, routers, _), rid in ids.items() if mode == "large-only")
        if not bases:
            continue
        base_id = bases[0][1]  # one router's, when there is one
        base = summaries[base_id]
        for (mode, routers, policy), rid in ids.items():
            if mode != "modm":
                continue
            modm = summaries[rid]
            pair_runs = {"modm": ordered[rid], "large-only": ordered[base_id]}
            comparison = compare(pair_runs, {"modm": modm, "large-only": base}, c)
            if comparison is None:
                continue
            modm["speedup"] = comparison.get("speedup_saturation")
            modm["bound"] = comparison.get("bound", {}).get("speedup")
            modm["speedup_over_bound"] = comparison.get("speedup_saturation_over_bound")
            if base["capped_by_machine"] and modm["harness"] is not None:  # modm's speedup rests on it
                modm["capped_by_machine"] = True
                modm["harness"]["failures"].append("its large-only run, the speedup's base, was capped by the machine")
            head = {"gpus": gpus, "pair": pair, "routers": routers, "policy": policy}
            head["capped_by_machine"] = modm["capped_by_machine"]
            comparisons.append(head | comparison)
    report: dict[str, Any] = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "trace": trace,
        "timing": next(iter(ordered.values())).info.timing if ordered else {},
        "runs": list(summaries.values()),
        "comparisons": comparisons,
    }
    if quality:
        report["quality"] = dict(quality)
    models = {str(w.get("model_id")) for s in summaries.values() for w in s["workers"]}
    if any(Path(m).name.startswith("tiny-") for m in models):
        report["note"] = (
            "tiny randomly initialised models: timings exercise the real serving paths, "
            "images are noise and any quality number is meaningless"
        )
    return report


def write(out: Path, runs: Mapping[str, Run], report: dict[str, Any]) -> list[Path]:
    """report.json, report.md and the plots (when matplotlib is installed); returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.json", out / "report.md"]
    written[0].write_text(json.dumps(report, indent=2) + "\n")
    written[1].write_text(markdown(report))
    from modm.bench.plots import draw

    written += draw(out, runs, report)
    return written


def markdown(report: dict[str, Any]) -> str:
    runs: list[dict[str, Any]] = report["runs"]
    lines = ["# modm bench report", ""]
    if report.get("note"):
        lines += [f"Note: {report['note']}.", ""]
    if report.get("trace"):
        lines.append(f"Trace `{report['trace']}`, timing {json.dumps(report.get('timing', {}))}.")
        lines.append("")
    lines += [
        "| run | requests | completed | errors | throughput (req/s) | mean latency (s) | p50 | p99 "
        "| mean serving (s) | over SLO | hit rate | kappa | degraded |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in runs:
        lat, svc = s["latency_s"] or {}, s["service_s"] or {}
        lines.append(
            f"| {s['id']} | {s['requests']} | {s['completed']} | {sum(s['errors'].values())} | {s['throughput_rps']} "
            f"| {lat.get('mean')} | {lat.get('p50')} | {lat.get('p99')} | {svc.get('mean')} "
            f"| {_pct(s['slo_violation_share'])} (SLO {s['slo_s']} s) | {_pct(s['hit_rate'])} | {s['kappa']} "
            f"| {s['degraded']} |"
        )
    lines.append("")
    for s in runs:
        lines.append(
            f"- **{s['id']}**: outcomes {s['outcomes']}, pools {s['pools']}, "
            f"denoising steps by pool {s['steps_by_pool']}"
        )
        if s["k_distribution"]:
            lines.append(f"  - k distribution (share of hits by steps skipped of 50): {s['k_distribution']}")
        if s.get("clip_score_by_outcome"):
            lines.append(f"  - CLIP score by outcome: {s['clip_score_by_outcome']}")
        for worker in s["workers"]:
            seconds = worker.get("profiled_seconds_per_step") or 0.0
            lines.append(
                f"  - worker {worker.get('address')} ({worker.get('pool')}, {Path(str(worker.get('model_id'))).name}): "
                f"profiled {seconds:.4f} s/step + {worker.get('profiled_overhead_seconds') or 0.0:.3f} s per image"
            )
        if s["allocation"]:
            lines.append(f"  - workers per pool over the run (router Stats): {s['allocation']}")
        if s["degrade_override_samples"]:
            lines.append(f"  - Stats samples with the monitor's degrade override on: {s['degrade_override_samples']}")
        if s["errors"]:
            lines.append(f"  - errors: {s['errors']}")
        if s["capped_by_machine"]:
            lines.append(f"  - **capped by the machine**, not a result: {'; '.join(s['harness']['failures'])}")
    lines += _fleet_table(runs)
    for comparison in report["comparisons"]:
        lines += _comparison(comparison)
    quality = report.get("quality")
    if quality:
        lines += ["", "## Quality", ""]
        lines += [f"- {key}: {json.dumps(value)}" for key, value in quality.items()]
    plots = [*PLOTS, "scale.png"] if scaled_runs(report) else PLOTS
    lines += ["", *[f"![{name}]({name})" for name in plots], ""]
    return "\n".join(lines)


def _fleet_table(runs: list[dict[str, Any]]) -> list[str]:
    """Saturation throughput per fleet and mode, for closed-loop runs."""
    saturated = [s for s in runs if s["concurrency"]]
    if not saturated:
        return []
    lines = [
        "",
        "## Saturation",
        "",
        "Closed loops: requests per second of the GPUs' own time (wall x time scale) over the measured "
        "phase, which began once the warm-up had sent its requests and the pools' split had held "
        "(settled: yes, no when the warm-up timed out first). The split is the workers per pool over the "
        "measured phase (mean of the router's Stats samples), next to the large GPUs the measured work "
        "asks for (its share of the GPU seconds, on the profiles); switches are the slots the monitor moved "
        "in the warm-up / the measured phase. The harness check (emulated fleets): large-only reaches "
        f"{harness.MIN_CAPACITY_RATIO:.0%} of its GPUs' capacity, the router and the cache each use at most "
        f"{harness.MAX_CPU_SHARE:.0%} of a core, and the 1-minute load average stays at most "
        f"{harness.MAX_LOAD_PER_CORE:g} per core over the measured phase; a run that fails it is capped by the "
        "machine, not a result.",
        "",
        "| gpus | pair | mode | routers | policy | clients | saturation (req/s) | hit rate | kappa | c | speedup "
        "| bound | of bound | split large / small | the work's large | switches | settled | time scale "
        "| router / cache CPU | load max |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in saturated:
        capped = s["capped_by_machine"]
        rate = "capped by the machine" if capped else s["saturation_rps"]
        speedup = "capped by the machine" if capped and s.get("speedup") is not None else s.get("speedup", "")
        share = (s["harness"] or {}).get("cpu_share_of_one_core", {})
        cpu = " / ".join(_pct(share.get(kind)) for kind in harness.CHECKED_CPU) if share else "not checked"
        split = " / ".join(str(s["allocation"].get(pool, {}).get("mean", 0)) for pool in ("large", "small"))
        phases = s["phases"]
        settled = {True: "yes", False: "no", None: ""}[phases["settled"]]
        work = (s.get("work_split") or {}).get("large_gpus", "")
        lines.append(
            f"| {s['gpus']} | {s['pair']} | {s['mode']} | {s['routers']} | {s['policy']} | {s['concurrency']} "
            f"| {rate} | {_pct(s['hit_rate'])} | {s['kappa']} | {s['c']} | {speedup} | {s.get('bound', '')} "
            f"| {s.get('speedup_over_bound') or ''} | {split} | {work} "
            f"| {phases['switches_warmup']} / {phases['switches_measured']} | {settled} | {s['time_scale']} | {cpu} "
            f"| {s['load_average']['max'] if s['load_average']['max'] is not None else 'n/a'} |"
        )
    lines += _dispatch_table(saturated)
    return lines


def _dispatch_table(runs: list[dict[str, Any]]) -> list[str]:
    """The routers' dispatch, for runs that recorded it (several routers, or their counters)."""
    rows = [s for s in runs if s.get("dispatch")]
    if not rows:
        return []
    lines = [
        "",
        "## Dispatch",
        "",
        "Each router gives a worker at most its capacity by its own count; with several routers only the "
        "sum over them (sampled from every router's Stats at once) shows a worker given more. Retries and "
        "refusals are the routers' own counters (`modm_router_retries_total` by status; a worker's full "
        "queue is RESOURCE_EXHAUSTED).",
        "",
        "| run | routers | saturation (req/s) | worker samples over capacity | most over | retried requests "
        "| router retries by status | errors | hits on large workers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in rows:
        d = s["dispatch"]
        retries: Counter[str] = Counter()
        for counters in d["router_metrics"]:
            retries.update(counters.get("retries", {}))
        lines.append(
            f"| {s['id']} | {d['routers']} | {s['saturation_rps']} | {_pct(d['over_capacity_share'])} "
            f"| {d['most_over_capacity']} | {d['retried_requests']} | {dict(retries) or 'none'} "
            f"| {d['errors'] or 'none'} | {d['large_took_hit']} |"
        )
    return lines


def _comparison(comparison: dict[str, Any]) -> list[str]:
    routers = f", {comparison['routers']} routers" if comparison.get("routers", 1) > 1 else ""
    policy = f", {comparison['policy']}" if comparison.get("policy") else ""
    fleet = f" ({comparison['gpus']} GPUs{', ' + comparison['pair'] if comparison['pair'] else ''}{policy}{routers})"
    lines = ["", f"## modm against large-only{fleet}", ""]
    if comparison["capped_by_machine"]:
        lines += ["**Capped by the machine**: these speedups measure this machine, not the system.", ""]
    for key in ("speedup_saturation", "speedup_throughput", "speedup_mean_latency", "speedup_mean_service"):
        if key in comparison:
            ratio = comparison.get(f"{key}_over_bound")
            tail = f" ({ratio} of the bound)" if ratio is not None else ""
            lines.append(f"- {key.replace('_', ' ')}: **{comparison[key]}x**{tail}")
    bound = comparison.get("bound")
    if bound:
        lines.append(
            f"- bound 1/((1-h) + h_i kappa c) = **{bound['speedup']}x** with h = {bound['hit_rate']} reused, "
            f"h_i = {bound['img2img_rate']} of them img2img hits (exact repeats run no step), "
            f"kappa = {bound['kappa']} (share of its steps a hit still runs), c = {bound['cost_ratio']} "
            f"(small / large seconds per step, {_C_SOURCES[bound['cost_ratio_source']]})"
        )
    served = comparison.get("bound_with_served_c")
    if served:
        lines.append(
            f"- the same bound with c = {served['cost_ratio']} as the router measured it while serving "
            f"(seconds per step run, batching included): **{served['speedup']}x**"
        )
    return lines


_C_SOURCES = {
    "profiled": "the workers' warm-up profiles",
    "served": "as the router measured them serving the run: the warm-up profiles were unusable",
}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def scaled_runs(report: dict[str, Any]) -> dict[str, dict[str, list[tuple[int, dict[str, Any]]]]]:
    """pair -> mode (modm's with its policy) -> (GPUs, run) of the one-router closed-loop runs the
    machine did not cap, by GPUs; empty unless some pair was run at several fleet sizes."""
    out: dict[str, dict[str, list[tuple[int, dict[str, Any]]]]] = {}
    for s in report["runs"]:
        if s.get("concurrency") and s.get("routers", 1) == 1 and not s.get("capped_by_machine"):
            label = f"modm ({s['policy']})" if s["mode"] == "modm" else s["mode"]
            out.setdefault(s["pair"], {}).setdefault(label, []).append((s["gpus"], s))
    for modes in out.values():
        for points in modes.values():
            points.sort(key=lambda point: point[0])
    if not any(len({g for points in modes.values() for g, _ in points}) > 1 for modes in out.values()):
        return {}
    return out


def rolling_hit_rate(records: Sequence[RequestRecord], window: int = 30) -> list[tuple[float, float]]:
    """(reply time, share of reuses among the last `window` served requests) in reply order."""
    served = sorted((r for r in records if r.ok), key=lambda r: r.done_s)
    out = []
    for i, record in enumerate(served):
        recent = served[max(0, i + 1 - window) : i + 1]
        out.append((record.done_s, sum(r.reused for r in recent) / len(recent)))
    return out
