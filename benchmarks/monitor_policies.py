"""Compare the monitor's policies in the discrete-event simulator.

Same traces for every policy: steady, ramp up, burst, ramp down (services/monitor/traces.py),
their rate a share of what the fleet serves with the mixture at the trace's hit rate, at
N = 4, 16 and 64 GPUs, SD3.5-Large 91.5 s and SDXL 16.5 s per 50-step image (MoDM's MI210,
`simulator.MI210`, priced as the monitor prices Stats), a 30 s model load per switch, a 300 s
SLO and 180 s monitor windows. Policies:

- all-large: every GPU on the large model and no cache (every request a full large run), the
  baseline MoDM is measured against;
- modm-a / modm-b: MoDM's variants with PID smoothing;
- slo-aware: the default.

Every run starts from variant B's split for the trace's starting load (all-large: N large).
Metrics are averaged over `--seeds` arrival seeds.

    python benchmarks/monitor_policies.py [--gpus 4,16,64] [--seeds 3] [--out bench-out/monitor]

Writes results.json, results.md and (with matplotlib) one PNG per fleet size and trace.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

from modm.services.monitor.modm_reference import proportional_target
from modm.services.monitor.observations import Allocation, Fleet, PoolState, Window
from modm.services.monitor.plots import plot_runs
from modm.services.monitor.policy import POLICIES
from modm.services.monitor.simulator import MI210, Result, simulate
from modm.services.monitor.traces import DEFAULT_K_DISTRIBUTION, Scenario, mixture_capacity_per_min, standard_scenarios

POLICY_ORDER = ("all-large", "modm-a", "modm-b", "slo-aware")
HIT_RATE = 0.7
SLO_S = 300.0
SWITCH_S = 30.0  # MI210 reports no load time: the fleet's assumed one
COLUMNS = (
    ("throughput_per_min", "req/min", "{:.1f}"),
    ("mean_latency_s", "mean s", "{:.0f}"),
    ("p99_latency_s", "p99 s", "{:.0f}"),
    ("over_slo_share", ">SLO", "{:.1%}"),
    ("degraded_share", "degraded", "{:.1%}"),
    ("switches", "switches", "{:.0f}"),
    ("large_gpu_hours", "large GPU-h", "{:.1f}"),
    ("small_gpu_hours", "small GPU-h", "{:.1f}"),
)


def initial_split(gpus: int, scenario: Scenario, capacity: float) -> Allocation:
    start = Window(
        seconds=180.0,
        request_rate_per_min=scenario.load(0.0) * capacity,
        hit_rate=scenario.hit_rate(0.0),
        k_distribution=DEFAULT_K_DISTRIBUTION,
        large=PoolState(gpus, MI210.large),
        small=PoolState(0, MI210.small),
    )
    large = proportional_target(start, gpus)[0]
    return Allocation(large, gpus - large)


def metrics(result: Result) -> dict[str, float]:
    seconds = result.gpu_seconds
    large = sum(v for k, v in seconds.items() if k.endswith("_large"))
    small = sum(v for k, v in seconds.items() if k.endswith("_small"))
    return {
        "throughput_per_min": result.throughput_per_min,
        "mean_latency_s": result.mean_latency_s,
        "p99_latency_s": result.p99_latency_s,
        "over_slo_share": result.over_slo_share,
        "degraded_share": result.degraded_share,
        "hits_on_large": result.hits_on_large,
        "switches": result.switches,
        "large_gpu_hours": large / 3600,
        "small_gpu_hours": small / 3600,
        "loading_gpu_hours": seconds.get("loading", 0.0) / 3600,
        "requests": result.requests,
    }


def run(gpus: int, scenario: Scenario, seeds: int) -> tuple[dict[str, dict[str, float]], dict[str, Result]]:
    capacity = mixture_capacity_per_min(gpus, MI210.large, MI210.small, HIT_RATE, DEFAULT_K_DISTRIBUTION)
    fleet = Fleet(gpus, slo_seconds=SLO_S, switch_seconds=SWITCH_S)
    start = initial_split(gpus, scenario, capacity)
    rows: dict[str, dict[str, float]] = {}
    first: dict[str, Result] = {}
    for name in POLICY_ORDER:
        per_seed = []
        for seed in range(seeds):
            arrivals = scenario.arrivals(capacity, seed=1000 * gpus + seed)
            if name == "all-large":  # no cache: every request is a full large run
                arrivals = [replace(a, hit=False, skipped_steps=0) for a in arrivals]
            initial = Allocation(gpus, 0) if name == "all-large" else start
            result = simulate(arrivals, POLICIES[name], fleet, initial)
            per_seed.append(metrics(result))
            first.setdefault(name, result)
        rows[name] = {key: statistics.fmean(m[key] for m in per_seed) for key in per_seed[0]}
    return rows, first


def markdown(table: list[dict[str, object]]) -> str:
    header = ["N", "trace", "policy", *(label for _, label, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table:
        cells = [str(row["gpus"]), str(row["trace"]), str(row["policy"])]
        cells += [fmt.format(row[key]) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", default="4,16,64")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--duration-s", type=float, default=7200.0)
    parser.add_argument("--out", type=Path, default=Path("bench-out/monitor"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    table: list[dict[str, object]] = []
    plotted = []
    for gpus in (int(n) for n in args.gpus.split(",")):
        for scenario in standard_scenarios(args.duration_s, HIT_RATE):
            rows, first = run(gpus, scenario, args.seeds)
            table += [{"gpus": gpus, "trace": scenario.name, "policy": name, **rows[name]} for name in POLICY_ORDER]
            png = args.out / f"N{gpus}-{scenario.name}.png"
            if plot_runs(first, png, f"N = {gpus}, {scenario.name} (seed 0)"):
                plotted.append(png.name)
    elapsed = time.perf_counter() - began
    setup = {
        "large_s": MI210.large.full_run_seconds,
        "small_s": MI210.small.full_run_seconds,
        "switch_s": SWITCH_S,
        "slo_s": SLO_S,
        "window_s": 180.0,
        "hit_rate": HIT_RATE,
        "k_distribution": DEFAULT_K_DISTRIBUTION,
        "duration_s": args.duration_s,
        "seeds": args.seeds,
        "elapsed_s": round(elapsed, 1),
    }
    (args.out / "results.json").write_text(json.dumps({"setup": setup, "rows": table, "plots": plotted}, indent=2))
    text = markdown(table)
    intro = (
        f"Simulated, {args.seeds} seed(s), {args.duration_s / 3600:.1f} h traces, SLO {SLO_S:.0f} s, "
        f"hit rate {HIT_RATE}; all-large serves without a cache. GPU-h: busy + idle per pool.\n\n"
    )
    (args.out / "results.md").write_text(intro + text)
    print(intro + text)
    print(f"{len(table)} rows in {elapsed:.0f}s; wrote {args.out}/results.json, results.md, {len(plotted)} PNG")


if __name__ == "__main__":
    main()
