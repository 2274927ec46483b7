"""SLO under changing load (issue 16, benchmark 2): MoDM's SLO experiment on an emulated fleet.

The load is a compressed day of a production trace: the Alibaba trace's users and arrival times
over a window of it (`modm.bench.sessions`; its diurnal rise, the dip between its peaks and the
burst of a heavy user's session), thinned by whole sessions to a mean rate set as a share of
what large-only's GPUs serve, each session carrying consecutive DiffusionDB prompts (the users'
own reuse). The trace is built at run time from `--data DIR` and never committed.

Each policy serves the same arrivals, open loop, on a fresh `modm up --emulate N` stack:
slo-aware (the default), modm-a and modm-b with the monitor on (every stack starts at modm up's
default split), and large-only with every slot large, no monitor and no cache (MoDM's vanilla
baseline). All get the same settings (`stack_config`): the SLO, the large model one image per call
(its profile has no batch gain: a batch would only hold finished images back) and router queues
that refuse nothing, so every request is served and timed.

Per policy: latency p50/p99, the share over the SLO (errors count as over) per compressed hour
of the day and per load band, the degraded misses, the local scaler's slot switches (from the
monitor's log), the pool split over time (router Stats), the harness check
(`modm.bench.harness`, with the machine's load average the replay samples; large-only's
capacity is read while its queue never emptied) and the cache's lookup time per hour (a cache
short of CPU at the peak would slow every cached policy there). Times in the report are the
fleet's own (wall seconds / time scale), what the emulated A100s would take.

    .venv/bin/python benchmarks/slo_day.py --data DIR --out docs/bench/scale/slo

Runs, stacks and the trace go under `--work` (default bench-out/slo-day); report.json, report.md
and the PNGs under `--out`. `--report-only` redraws the report from the runs in `--work`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modm.bench import harness
from modm.bench.records import Mode, RequestRecord, Run, StatsSample
from modm.bench.report import percentile
from modm.bench.traces import TraceRequest
from modm.cli.up import DEFAULT_LARGE_PROFILE, DEFAULT_SMALL_PROFILE, Emulation

DEFAULT = "slo-aware"
REFERENCES = ("modm-a", "modm-b")
LARGE_ONLY = "large-only"
POLICIES = (DEFAULT, *REFERENCES, LARGE_ONLY)
STATS_EVERY_S = 2.0  # the router's Stats, for the pool split over time
MAX_QUEUE = 100_000  # router queue per pool: high enough that nothing is refused
BANDS = (0.5, 1.0, 1.5)  # edges of the load bands, in shares of large-only's capacity
BACKLOG_SPAN_IMAGES = 5  # a backlog measures capacity when it lasts this many large images
JUDGED_REQUESTS = 20  # the fewest requests of an hour or band the goal is judged on


@dataclass(frozen=True)
class Setup:
    """The fleet, the day and the SLO. `_s` fields are wall seconds unless named fleet seconds."""

    gpus: int = 16
    large_profile: str = DEFAULT_LARGE_PROFILE
    small_profile: str = DEFAULT_SMALL_PROFILE
    time_scale: float = 0.5
    day_s: float = 540.0  # the wall seconds the window is replayed in
    load: float = 0.6  # the window's mean rate over large-only's capacity
    start_day: float = 19.9915  # days after the trace's first request: 16:45 of its 21st day
    days: float = 0.5  # the window: 12 hours, the day's rise, peaks and burst and the fall after
    seed: int = 0  # which sessions the thinned window keeps
    slo_factor: float = 3.0  # the SLO in large images
    prompts: str = "diffusiondb-5k"

    @property
    def image_fleet_s(self) -> float:
        """One image of the large model at its default steps and size, in fleet seconds."""
        from modm.services.worker.device_profile import load_profile

        profile = load_profile(self.large_profile)
        overhead, per_step = profile.call_seconds(1, profile.width, profile.height)
        return overhead + profile.default_steps * per_step

    @property
    def slo_fleet_s(self) -> float:
        return self.slo_factor * self.image_fleet_s

    @property
    def slo_s(self) -> float:
        return self.slo_fleet_s * self.time_scale

    @property
    def capacity_rps(self) -> float:
        """Requests per wall second large-only's GPUs serve."""
        return self.gpus / (self.image_fleet_s * self.time_scale)

    @property
    def rate_rps(self) -> float:
        return self.load * self.capacity_rps

    @property
    def hours(self) -> int:
        return round(self.days * 24)

    @property
    def hour_s(self) -> float:
        """Wall seconds of one compressed hour of the trace."""
        return self.day_s / (self.days * 24)

    @property
    def compression(self) -> float:
        """Trace seconds per fleet second."""
        return self.days * 86400 / (self.day_s / self.time_scale)

    @property
    def emulation(self) -> Emulation:
        return Emulation(self.large_profile, self.small_profile, self.time_scale)


