"""The report's PNG plots (matplotlib, the `bench`/`monitor` extra; without it none are drawn)."""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modm.bench.records import Run


def draw(out: Path, runs: Mapping[str, Run], report: dict[str, Any]) -> list[Path]:
    if importlib.util.find_spec("matplotlib") is None:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from modm.bench.report import rolling_hit_rate, scaled_runs

    paths = []

    def save(figure: Any, name: str, title: str) -> None:
        figure.suptitle(title)
        figure.tight_layout()
        figure.savefig(out / name, dpi=110)
        plt.close(figure)
        paths.append(out / name)

    figure, axis = plt.subplots(figsize=(8, 4.5))
    for mode, run in runs.items():
        latencies = sorted(r.latency_s for r in run.records if r.ok)
        if latencies:
            axis.step(latencies, [(i + 1) / len(latencies) for i in range(len(latencies))], where="post", label=mode)
    slo = next(iter(report["runs"]), {}).get("slo_s")
    if slo:
        axis.axvline(slo, color="grey", linestyle="--", label=f"SLO {slo} s")
    axis.set_xscale("log")
    axis.set_xlabel("latency (s, log scale)")
    axis.set_ylabel("share of requests")
    axis.grid(alpha=0.3)
    axis.legend()
    save(figure, "latency.png", "Latency CDF")

    figure, axis = plt.subplots(figsize=(8, 4.5))
    for mode, run in runs.items():
        points = rolling_hit_rate(run.records)
        if points and any(r.reused for r in run.records):
            axis.plot([t / 60 for t, _ in points], [h for _, h in points], label=f"{mode} (last 30 requests)")
            axis.plot(
                [s.at / 60 for s in run.samples],
                [s.hit_rate for s in run.samples],
                linestyle=":",
                label=f"{mode} (router Stats window)",
            )
    axis.set_ylim(0, 1)
    axis.set_xlabel("minutes")
    axis.set_ylabel("hit rate (hits + exact repeats)")
    axis.grid(alpha=0.3)
    axis.legend()
    save(figure, "hit_rate.png", "Hit rate over time")

    figure, axis = plt.subplots(figsize=(8, 4.5))
    modes = [m for m, run in runs.items() if any(r.outcome == "hit" for r in run.records)]
    width = 0.8 / max(1, len(modes))
    counts = {mode: Counter(r.skipped_steps for r in runs[mode].records if r.outcome == "hit") for mode in modes}
    ks = sorted({k for hits in counts.values() for k in hits})
    for j, mode in enumerate(modes):
        offset = (j - (len(modes) - 1) / 2) * width
        axis.bar([i + offset for i in range(len(ks))], [counts[mode][k] for k in ks], width, label=mode)
    axis.set_xticks(range(len(ks)), [str(k) for k in ks])
    if modes:
        axis.legend()
    axis.set_xlabel("steps skipped k (of 50)")
    axis.set_ylabel("hits")
    axis.grid(alpha=0.3, axis="y")
    save(figure, "k_distribution.png", "k distribution of hits")

    figure, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for mode, run in runs.items():
        for pool, style in (("large", "-"), ("small", "--")):
            at = [s.at / 60 for s in run.samples if pool in s.pools]
            if at:
                workers = [s.pools[pool]["workers"] for s in run.samples if pool in s.pools]
                queued = [
                    s.pools[pool]["queue_depth"] + s.pools[pool]["in_flight"] for s in run.samples if pool in s.pools
                ]
                axes[0].step(at, workers, where="post", linestyle=style, label=f"{mode}: {pool}")
                axes[1].plot(at, queued, linestyle=style, label=f"{mode}: {pool}")
    axes[0].set_ylabel("workers per pool")
    axes[1].set_ylabel("queued + in flight")
    axes[1].set_xlabel("minutes")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    save(figure, "allocation.png", "Allocation and load over time (router Stats)")

    figure, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    axes[0].bar([s["id"] for s in report["runs"]], [s["throughput_rps"] or 0 for s in report["runs"]])
    axes[0].set_ylabel("throughput (requests/s)")
    for mode, run in runs.items():
        done = sorted(r.done_s for r in run.records if r.ok)
        axes[1].step([t / 60 for t in done], range(1, len(done) + 1), where="post", label=mode)
    axes[1].set_xlabel("minutes")
    axes[1].set_ylabel("completed requests")
    axes[1].legend()
    for axis in axes:
        axis.grid(alpha=0.3)
    save(figure, "throughput.png", "Throughput")

    fleets = scaled_runs(report)
    if fleets:
        pairs = sorted(fleets)
        figure, axes = plt.subplots(2, len(pairs), figsize=(5.5 * len(pairs), 8), squeeze=False)
        for column, pair in enumerate(pairs):
            top, bottom = axes[0][column], axes[1][column]
            for mode, points in sorted(fleets[pair].items()):
                gpus = [g for g, _ in points]
                top.plot(gpus, [s["saturation_rps"] for _, s in points], marker="o", label=mode)
                if mode.startswith("modm"):
                    speedups, bounds = [s.get("speedup") for _, s in points], [s.get("bound") for _, s in points]
                    bottom.plot(gpus, speedups, marker="o", label=f"{mode} / large-only")
                    bottom.plot(gpus, bounds, marker="x", linestyle="--", label=f"{mode}: bound")
            top.set_title(pair, fontsize="medium")
            top.set_ylabel("saturation (requests/s, GPU time)")
            bottom.set_ylabel("speedup over large-only")
            for axis in (top, bottom):
                axis.set_xscale("log", base=2)
                axis.set_xlabel("GPUs")
                axis.grid(alpha=0.3)
                axis.legend(fontsize="small")
        save(figure, "scale.png", "Capacity by fleet size (one router; capped runs left out)")
    return paths
