"""Benchmarks 1 and 4 of issue 16: saturation throughput at 4, 16 and 64 emulated A100s, and two
routers over the same 64 GPUs. Writes the report to docs/bench/scale/ (method: its README.md).

    .venv/bin/python benchmarks/scale.py --dry-run     # the plan and its estimated time
    .venv/bin/python benchmarks/scale.py               # every run, then the report

For each model pair, fleet size and mode it runs one `modm bench --emulate` (a fresh stack, a
closed loop over diffusiondb-5k: a warm-up until the pools' split has held, then a measured
phase), then one more: modm on 64 GPUs of the first pair with two routers. Runs go to `--work`
(kept, so `--resume` skips what is done and the report can be redrawn with `--report-only`).

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
MODES = ("modm", "large-only", "nirvana", "small-only")
TWO_ROUTERS = (PAIRS[0], 64)  # benchmark 4: modm with two routers, against the one-router run
# modm-b sizes the pools by the misses' share of the GPU work, what a saturated fleet needs; the
# default policy sizes them by predicted queueing against the SLO, which in a closed loop is set by
# the number of clients, not by the work (docs/bench/scale/README.md).
POLICY = "modm-b"
# Requests a second the machine is asked to serve (wall clock): the cache's embedder takes about
# 86 ms of CPU per request (39% of a core at 4.5/s), the router about 10 ms (12% at 12/s).
WALL_RPS = {"modm": 4.5, "nirvana": 4.5, "large-only": 12.0, "small-only": 12.0}
# What each mode is expected to serve over large-only, to size its time scale (modm and nirvana
# above their bounds measured so far, so the machine is never asked for more than WALL_RPS).
GAIN = {"modm": 1.5, "nirvana": 1.3, "large-only": 1.0}
# Clients per GPU: each GPU busy and a request waiting behind it; small-only also fills the small
# model's batches of 4 (its only gain from batching).
CLIENTS_PER_GPU = {"small-only": 5}
DEFAULT_CLIENTS_PER_GPU = 3
WARMUP = 300  # requests before measuring: the cache holds the trace's first 300 prompts at least
SETTLE_S = 60.0  # modm: the pools' split must have held this long (4 of the monitor's 15 s rounds)
SETTLE_TIMEOUT_S = 400.0  # measure anyway after this long, flagged not settled
# The measured phase sends this many times 3 requests per GPU, the same in every mode of a fleet:
# about 6 request latencies of large-only (its 3 clients per GPU wait 3 image times each).
MEASURED_LATENCIES = 6
MIN_MEASURED = 300
# Estimates of wall time not spent serving: starting a stack (its workers import, load and warm
# up in parallel on 2 cores) and stopping it; the monitor's moves from every GPU large to the
# split modm-b wants (a few slots, each draining a large worker and loading the small model).
START_S = 15.0
START_S_PER_GPU = 0.8
CONVERGE_S = 150.0  # the fleet's own seconds
SLO_S = 10.0  # `modm bench`'s default; a closed loop's latencies say nothing about an SLO


@dataclass(frozen=True)
class Spec:
    """One `modm bench` run."""

    pair: tuple[str, str]
    gpus: int
    mode: str
    routers: int = 1

    @property
    def profiles(self) -> tuple[DeviceProfile, DeviceProfile]:
        return load_profile(self.pair[0]), load_profile(self.pair[1])

    @property
    def rid(self) -> str:
        tail = f"-{self.routers}routers" if self.routers > 1 else ""
        return f"{self.mode}-{self.gpus}gpu-{self.pair[0]}+{self.pair[1]}{tail}"

    @property
    def clients(self) -> int:
        return CLIENTS_PER_GPU.get(self.mode, DEFAULT_CLIENTS_PER_GPU) * self.gpus

    @property
    def measure(self) -> int:
        return max(MIN_MEASURED, MEASURED_LATENCIES * DEFAULT_CLIENTS_PER_GPU * self.gpus)

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
        return round_up(self.expected_rps() / WALL_RPS[self.mode])

    def estimate_s(self) -> float:
        """Wall seconds the run should take: start, warm-up, measured phase and the last replies."""
        rate, scale = self.expected_rps(), self.time_scale()
        warm = max(WARMUP / rate, SETTLE_S) + CONVERGE_S if self.mode == "modm" else WARMUP / rate
        serving = warm + self.measure / rate + self.clients / rate
        large = self.profiles[0 if self.mode != "small-only" else 1]
        return START_S + START_S_PER_GPU * self.gpus + large.load_seconds * scale + serving * scale

    def command(self, work: Path) -> list[str]:
        large, small = self.pair
        args = [sys.executable, "-m", "modm.cli.main", "bench", "--emulate", str(self.gpus)]
        args += ["--large-profile", large, "--small-profile", small, "--time-scale", str(self.time_scale())]
        args += ["--trace", str(TRACE), "--mode", self.mode, "--concurrency", str(self.clients)]
        args += ["--warmup", str(WARMUP), "--measure", str(self.measure)]
        args += ["--out", str(work), "--data-dir", str(work / "stack")]
        if self.mode == "modm":  # the other modes have no monitor: their split never moves
            # An empty cache makes every request a miss, and the monitor then wants every GPU
            # large: starting there spares the warm-up the moves from an arbitrary even split.
            args += ["--policy", POLICY, "--large-slots", str(self.gpus), "--routers", str(self.routers)]
            args += ["--settle", str(SETTLE_S), "--settle-timeout", str(SETTLE_TIMEOUT_S)]
        return args


def image_seconds(profile: DeviceProfile, batch: int) -> float:
    """Seconds per image at the profile's size and default steps, in calls of `batch` images."""
    overhead, per_step = profile.call_seconds(batch, profile.width, profile.height)
    return (overhead + profile.default_steps * per_step) / batch


def round_up(value: float) -> float:
    """`value` rounded up to two significant digits."""
    step = 10 ** (math.floor(math.log10(value)) - 1)
    return round(math.ceil(value / step - 1e-9) * step, 10)


def plan(pairs: list[tuple[str, str]], gpus: list[int], modes: list[str], two_routers: bool) -> list[Spec]:
    """Every run, each pair and fleet in mode order; the two-router run after its one-router twin."""
    specs = []
    for pair in pairs:
        for n in gpus:
            for mode in modes:
                specs.append(Spec(pair, n, mode))
                if two_routers and mode == "modm" and (pair, n) == TWO_ROUTERS:
                    specs.append(Spec(pair, n, mode, routers=2))
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
            done = subprocess.run(spec.command(args.work), cwd=ROOT, check=False)
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
