"""Benchmarks 1 and 4 of issue 16: saturation throughput at 4, 16 and 64 emulated A100s, and two
routers over the same 64 GPUs. Writes the report to docs/bench/scale/ (method: its README.md).

    .venv/bin/python benchmarks/scale.py --dry-run     # the plan and its estimated time
    .venv/bin/python benchmarks/scale.py               # every run, then the report

For each model pair, fleet size and mode it runs one `modm bench --emulate` (a fresh stack, a
closed loop over diffusiondb-5k: a warm-up, then a measured phase). modm runs twice where the
monitor is measured: at the split the work asks for, held (`static`), and with the monitor
(`modm-b`, at 16 GPUs), since at saturation no policy of the monitor holds that split yet
(docs/bench/scale/README.md). Then one more run: modm on 64 GPUs of the first pair with two routers.
Runs go to `--work` (kept, so `--resume` skips what is done and `--report-only` redraws the report).
modm's split is the one the work of the same fleet's nirvana run asks for (run just before it:
the same trace, warm-up and cache, every hit priced at the small model's steps).

Each run's time scale is chosen so that the machine serves about `WALL_RPS` requests a second
(a larger scale is a slower emulated fleet): the cache's MiniLM embedder costs about 86 ms of CPU
per request and the router about 10 ms, and the harness check wants each under half a core, on
a 2-core machine that also runs every worker. Throughputs are reported in the GPUs' own time,
so runs at different scales compare.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from modm.bench import report as reporting
from modm.bench.records import Run
from modm.services.worker.device_profile import DeviceProfile, load_profile

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "benchmarks" / "traces" / "diffusiondb-5k.jsonl"
PAIRS = (("sd3.5-large-a100", "sdxl-a100"), ("flux.1-dev-a100", "sana-1.6b-a100"))
GPUS = (4, 16, 64)
MODES = ("large-only", "nirvana", "modm", "small-only")  # nirvana's run gives modm its first split
TWO_ROUTERS = (PAIRS[0], 64)  # benchmark 4: modm with two routers, against the one-router run
# The monitor's policy where modm runs with it, and at which fleet sizes. modm-b sizes the pools
# by the misses' share of the GPU work, what a saturated fleet needs; the default (slo-aware)
# sizes them by predicted queueing against the SLO, which in a closed loop is set by the number of
# clients, not by the work. Both misjudge the small pool at saturation (README), so the capacity
# figures hold the work's split and these runs show what the monitor does with it.
POLICY = "modm-b"
MONITORED_GPUS = (16,)
# The router's Stats window the policy decides on, in the fleet's seconds: the router's own
# default (and MoDM's), not `modm up`'s 60 s, so that a window holds enough requests for a steady
# hit rate; and a round every 30 s, not 15: modm-b moves whenever its rounded target does, and a
# target on the edge between two splits flips between them (each flip drains a worker and loads a
# model), so rounds twice as far apart halve what flipping costs.
WINDOW_S = 180.0
INTERVAL_S = 30.0
# Requests a second the machine is asked to serve (wall clock), by whether the mode reads the
# cache, for 16 GPUs and more: the cache's embedder took 84-86 ms of CPU per request at 16 GPUs
# (39% of a core at 4.5/s), the router about 10 ms (12% at 12/s). At 4 GPUs fewer lookups share
# the embedder's batches and a request took up to twice as much.
WALL_RPS = {True: 4.5, False: 12.0}
SMALL_FLEET_WALL_RPS = {True: 3.0, False: 12.0}
# What each mode is expected to serve over large-only, to size its time scale (above the bounds
# of diffusiondb-5k's reuse, so the machine is never asked for more than WALL_RPS).
GAIN = {"modm": 1.5, "nirvana": 1.3, "large-only": 1.0}
# Clients per GPU: a full batch of 4 on every worker (the router gives a worker no more), so that
# the monitor prices a saturated GPU's jobs right (its pool model divides the service time it
# measures by the batch capacity: at 3 clients per GPU a busy large pool read as 70% used).
CLIENTS_PER_GPU = 4
WARMUP = 250  # requests before measuring: the cache holds the trace's first 300 prompts at least
SETTLE_S = 75.0  # with the monitor: the pools' split must have held this long (2 of its rounds)
SETTLE_TIMEOUT_S = 400.0  # measure anyway after this long, flagged not settled
# Requests of the measured phase per GPU (at least MIN_MEASURED), the same in every mode of a
# fleet: each large-only GPU serves 16 images, 4 request latencies (a client waits for 4 images).
MEASURED_PER_GPU = 16
MIN_MEASURED = 300
# Estimates of wall time not spent serving: starting a stack (its workers import, load and warm
# up in parallel on 2 cores) and stopping it; a move or so of the monitor's from its first split
# (draining a large worker's batch and loading the small model), in the fleet's own seconds.
START_S = 15.0
START_S_PER_GPU = 0.8
CONVERGE_S = 30.0
SLO_S = 10.0  # `modm bench`'s default; a closed loop's latencies say nothing about an SLO


@dataclass(frozen=True)
class Spec:
    """One `modm bench` run (`policy`: modm's, static or the monitor's)."""

    pair: tuple[str, str]
    gpus: int
    mode: str
    routers: int = 1
    policy: str = ""

    @property
    def profiles(self) -> tuple[DeviceProfile, DeviceProfile]:
        return load_profile(self.pair[0]), load_profile(self.pair[1])

    @property
    def monitored(self) -> bool:
        return self.mode == "modm" and self.policy != "static"

    @property
    def rid(self) -> str:
        """The run's folder, as `modm bench` names it."""
        policy = f"-{self.policy}" if self.mode == "modm" else ""
        tail = f"-{self.routers}routers" if self.routers > 1 else ""
        return f"{self.mode}-{self.gpus}gpu-{self.pair[0]}+{self.pair[1]}{policy}{tail}"

    @property
    def clients(self) -> int:
        return CLIENTS_PER_GPU * self.gpus

    @property
    def measure(self) -> int:
        return max(MIN_MEASURED, MEASURED_PER_GPU * self.gpus)

    def expected_rps(self) -> float:
        """Requests a second the fleet should serve in its own time: large-only's N / image time
        times the mode's gain; small-only's N / (image time at the batch its clients fill)."""
        large, small = self.profiles
        if self.mode == "small-only":
            return self.gpus / image_seconds(small, 4)
        return self.gpus / image_seconds(large, 1) * GAIN[self.mode]

    def time_scale(self) -> float:
        """Wall seconds per GPU second such that the machine serves about WALL_RPS requests a
        second; rounded up to two significant digits."""
        cached = self.mode in ("modm", "nirvana")
        rps = (WALL_RPS if self.gpus >= 16 else SMALL_FLEET_WALL_RPS)[cached]
        return round_up(self.expected_rps() / rps)

    def estimate_s(self) -> float:
        """Wall seconds the run should take: start, warm-up, measured phase and the last replies."""
        rate, scale = self.expected_rps(), self.time_scale()
        warm = max(WARMUP / rate, SETTLE_S) + CONVERGE_S if self.monitored else WARMUP / rate
        serving = warm + self.measure / rate + self.clients / rate
        large = self.profiles[0 if self.mode != "small-only" else 1]
        return START_S + START_S_PER_GPU * self.gpus + large.load_seconds * scale + serving * scale

    def command(self, work: Path, large_slots: int | None = None) -> list[str]:
        """`modm bench`'s arguments; modm's stack starts with `large_slots` large GPUs (default
        all: what an empty cache asks for)."""
        large, small = self.pair
        args = [sys.executable, "-m", "modm.cli.main", "bench", "--emulate", str(self.gpus)]
        args += ["--large-profile", large, "--small-profile", small, "--time-scale", str(self.time_scale())]
        args += ["--trace", str(TRACE), "--mode", self.mode, "--concurrency", str(self.clients)]
        args += ["--warmup", str(WARMUP), "--measure", str(self.measure), "--window", str(WINDOW_S)]
        args += ["--out", str(work), "--data-dir", str(work / "stack")]
        if self.mode == "modm":  # the other modes have no monitor: their split never moves
            slots = self.gpus if large_slots is None else large_slots
            args += ["--large-slots", str(slots), "--routers", str(self.routers)]
            if self.monitored:
                args += ["--policy", self.policy, "--monitor-interval", str(INTERVAL_S)]
                args += ["--settle", str(SETTLE_S), "--settle-timeout", str(SETTLE_TIMEOUT_S)]
            else:
                args += ["--no-monitor"]
        return args


