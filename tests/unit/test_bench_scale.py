"""benchmarks/scale.py, the capacity driver: each run's time scale keeps the machine's request rate
at its budget, every mode of a fleet measures as many requests, modm's runs follow nirvana's and
take the split that run's work asks for (held, or as the monitor's first), and the whole plan fits
its time budget."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from modm.bench.records import RequestRecord, Run, RunInfo

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("scale", ROOT / "benchmarks" / "scale.py")
assert spec is not None and spec.loader is not None
scale = importlib.util.module_from_spec(spec)
sys.modules["scale"] = scale
spec.loader.exec_module(scale)

SD = ("sd3.5-large-a100", "sdxl-a100")


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_round_up_keeps_two_significant_digits() -> None:
    assert [scale.round_up(x) for x in (0.1061, 1.7, 1.701, 0.0271, 4.44)] == [0.11, 1.7, 1.8, 0.028, 4.5]


def test_each_run_asks_the_machine_for_at_most_its_request_rate() -> None:
    for run in scale.plan(list(scale.PAIRS), list(scale.GPUS), list(scale.MODES), two_routers=True):
        cached = run.mode in ("modm", "nirvana")
        budget = (scale.WALL_RPS if run.gpus >= 16 else scale.SMALL_FLEET_WALL_RPS)[cached]
        wall_rps = run.expected_rps() / run.time_scale()
        assert budget * 0.9 < wall_rps <= budget, run.rid
    large = scale.Spec(SD, 16, "large-only")
    assert large.expected_rps() == pytest.approx(16 / 12.556, rel=1e-3)  # SD3.5-Large: 12.56 s an image


def test_the_plan_runs_nirvana_before_modm_the_monitor_at_16_gpus_and_two_routers_once() -> None:
    specs = scale.plan(list(scale.PAIRS), list(scale.GPUS), list(scale.MODES), two_routers=True)
    assert len(specs) == 2 * 3 * 4 + 2 + 1
    ids = [s.rid for s in specs]
    static = "modm-16gpu-sd3.5-large-a100+sdxl-a100-static"
    assert ids.index("nirvana-16gpu-sd3.5-large-a100+sdxl-a100") < ids.index(static)
    assert ids[ids.index(static) + 1] == "modm-16gpu-sd3.5-large-a100+sdxl-a100-modm-b"
    assert [(s.pair, s.gpus) for s in specs if s.monitored] == [(SD, 16), (scale.PAIRS[1], 16)]
    two = [s for s in specs if s.routers == 2]
    assert [(s.pair, s.gpus, s.mode, s.policy) for s in two] == [(SD, 64, "modm", "static")]
    assert ids[ids.index(two[0].rid) - 1] == "modm-64gpu-sd3.5-large-a100+sdxl-a100-static"
    fleet = {s.rid: s for s in specs if s.pair == SD and s.gpus == 64}
    assert {s.measure for s in fleet.values()} == {16 * 64} and {s.clients for s in fleet.values()} == {4 * 64}
    assert sum(s.estimate_s() for s in specs) < 95 * 60  # the whole section in about 90 minutes


def test_modm_holds_its_split_or_runs_the_monitor_and_only_then_waits_for_it_to_settle() -> None:
    held = scale.Spec(SD, 64, "modm", routers=2, policy="static").command(Path("w"), large_slots=60)
    assert (_flag(held, "--large-slots"), _flag(held, "--routers")) == ("60", "2") and "--no-monitor" in held
    assert "--settle" not in held and "--policy" not in held
    watched = scale.Spec(SD, 16, "modm", policy="modm-b").command(Path("w"))
    assert (_flag(watched, "--policy"), _flag(watched, "--large-slots")) == ("modm-b", "16")  # no split: all large
    assert _flag(watched, "--settle") == "75.0" and _flag(watched, "--monitor-interval") == "30.0"
    nirvana = scale.Spec(SD, 16, "nirvana").command(Path("w"))
    assert "--policy" not in nirvana and "--settle" not in nirvana and "--large-slots" not in nirvana
    for args in (watched, nirvana):
        assert _flag(args, "--warmup") == "250" and _flag(args, "--measure") == "300" and _flag(args, "--window")


def nirvana_run(folder: Path, outcomes: list[tuple[str, int]]) -> None:
    records = [
        RequestRecord(i, "p", "", 0.0, 0.0, 1.0, 1.0, outcome=o, skipped_steps=k, total_steps=50 if k else 0)
        for i, (o, k) in enumerate(outcomes)
    ]
    records[0].warmup = True  # not counted
    Run(RunInfo("nirvana", "e", "t", len(records), {}, 0.0, 1.0), records, []).save(folder)


def test_modm_starts_at_the_split_where_the_nirvana_runs_work_finishes_soonest(tmp_path: Path) -> None:
    run = scale.Spec(SD, 4, "modm", policy="static")
    assert scale.start_split(run, tmp_path) is None  # no nirvana run: every GPU large
    folder = tmp_path / "runs" / scale.Spec(SD, 4, "nirvana").rid
    large, small = run.profiles
    miss_s = large.overhead_seconds + 28 * large.seconds_per_step  # 12.6 s
    hit_small = small.overhead_seconds + 0.5 * 30 * small.seconds_per_step  # 1.9 s
    hit_large = large.overhead_seconds + 0.5 * 28 * large.seconds_per_step  # 6.4 s
    # 14 misses and 10 hits (one of 25 records is warm-up): the large pool's share of the work is
    # 0.90, 3.6 of 4 GPUs, which rounds to every GPU large; three large GPUs and one small finish sooner.
    nirvana_run(folder, [("miss", 0)] * 15 + [("hit", 25)] * 10)
    assert round(4 * 14 * miss_s / (14 * miss_s + 10 * hit_small)) == 4
    assert max(14 * miss_s / 3, 10 * hit_small) < (14 * miss_s + 10 * hit_large) / 4
    assert scale.start_split(run, tmp_path) == 3
    # Mostly hits: the small pool takes more GPUs, and never all of them.
    nirvana_run(folder, [("miss", 0)] * 7 + [("hit", 25)] * 20)
    assert scale.start_split(run, tmp_path) == 2  # 6 x 12.6 s on 2 GPUs against 20 x 1.9 s on 2
    nirvana_run(folder, [("hit", 25)] * 61)
    assert scale.start_split(run, tmp_path) == 1