def build_day(data: Path, setup: Setup) -> tuple[list[TraceRequest], dict[str, Any]]:
    """The window's sessions at the setup's rate, each request at the models' default steps (the
    trace's own steps are dropped, so the SLO is a number of large images)."""
    from modm.bench.sessions import Window
    from modm.bench.trace_builder import session_trace

    window = Window(setup.rate_rps, setup.day_s, setup.start_day, setup.days, seed=setup.seed)
    requests, meta = session_trace(data, setup.prompts, window)
    return [replace(r, params={}) for r in requests], meta


def stack_config(policy: str, setup: Setup) -> str:
    """`modm up --config` for a policy's stack. A table's values are not time-scaled: the SLO is
    given in wall seconds."""
    lines = ["[large]", "max_batch_size = 1", "", "[router]", f"max_queue = {MAX_QUEUE}"]
    if policy != LARGE_ONLY:
        lines += ["", "[monitor]", f'policy = "{policy}"', f"slo_seconds = {setup.slo_s:.4f}"]
    return "\n".join(lines) + "\n"


def up_flags(policy: str, setup: Setup, config: Path) -> list[str]:
    from modm.bench.stack import up_args

    mode = LARGE_ONLY if policy == LARGE_ONLY else "modm"
    args = up_args(mode, workers=setup.gpus, monitor=policy != LARGE_ONLY, emulation=setup.emulation)
    return [*args, "--config", str(config), "--log-format", "json"]


@dataclass(frozen=True)
class SlotSwitch:
    at: float  # wall seconds after the replay's start
    slot: str
    to: str