def start_split(spec: Spec, work: Path) -> int | None:
    """Large GPUs for modm's split (held, or the monitor's first): the split at which the measured
    requests of the same fleet's nirvana run would finish soonest, each pool working through its
    share in parallel (misses at the large model's image time; img2img hits at the small model's
    overhead and the share of its steps they run, or at the large model's where no GPU is small).
    Rounding the large pool's share of the work instead leaves a small fleet without a small GPU
    when the share is above (N - 0.5) / N, and its hits then cost the large model's steps.
    None without that run."""
    folder = work / "runs" / Spec(spec.pair, spec.gpus, "nirvana").rid
    if not (folder / "run.json").exists():
        return None
    large, small = spec.profiles
    records = [r for r in Run.load(folder).measured if r.ok]
    misses_s = image_seconds(large, 1) * sum(r.outcome in ("miss", "bypassed") for r in records)
    shares = [1.0 - r.skipped_steps / r.total_steps for r in records if r.outcome == "hit" and r.total_steps]
    on_large, on_small = (
        len(shares) * p.overhead_seconds + sum(shares) * p.default_steps * p.seconds_per_step for p in (large, small)
    )
    if misses_s + on_small <= 0:
        return None

    def makespan(n: int) -> float:
        if n == spec.gpus:
            return (misses_s + on_large) / n
        return max(misses_s / n, on_small / (spec.gpus - n))

    return min(range(1, spec.gpus + 1), key=makespan)


def image_seconds(profile: DeviceProfile, batch: int) -> float:
    """Seconds per image at the profile's size and default steps, in calls of `batch` images."""
    overhead, per_step = profile.call_seconds(batch, profile.width, profile.height)
    return (overhead + profile.default_steps * per_step) / batch


def round_up(value: float) -> float:
    """`value` rounded up to two significant digits."""
    step = 10 ** (math.floor(math.log10(value)) - 1)
    return round(math.ceil(value / step - 1e-9) * step, 10)


def plan(pairs: list[tuple[str, str]], gpus: list[int], modes: list[str], two_routers: bool) -> list[Spec]:
    """Every run, each pair and fleet in mode order (nirvana's before modm's, whose split it
    gives); the monitored run after the static one, and the two-router run after its twin."""
    specs = []
    for pair in pairs:
        for n in gpus:
            for mode in modes:
                if mode != "modm":
                    specs.append(Spec(pair, n, mode))
                    continue
                specs.append(Spec(pair, n, mode, policy="static"))
                if two_routers and (pair, n) == TWO_ROUTERS:
                    specs.append(Spec(pair, n, mode, routers=2, policy="static"))
                if n in MONITORED_GPUS:
                    specs.append(Spec(pair, n, mode, policy=POLICY))
    return specs


def write_report(work: Path, docs: Path) -> list[Path]:
    """The report of every run under `work`, written to `docs` (report.json, report.md, PNGs)."""
    runs = {p.name: Run.load(p) for p in sorted((work / "runs").glob("*")) if (p / "run.json").exists()}
    data = reporting.build(runs, slo_s=SLO_S, trace=str(TRACE.relative_to(ROOT)))
    return reporting.write(docs, runs, data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "bench-out" / "scale", help="runs, logs and stacks")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "bench" / "scale", help="where the report goes")
    parser.add_argument("--gpus", type=int, action="append", help="only these fleet sizes (repeat)")
    parser.add_argument("--pair", action="append", help="only these pairs, as large+small (repeat)")
    parser.add_argument("--mode", action="append", choices=MODES, help="only these modes (repeat)")
    parser.add_argument("--no-two-routers", action="store_true", help="skip benchmark 4's two-router run")
    parser.add_argument("--resume", action="store_true", help="skip the runs already in --work")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its estimated time only")
    parser.add_argument("--report-only", action="store_true", help="redraw the report from the runs in --work")
    args = parser.parse_args(argv)
    pairs = [p for p in PAIRS if args.pair is None or "+".join(p) in args.pair]
    specs = plan(pairs, args.gpus or list(GPUS), args.mode or list(MODES), not args.no_two_routers)
    failed: list[str] = []
    if not args.report_only:
        total = sum(spec.estimate_s() for spec in specs)
        for spec in specs:
            print(
                f"{spec.rid:55} time scale {spec.time_scale():<5g} clients {spec.clients:<4} "
                f"measured {spec.measure:<5} about {spec.estimate_s() / 60:.1f} min"
            )
        print(f"{len(specs)} runs, about {total / 60:.0f} minutes")
        if args.dry_run:
            return 0
        for spec in specs:
            if args.resume and (args.work / "runs" / spec.rid / "run.json").exists():
                continue
            began = time.monotonic()
            slots = start_split(spec, args.work) if spec.mode == "modm" else None
            done = subprocess.run(spec.command(args.work, slots), cwd=ROOT, check=False)
            print(f"[{spec.rid}] exit {done.returncode} after {(time.monotonic() - began) / 60:.1f} min", flush=True)
            if done.returncode:
                failed.append(spec.rid)
        if failed:
            print(f"failed: {', '.join(failed)}", file=sys.stderr)
    for path in write_report(args.work, args.docs):
        print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