def slot_switches(lines: Iterable[str], started_at: float) -> list[SlotSwitch]:
    """The local scaler's slot switches in the monitor's JSON log, timed from `started_at` (Unix)."""
    found = []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or entry.get("msg") != "switching slot":
            continue
        at = datetime.strptime(entry["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        found.append(SlotSwitch(round(at - started_at, 3), str(entry["slot"]), str(entry["to"])))
    return found


def within_slo(record: RequestRecord, slo_s: float) -> bool:
    return record.ok and record.latency_s <= slo_s


def hourly(records: Sequence[RequestRecord], setup: Setup) -> list[dict[str, Any]]:
    """Per compressed hour (by arrival): requests, the offered load over large-only's capacity,
    the share served within the SLO and the cache's mean lookup in fleet seconds (None for an
    hour with no request, or no lookup)."""
    rows = []
    for hour in range(setup.hours):
        mine = [r for r in records if min(int(r.scheduled_s // setup.hour_s), setup.hours - 1) == hour]
        within = sum(within_slo(r, setup.slo_s) for r in mine)
        lookups = [r.timings["lookup_seconds"] for r in mine if "lookup_seconds" in r.timings]
        rows.append(
            {
                "hour": hour,
                "requests": len(mine),
                "load": round(len(mine) / setup.hour_s / setup.capacity_rps, 3),
                "within_slo": round(within / len(mine), 4) if mine else None,
                "lookup_s": round(sum(lookups) / len(lookups) / setup.time_scale, 3) if lookups else None,
            }
        )
    return rows


def band_of(load: float) -> str:
    low = max((edge for edge in BANDS if edge <= load), default=0.0)
    high = min((edge for edge in BANDS if edge > load), default=None)
    return f"{low:g}-{high:g}" if high is not None else f">={low:g}"


def by_band(hours: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The hours grouped by offered load: requests and the share within the SLO in each band."""
    bands: dict[str, dict[str, Any]] = {}
    for row in sorted(hours, key=lambda r: r["load"]):
        if not row["requests"]:
            continue
        band = bands.setdefault(band_of(row["load"]), {"hours": 0, "requests": 0, "within": 0.0})
        band["hours"] += 1
        band["requests"] += row["requests"]
        band["within"] += row["within_slo"] * row["requests"]
    return {
        name: {"hours": b["hours"], "requests": b["requests"], "within_slo": round(b["within"] / b["requests"], 4)}
        for name, b in bands.items()
    }


def backlogged_rps(records: Sequence[RequestRecord], samples: Sequence[StatsSample], min_span_s: float) -> float | None:
    """Requests answered per wall second while the large pool kept a queue in consecutive Stats
    samples (every GPU busy), over such spans of at least `min_span_s`: an open loop's saturation
    throughput. None when the queue never lasted that long."""
    spans: list[tuple[float, float]] = []
    first: float | None = None
    last = 0.0
    for sample in [*samples, None]:
        queued = sample is not None and sample.pools.get("large", {}).get("queue_depth", 0) > 0
        if queued:
            assert sample is not None
            first = sample.at if first is None else first
            last = sample.at
            continue
        if first is not None and last - first >= min_span_s:
            spans.append((first, last))
        first = None
    if not spans:
        return None
    done = sum(1 for r in records if r.ok and any(a < r.done_s <= b for a, b in spans))
    return done / sum(b - a for a, b in spans)


def pool_split(samples: Sequence[StatsSample], setup: Setup) -> list[tuple[float, int, int]]:
    """(compressed hour, large workers, small workers) per Stats sample."""
    return [
        (
            round(s.at / setup.hour_s, 3),
            int(s.pools.get("large", {}).get("workers", 0)),
            int(s.pools.get("small", {}).get("workers", 0)),
        )
        for s in samples
    ]


def summarize(run: Run, extras: Mapping[str, Any], setup: Setup) -> dict[str, Any]:
    """One policy's numbers (latencies in fleet seconds) and whether the machine kept up."""
    records = run.records
    ok = [r.latency_s / setup.time_scale for r in records if r.ok]
    switches = [s for s in extras["switches"] if 0.0 <= s["at"] <= run.info.duration_s]
    mode = LARGE_ONLY if run.info.policy == LARGE_ONLY else "modm"
    saturated = backlogged_rps(records, run.samples, BACKLOG_SPAN_IMAGES * setup.image_fleet_s * setup.time_scale)
    check = harness.check(
        mode,
        duration_s=run.info.duration_s,
        cpu_seconds=run.info.cpu_seconds,
        saturation_wall_rps=saturated,
        capacity_rps=setup.capacity_rps if saturated is not None else None,
        loads=[load for _, load in run.info.load_average],
        cores=run.info.cores,
    )
    hours = hourly(records, setup)
    lookups = [row["lookup_s"] for row in hours if row["lookup_s"] is not None]
    return {
        "policy": run.info.policy,
        "requests": len(records),
        "errors": sum(not r.ok for r in records),
        "p50_s": round(percentile(ok, 50), 2) if ok else None,
        "p99_s": round(percentile(ok, 99), 2) if ok else None,
        "mean_s": round(sum(ok) / len(ok), 2) if ok else None,
        "within_slo": round(sum(within_slo(r, setup.slo_s) for r in records) / len(records), 4) if records else None,
        "reused": round(sum(r.reused for r in records if r.ok) / max(1, len(ok)), 4),
        "degraded": sum(r.degraded for r in records if r.ok),
        "switches": len(switches),
        "switch_hours": [round(s["at"] / setup.hour_s, 3) for s in switches],
        "hours": hours,
        "bands": by_band(hours),
        "pools": pool_split(run.samples, setup),
        "duration_s": run.info.duration_s,
        "elapsed_s": extras.get("elapsed_s"),
        "peak_lookup_s": max(lookups, default=None),
        "harness": check.to_dict() | {"capped_by_machine": check.capped_by_machine},
    }


def verdict(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The goal: the default at or above both references within the SLO in every hour and load
    band with at least `JUDGED_REQUESTS` requests (fewer are shown, not judged: one request
    decides them), with at most half the switches of either."""
    if DEFAULT not in results or not all(p in results for p in REFERENCES):
        return None
    default, refs = results[DEFAULT], [results[p] for p in REFERENCES]

    def behind(key: str, rows: Iterable[Any]) -> list[Any]:
        return [
            row
            for row in rows
            if default[key][row]["requests"] >= JUDGED_REQUESTS
            and default[key][row]["within_slo"] < max(r[key][row]["within_slo"] or 0.0 for r in refs)
        ]

    hours_behind = behind("hours", range(len(default["hours"])))
    bands_behind = behind("bands", [b for b in default["bands"] if all(b in r["bands"] for r in refs)])
    fewest = min(r["switches"] for r in refs)
    return {
        "hours_behind": hours_behind,
        "bands_behind": bands_behind,
        "switches": default["switches"],
        "fewest_reference_switches": fewest,
        "half_the_switches": default["switches"] <= fewest / 2,
        "met": not hours_behind and not bands_behind and default["switches"] <= fewest / 2,
    }


def run_policy(policy: str, setup: Setup, requests: Sequence[TraceRequest], work: Path) -> Run:
    """One policy on a fresh stack; the run and its extras (the slot switches, the wall time with
    the stack's start and stop) are saved under work/runs/<policy>."""
    from modm.bench.harness import StackMeter
    from modm.bench.replay import ReplayOptions, replay
    from modm.bench.stack import start_up, wait_for_pools

    began = time.monotonic()
    folder, home = work / "runs" / policy, work / "stack" / policy
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    config = home / "stack.toml"
    config.write_text(stack_config(policy, setup))
    flags = up_flags(policy, setup, config)
    print(f"[{policy}] starting modm up {' '.join(flags)}", flush=True)
    up = start_up(home, folder / "up.log", args=flags)
    try:
        wait_for_pools(up.address, ["large"])
        meter = StackMeter([up.proc.pid])
        meter.start()
        mode: Mode = "large-only" if policy == LARGE_ONLY else "modm"
        options = ReplayOptions(mode, stats_interval_s=STATS_EVERY_S)
        print(f"[{policy}] replaying {len(requests)} requests over {setup.day_s:.0f} s", flush=True)
        run = asyncio.run(replay(up.address, requests, [r.t for r in requests], options, trace_name="slo-day"))
        run.info.cpu_seconds, run.info.rss_mib = meter.used(), meter.rss_mib()
    finally:
        up.stop(signal.SIGINT, 120.0)
    run.info.gpus, run.info.policy, run.info.time_scale = setup.gpus, policy, setup.time_scale
    run.info.pair = f"{setup.large_profile}+{setup.small_profile}"
    run.info.capacity_rps = round(setup.capacity_rps, 4)
    monitor_log = home / "logs" / "monitor.log"
    lines = monitor_log.read_text().splitlines() if monitor_log.exists() else []
    extras = {
        "switches": [asdict(s) for s in slot_switches(lines, run.info.started_at)],
        "elapsed_s": round(time.monotonic() - began, 1),
    }
    run.save(folder)
    (folder / "extras.json").write_text(json.dumps(extras) + "\n")
    print(f"[{policy}] done in {extras['elapsed_s']:.0f} s", flush=True)
    return run


def build_report(setup: Setup, meta: Mapping[str, Any], results: Mapping[str, Any], command: str) -> dict[str, Any]:
    keep = ("window", "compression", "requests", "kinds", "session_lengths", "load", "prompts", "arrivals")
    return {
        "setup": asdict(setup)
        | {
            "image_fleet_s": round(setup.image_fleet_s, 3),
            "slo_fleet_s": round(setup.slo_fleet_s, 3),
            "capacity_fleet_rps": round(setup.capacity_rps * setup.time_scale, 4),
            "day_fleet_s": round(setup.day_s / setup.time_scale, 1),
            "trace_s_per_fleet_s": round(setup.compression, 2),
            "hours": setup.hours,
        },
        "trace": {k: meta[k] for k in keep if k in meta},
        "command": command,
        "policies": dict(results),
        "verdict": verdict(results),
        "flagged": [p for p, r in results.items() if r["harness"]["capped_by_machine"]],
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def markdown(report: Mapping[str, Any]) -> str:
    s, results = report["setup"], report["policies"]
    names = [p for p in POLICIES if p in results]
    lines = [
        "# SLO under changing load",
        "",
        f"{s['gpus']} emulated GPUs ({s['large_profile']} + {s['small_profile']}), time scale {s['time_scale']}: "
        f"a {s['hours']}-hour window of the trace replayed in {s['day_s']:.0f} wall s ({s['day_fleet_s']:.0f} fleet s, "
        f"{s['trace_s_per_fleet_s']:.0f} trace s per fleet s), mean load {s['load']} of large-only's capacity "
        f"({s['capacity_fleet_rps']} req/s). SLO {s['slo_factor']:g} x the large image ({s['image_fleet_s']:.2f} s) "
        f"= {s['slo_fleet_s']:.1f} s. Latencies in fleet seconds. Command: `{report['command']}`",
        "",
    ]
    if report["flagged"]:
        lines += [
            f"**Flagged** by the harness check (the machine, not the system, may have been the limit): "
            f"{', '.join(report['flagged'])}. Their numbers are not results.",
            "",
        ]
    lines += [
        "| policy | requests | errors | within SLO | p50 s | p99 s | degraded | reused | switches | peak hour's "
        "lookup s | max load average | capped |",
        "|---" * 12 + "|",
    ]
    for name in names:
        r = results[name]
        lines.append(
            f"| {name} | {r['requests']} | {r['errors']} | {_pct(r['within_slo'])} | {r['p50_s']} | {r['p99_s']} | "
            f"{r['degraded']} | {_pct(r['reused'])} | {r['switches']} | {r['peak_lookup_s'] or '-'} | "
            f"{r['harness']['max_load_average']} | "
            f"{'; '.join(r['harness']['failures']) or 'no'} |"
        )
    lines += ["", "Within the SLO per compressed hour (load: offered rate over large-only's capacity):", ""]
    lines += ["| hour | load | requests | " + " | ".join(names) + " |", "|---" * (3 + len(names)) + "|"]
    first = results[names[0]]["hours"]
    for i, row in enumerate(first):
        cells = [_pct(results[n]["hours"][i]["within_slo"]) for n in names]
        lines.append(f"| {row['hour']} | {row['load']:.2f} | {row['requests']} | " + " | ".join(cells) + " |")
    lines += ["", "Within the SLO per load band (the hours whose offered load falls in it):", ""]
    lines += ["| load band | hours | requests | " + " | ".join(names) + " |", "|---" * (3 + len(names)) + "|"]
    for band, row in results[names[0]]["bands"].items():
        cells = [_pct(results[n]["bands"].get(band, {}).get("within_slo")) for n in names]
        lines.append(f"| {band} | {row['hours']} | {row['requests']} | " + " | ".join(cells) + " |")
    v = report["verdict"]
    if v is not None:
        lines += [
            "",
            f"Goal ({DEFAULT} at or above {' and '.join(REFERENCES)} in every hour and band of at least "
            f"{JUDGED_REQUESTS} requests, at most half their switches): {'met' if v['met'] else 'not met'}; "
            f"behind in hours {v['hours_behind'] or 'none'}, bands {v['bands_behind'] or 'none'}; "
            f"{v['switches']} switches against {v['fewest_reference_switches']}.",
        ]
    lines += ["", "![SLO attainment per hour](slo_by_hour.png)", "", "![Pool split over time](pools.png)", ""]
    return "\n".join(lines)


def plot(report: Mapping[str, Any], out: Path) -> list[Path]:
    """slo_by_hour.png (within the SLO per hour, per policy, over the offered load) and pools.png
    (large GPUs over the day per monitored policy, with the slot switches)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["policies"]
    names = [p for p in POLICIES if p in results]
    hours = results[names[0]]["hours"]
    figure, axis = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        x = [row["hour"] + (j - (len(names) - 1) / 2) * width for row in results[name]["hours"]]
        axis.bar(x, [row["within_slo"] or 0.0 for row in results[name]["hours"]], width, label=name)
    axis.set_xlabel("hour of the compressed day")
    axis.set_ylabel("share within the SLO")
    axis.set_ylim(0, 1.05)
    load_axis = axis.twinx()
    load_axis.plot([r["hour"] for r in hours], [r["load"] for r in hours], "k.-", label="offered load")
    load_axis.axhline(1.0, color="grey", linestyle=":")
    load_axis.set_ylabel("offered load / large-only capacity")
    axis.legend(loc="upper left", fontsize="small")
    figure.suptitle("SLO attainment per hour")
    figure.tight_layout()
    paths = [out / "slo_by_hour.png"]
    figure.savefig(paths[0], dpi=110)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(10, 4.5))
    for name in names:
        if name == LARGE_ONLY:
            continue
        points = results[name]["pools"]
        line = axis.step([p[0] for p in points], [p[1] for p in points], where="post", label=name)[0]
        for at in results[name]["switch_hours"]:
            axis.axvline(at, color=line.get_color(), alpha=0.15)
    axis.set_xlabel("hour of the compressed day")
    axis.set_ylabel("large GPUs (the rest small)")
    axis.set_ylim(0, report["setup"]["gpus"] + 0.5)
    load_axis = axis.twinx()
    load_axis.plot([r["hour"] + 0.5 for r in hours], [r["load"] for r in hours], "k.:", label="offered load")
    load_axis.set_ylabel("offered load / large-only capacity")
    axis.legend(loc="upper left", fontsize="small")
    figure.suptitle("Pool split over the day (router Stats; faint lines: slot switches)")
    figure.tight_layout()
    paths.append(out / "pools.png")
    figure.savefig(paths[1], dpi=110)
    plt.close(figure)
    return paths


def main() -> None:
    defaults = Setup()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="the folder holding the prompt files and the arrival trace")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/scale/slo"), help="report folder")
    parser.add_argument("--work", type=Path, default=Path("bench-out/slo-day"), help="runs, stacks and the trace")
    parser.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated, of {', '.join(POLICIES)}")
    parser.add_argument("--gpus", type=int, default=defaults.gpus)
    parser.add_argument("--time-scale", type=float, default=defaults.time_scale)
    parser.add_argument("--day-s", type=float, default=defaults.day_s, help="wall seconds the window is replayed in")
    parser.add_argument("--load", type=float, default=defaults.load, help="mean rate over large-only's capacity")
    parser.add_argument("--start-day", type=float, default=defaults.start_day)
    parser.add_argument("--days", type=float, default=defaults.days)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--slo-factor", type=float, default=defaults.slo_factor)
    parser.add_argument("--report-only", action="store_true", help="redraw the report from the runs in --work")
    args = parser.parse_args()
    setup = Setup(
        gpus=args.gpus,
        time_scale=args.time_scale,
        day_s=args.day_s,
        load=args.load,
        start_day=args.start_day,
        days=args.days,
        seed=args.seed,
        slo_factor=args.slo_factor,
    )
    policies = [p for p in args.policies.split(",") if p]
    unknown = set(policies) - set(POLICIES)
    if unknown:
        parser.error(f"unknown policies {', '.join(sorted(unknown))}")
    meta_path, setup_path, command_path = (args.work / name for name in ("trace-meta.json", "setup.json", "command"))
    if args.report_only:  # the setup the runs were made with
        setup = Setup(**json.loads(setup_path.read_text()))
    else:
        if args.data is None:
            parser.error("--data DIR is needed to build the day")
        signal.signal(signal.SIGTERM, _interrupt)  # unwinds, so the stack is stopped
        try:
            requests, meta = build_day(args.data, setup)
        except (OSError, ValueError) as error:
            parser.error(str(error))
        args.work.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        setup_path.write_text(json.dumps(asdict(setup), indent=2) + "\n")
        command_path.write_text(command_line(sys.argv[1:]))  # what the report names, redrawn or not
        print(f"{len(requests)} requests, compression {meta['compression']} (trace s per wall s)", flush=True)
        for policy in policies:
            run_policy(policy, setup, requests, args.work)
    meta = json.loads(meta_path.read_text())
    results = {}
    for policy in POLICIES:
        folder = args.work / "runs" / policy
        if (folder / "run.json").exists():
            extras = json.loads((folder / "extras.json").read_text())
            results[policy] = summarize(Run.load(folder), extras, setup)
    args.out.mkdir(parents=True, exist_ok=True)
    report = build_report(setup, meta, results, command_path.read_text())
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "report.md").write_text(markdown(report))
    for path in [args.out / "report.json", args.out / "report.md", *plot(report, args.out)]:
        print(f"wrote {path}")
    print(markdown(report))


def command_line(argv: Sequence[str]) -> str:
    """The command as run, with the data folder written as $DATA: where it lives is the team's."""
    words, hide = ["benchmarks/slo_day.py"], False
    for word in argv:
        words.append("$DATA" if hide else "--data=$DATA" if word.startswith("--data=") else word)
        hide = word == "--data"
    return " ".join(words)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
